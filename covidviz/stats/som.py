"""A self-organizing map (MiniSom, hexagonal) of a backbone's pooled features, and placing new images on it.

``fit_som`` trains the map on the TRAINING images only, so it is a model of the training
distribution: a new image far from every node (a high quantisation error compared with the
training images' own) is out of distribution for what the model learned. Every image of every split
is then mapped to its best-matching node for the SOM page.

Input space: the features are standardised and PCA-reduced to at most 50 dimensions, both fitted on
the training images. Standardising stops a few high-variance channels from deciding every distance;
the PCA keeps most of the variance while cutting MiniSom's per-update cost (proportional to
nodes x D, pure numpy, one sample at a time) about 20x for D = 1024, and drops the noisy tail of
directions in which all distances look alike. It also gives ``pca_weights_init`` and the grid's
aspect ratio their principal components.

Grid: about 5 * sqrt(N_train) nodes (MiniSom's rule of thumb), clamped to [16, 2500]; the side
along the first principal component is longer by sqrt(lambda1 / lambda2) (clamped to [1, 3]) so
the map's shape follows the data's, and the number of rows (the second grid axis) is always odd:
MiniSom's ``distance_map`` uses a neighbour table that matches its own hexagonal coordinates (and
its topographic error) only when that axis is odd. The U-matrix here is computed from the hexagon
coordinates themselves (mean weight distance to the <= 6 adjacent hexagons, scaled to max 1), which
equals ``distance_map(scaling="mean")`` on such grids and stays right on any grid passed in.

Node numbering: node = i * grid[1] + j for weights[i, j] (C order, as MiniSom's own flat indices).
Hexagon centres ``hex_xy`` come from MiniSom's ``get_euclidean_coordinates``: x = i (minus 0.5 on
every other row), y = j * sqrt(3) / 2; adjacent centres are 1 apart, so draw pointy-top hexagons
of circumradius 1 / sqrt(3).

Training: the neighbourhood radius sigma starts at a quarter of the longer side (PCA init already
orders the map, so it need not span the whole map) and decays linearly to 1, so the last phase
fine-tunes single nodes (MiniSom's default asymptotic decay would stop at sigma / 3, far too smooth
on a 40-wide map); the learning rate starts at 0.5 and decays as 0.5 * C / (C + t), C = T / 100
(SOM_PAK's inverse-time schedule). Iterations: max(50 x nodes, N_train), clamped to
[10k, 120k]: every node gets enough updates on small data, and 100k images stay near a minute on 2 cores.
"""

from __future__ import annotations

import inspect
import time

import numpy as np

from covidviz.stats.projection import PCA_DIM, apply_reducer, fit_reducer

HEX_ROW = np.sqrt(3.0) / 2.0
QE_PERCENTILES = (50, 90, 95, 99)
_CHUNK = 8192  # images per distance block: 8192 x 2500 nodes x float64 = 160 MB at most


def som_grid_shape(n_train: int, eig_ratio: float = 1.0) -> tuple[int, int]:
    """(x, y) for ``n_train`` images; ``eig_ratio`` = lambda1 / lambda2 of the training features."""
    nodes = float(np.clip(5.0 * np.sqrt(max(n_train, 1)), 16, 2500))
    r = float(np.clip(np.sqrt(max(eig_ratio, 1.0)), 1.0, 3.0))
    # Physical width x, height y * sqrt(3)/2 (hexagonal rows); want x / (y * HEX_ROW) = r.
    target = np.sqrt(nodes / (r * HEX_ROW))
    y = max(3, 2 * int(round((target - 1) / 2)) + 1)  # the nearest odd number (see module docstring)
    x = max(3, int(round(nodes / y)))
    return x, y


def default_iterations(n_nodes: int, n_train: int) -> int:
    return int(np.clip(max(50 * n_nodes, n_train), 10_000, 120_000))


def fit_som(features: np.ndarray, labels_onehot: np.ndarray | None, probs: np.ndarray | None,
            train_mask: np.ndarray, seed: int = 0, grid: tuple | None = None,
            iterations: int | None = None) -> dict:
    """Train a hexagonal SOM on the training rows of ``features`` (N, D); map every row to a node.

    ``labels_onehot`` (N, C) 0/1 (multi-label allowed) and ``probs`` (N, C) model probabilities are
    optional. Returns (n_nodes = grid[0] * grid[1], node = i * grid[1] + j)::

        grid               (x, y) ints
        weights            float32 (x, y, k)  node weights in the reduced space
        hex_xy             float32 (n_nodes, 2) hexagon centres for plotting
        umatrix            float32 (n_nodes,)  mean distance to adjacent nodes, max 1
        node               int32 (N,)   every image's best-matching node (all splits)
        qe                 float32 (N,) every image's quantisation error (distance to its node)
        hits               int64 (n_nodes,)  training images per node (sums to N_train)
        hits_all           int64 (n_nodes,)  images of all splits per node
        class_counts       int64 (n_nodes, C) TRAINING labels per node (None without labels)
        class_counts_all   int64 (n_nodes, C) labels of all splits per node (None without labels)
        mean_probs         float32 (n_nodes, C) mean probability over ALL images on the node
                           (NaN for empty nodes; None without probs): model outputs exist for
                           every split and the held-out ones are the honest ones
        prototype          int64 (n_nodes,) row of the image (any split) nearest to the node weight
        quantization_error float  mean training QE (MiniSom's definition)
        topographic_error  float  MiniSom's hexagonal TE on the training images
        qe_train_sorted    float32 (N_train,) sorted training QEs (for percentiles of new images)
        qe_percentiles     {"50": .., "90": .., "95": .., "99": ..} of the training QEs
        reducer            {"mean", "scale", "pca_mean", "components", ...} float32 arrays
        params             JSON-ready: grid, sigma, learning_rate, schedules, iterations, seed,
                           n_components, explained_variance_ratio, n_train
        fit_seconds        float

    Every entry but ``params``, ``qe_percentiles`` and ``reducer`` is a numpy array or a float, so
    the caller can store them with ``np.savez``; ``som_place`` needs only ``weights``, ``reducer``
    and ``qe_train_sorted``.
    """
    from minisom import MiniSom

    t_start = time.perf_counter()
    X = np.asarray(features)
    if X.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {X.shape}")
    n = len(X)
    train_mask = np.asarray(train_mask, dtype=bool).reshape(-1)
    if len(train_mask) != n:
        raise ValueError(f"train_mask has {len(train_mask)} entries for {n} feature rows")
    n_train = int(train_mask.sum())
    if n_train < 4:
        raise ValueError(f"need at least 4 training images for a SOM, got {n_train}")
    for name, arr in (("labels_onehot", labels_onehot), ("probs", probs)):
        if arr is not None and (np.ndim(arr) != 2 or len(arr) != n):
            raise ValueError(f"{name} must be (N, C) with N = {n}, got shape {np.shape(arr)}")

    Z_train, reducer = fit_reducer(X[train_mask], PCA_DIM, seed)
    Z_all = apply_reducer(X, reducer)
    ev = reducer["explained_variance"]
    eig_ratio = float(ev[0] / ev[1]) if len(ev) > 1 and ev[1] > 0 else 1.0
    gx, gy = (int(grid[0]), int(grid[1])) if grid is not None else som_grid_shape(n_train, eig_ratio)
    if gx < 2 or gy < 2:
        raise ValueError(f"SOM grid must be at least 2 x 2, got {gx} x {gy}")
    n_nodes = gx * gy
    iters = int(iterations) if iterations is not None else default_iterations(n_nodes, n_train)
    sigma = float(max(1.5, max(gx, gy) / 4.0))
    lr = 0.5

    kwargs = dict(sigma=sigma, learning_rate=lr, neighborhood_function="gaussian", topology="hexagonal",
                  activation_distance="euclidean", random_seed=seed, decay_function="inverse_decay_to_zero")
    if "sigma_decay_function" in inspect.signature(MiniSom.__init__).parameters:
        kwargs["sigma_decay_function"] = "linear_decay_to_one"
    else:  # MiniSom before the split decay functions: one schedule for both
        kwargs["decay_function"] = "asymptotic_decay"
    som = MiniSom(gx, gy, Z_train.shape[1], **kwargs)
    som.pca_weights_init(Z_train)
    # random_order: the table is often sorted by class or source; sequential updates would let the
    # last class overwrite the map. MiniSom shuffles with its seeded RandomState.
    som.train(Z_train, iters, random_order=True)

    W = som.get_weights().reshape(n_nodes, -1)
    node, qe, prototype = _assign(Z_all, W)
    train_idx = np.flatnonzero(train_mask)
    qe_train = np.sort(qe[train_idx])
    # TE is a mean over samples, so MiniSom's own function can run on chunks (its argsort over a
    # full (N, nodes) matrix would need gigabytes at 100k images).
    te_sum = 0.0
    for a in range(0, n_train, _CHUNK):
        rows = Z_train[a:a + _CHUNK]
        te_sum += float(som.topographic_error(rows)) * len(rows)

    xx, yy = som.get_euclidean_coordinates()
    hex_xy = np.column_stack([xx.ravel(), yy.ravel()]).astype(np.float32)

    out: dict = {
        "grid": (gx, gy),
        "weights": som.get_weights().astype(np.float32),
        "hex_xy": hex_xy,
        "umatrix": hex_umatrix(W, hex_xy),
        "node": node.astype(np.int32),
        "qe": qe.astype(np.float32),
        "hits": np.bincount(node[train_idx], minlength=n_nodes).astype(np.int64),
        "hits_all": np.bincount(node, minlength=n_nodes).astype(np.int64),
        "class_counts": None, "class_counts_all": None, "mean_probs": None,
        "prototype": prototype.astype(np.int64),
        "quantization_error": float(qe_train.mean()),
        "topographic_error": te_sum / n_train,
        "qe_train_sorted": qe_train.astype(np.float32),
        "qe_percentiles": {str(p): float(np.percentile(qe_train, p)) for p in QE_PERCENTILES},
        "reducer": reducer,
    }
    if labels_onehot is not None:
        Y = np.asarray(labels_onehot, dtype=np.float64)
        out["class_counts"] = _node_sums(node[train_idx], Y[train_idx], n_nodes).round().astype(np.int64)
        out["class_counts_all"] = _node_sums(node, Y, n_nodes).round().astype(np.int64)
    if probs is not None:
        P = np.asarray(probs, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            out["mean_probs"] = (_node_sums(node, P, n_nodes) / out["hits_all"][:, None]).astype(np.float32)
    out["params"] = {
        "grid": [gx, gy], "topology": "hexagonal", "neighborhood_function": "gaussian",
        "sigma": sigma, "sigma_decay": kwargs.get("sigma_decay_function", kwargs["decay_function"]),
        "learning_rate": lr, "learning_rate_decay": kwargs["decay_function"], "iterations": iters,
        "init": "pca_weights_init", "random_order": True, "seed": int(seed), "n_train": n_train,
        "n_components": int(Z_train.shape[1]),
        "explained_variance_ratio": float(reducer["explained_variance_ratio"].sum()),
        "eig_ratio": eig_ratio, "trained_on": "train split", "class_counts": "train split",
        "mean_probs": "all splits",
    }
    out["fit_seconds"] = time.perf_counter() - t_start
    return out


def _assign(Z: np.ndarray, W: np.ndarray):
    """Best-matching node and its distance for every row of Z, and the row nearest to every node."""
    n = len(Z)
    W64 = W.astype(np.float64)
    wsq = np.einsum("ij,ij->i", W64, W64)
    node = np.empty(n, np.int64)
    qe = np.empty(n, np.float64)
    best_d = np.full(len(W), np.inf)
    prototype = np.zeros(len(W), np.int64)
    for a in range(0, n, _CHUNK):
        z = Z[a:a + _CHUNK].astype(np.float64)
        d2 = np.maximum(np.einsum("ij,ij->i", z, z)[:, None] - 2.0 * z @ W64.T + wsq[None, :], 0.0)
        bmu = d2.argmin(axis=1)
        node[a:a + len(z)] = bmu
        # Exact distance to the winner (the expansion above is only used for ranking).
        qe[a:a + len(z)] = np.linalg.norm(z - W64[bmu], axis=1)
        rows = d2.argmin(axis=0)
        dmin = d2[rows, np.arange(len(W))]
        better = dmin < best_d
        best_d[better] = dmin[better]
        prototype[better] = rows[better] + a
    return node, qe, prototype


def _node_sums(node: np.ndarray, values: np.ndarray, n_nodes: int) -> np.ndarray:
    out = np.zeros((n_nodes, values.shape[1]), np.float64)
    np.add.at(out, node, values)
    return out


def hex_umatrix(W: np.ndarray, hex_xy: np.ndarray) -> np.ndarray:
    """Mean weight distance of each node to its adjacent hexagons (centres 1 apart), scaled to max 1."""
    from scipy.spatial import cKDTree

    W = np.asarray(W, np.float64).reshape(len(hex_xy), -1)
    pairs = cKDTree(np.asarray(hex_xy, np.float64)).query_pairs(1.0 + 1e-6, output_type="ndarray")
    d = np.linalg.norm(W[pairs[:, 0]] - W[pairs[:, 1]], axis=1)
    total = np.bincount(pairs[:, 0], d, len(W)) + np.bincount(pairs[:, 1], d, len(W))
    count = np.bincount(pairs[:, 0], minlength=len(W)) + np.bincount(pairs[:, 1], minlength=len(W))
    um = np.divide(total, count, out=np.zeros(len(W)), where=count > 0)
    m = um.max()
    return (um / m if m > 0 else um).astype(np.float32)


def som_place(som_result, feature_vector: np.ndarray) -> tuple[int, float, float]:
    """(node, quantisation error, percentile of that QE among the training images' QEs) of one image.

    ``som_result`` is ``fit_som``'s dict (or anything with ``weights``, ``qe_train_sorted`` and the
    reducer arrays under ``reducer`` or as ``reducer_<name>`` keys, e.g. a loaded .npz). A percentile
    of 99 means the image is farther from the map than 99 % of the training images.
    """
    reducer = som_result["reducer"] if "reducer" in som_result else {
        k: som_result[f"reducer_{k}"] for k in ("mean", "scale", "pca_mean", "components")}
    z = apply_reducer(np.asarray(feature_vector).reshape(1, -1), reducer)[0].astype(np.float64)
    W = np.asarray(som_result["weights"], np.float64)
    W = W.reshape(-1, W.shape[-1])
    d = np.linalg.norm(W - z, axis=1)
    node = int(d.argmin())
    qe = float(d[node])
    qe_train = np.asarray(som_result["qe_train_sorted"])
    pct = 100.0 * np.searchsorted(qe_train, qe, side="right") / max(len(qe_train), 1)
    return node, qe, float(pct)
