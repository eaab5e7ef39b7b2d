"""2-D maps of a backbone's latent space (PCA, t-SNE, UMAP), their quality, and placing new images.

``fit_projections`` turns the pooled features of every image (N, D) into 2-D maps:

1. standardise each feature (zero mean, unit variance). Pooled CNN features have wildly different
   scales per channel; without this a few high-variance channels decide every distance;
2. PCA to (at most) 50 dimensions. This is the usual first step before t-SNE/UMAP (van der Maaten
   2014; Kobak & Berens 2019): it drops the low-variance directions that are mostly noise, so
   nearest neighbours become more meaningful, and it makes the neighbour search (annoy / NN-descent,
   whose cost grows with D) about 20x cheaper for D = 1024. The first two components are the
   ``pca`` map; the 50-D vectors are kept (``pca50``) for placing new images and for "similar cases";
3. t-SNE with openTSNE's FFT-accelerated interpolation (Linderman et al. 2019): its gradient costs
   O(N) per iteration, so 100k points take minutes on 2 cores (bench/projection.py), whereas
   scikit-learn's Barnes-Hut t-SNE costs O(N log N) per iteration with a large constant and is
   about an order of magnitude slower at that size in the FIt-SNE/openTSNE benchmarks. Below 10k
   points openTSNE's Barnes-Hut is the faster of its two (its own "auto" rule), so it is used there;
4. UMAP (umap-learn), imported lazily: it pulls in numba, whose JIT compilation costs tens of seconds,
   so nothing the app imports at page load may import it (this module imports neither umap nor
   openTSNE at the top).

Quality of each map, on a seeded sample of at most 2000 points:

- trustworthiness (scikit-learn): are the map's neighbours also neighbours in feature space?
- kNN label agreement: the fraction of each sampled point's k = 10 nearest neighbours (searched among
  all N points) that share its label, in the 2-D map and in the standardised feature space. A map
  whose agreement is close to the feature space's keeps the class structure; a much lower one means
  the picture mixes classes that the features separate.

``MapPlacer`` places a new image (an upload) on the existing maps without refitting: its features
go through the same standardiser and PCA, then its coordinates are the inverse-distance-weighted
mean of its k = 10 nearest reference images' coordinates (PCA is linear, so its map is placed
exactly). It is pure numpy, runs in about a millisecond for N = 10k, and serialises to plain arrays.
"""

from __future__ import annotations

import time
import warnings
from typing import NamedTuple

import numpy as np

PCA_DIM = 50
QUALITY_SAMPLE = 2000
KNN_K = 10
METHODS = ("pca", "tsne", "umap")
# How a placer is stored among a backbone's other map arrays (projections.npz): its arrays under this
# prefix, and the training images' sorted nearest-neighbour distances under TRAIN_NN_KEY. Written by
# ``MapPlacer.to_stored`` and read by ``MapPlacer.from_stored`` / ``stored_nn_distances``, nowhere else.
PLACER_PREFIX = "placer_"
TRAIN_NN_KEY = "train_nn_dist_sorted"


# ---------------------------------------------------------------- standardise + PCA (shared with som.py)

def fit_reducer(features: np.ndarray, n_components: int = PCA_DIM, seed: int = 0) -> tuple[np.ndarray, dict]:
    """Standardise then PCA-reduce ``features``; return (reduced float32 (N, k), reducer arrays + info).

    The reducer dict holds ``mean``, ``scale`` (D,), ``pca_mean`` (D,), ``components`` (k, D), all
    float32, so that ``apply_reducer`` maps any new (M, D) vector into the same space, plus
    ``explained_variance`` (k,) and ``explained_variance_ratio`` (k,) for reporting.
    """
    from sklearn.decomposition import PCA

    X = _as_features(features)
    n, d = X.shape
    mean = X.mean(axis=0, dtype=np.float64)
    std = X.std(axis=0, dtype=np.float64)
    # Constant features (dead ReLU channels) get scale 1 instead of a division by zero, as sklearn does.
    scale = np.where(std > 1e-12, std, 1.0)
    Xs = (X - mean.astype(np.float32)) / scale.astype(np.float32)
    k = int(max(1, min(n_components, n, d)))
    # svd_solver="auto" picks randomized SVD at this size; random_state makes it reproducible and
    # sklearn's svd_flip fixes the component signs, so the same features give the same maps.
    pca = PCA(n_components=k, random_state=seed)
    Z = pca.fit_transform(Xs).astype(np.float32)
    reducer = {
        "mean": mean.astype(np.float32),
        "scale": scale.astype(np.float32),
        "pca_mean": pca.mean_.astype(np.float32),
        "components": pca.components_.astype(np.float32),
        "explained_variance": pca.explained_variance_.astype(np.float32),
        "explained_variance_ratio": pca.explained_variance_ratio_.astype(np.float32),
    }
    return Z, reducer


def standardize(features: np.ndarray, reducer: dict) -> np.ndarray:
    X = _as_features(features, dim=len(reducer["mean"]))
    return (X - np.asarray(reducer["mean"], np.float32)) / np.asarray(reducer["scale"], np.float32)


def apply_reducer(features: np.ndarray, reducer: dict) -> np.ndarray:
    """(M, D) raw features -> (M, k) float32 in the reducer's PCA space."""
    Xs = standardize(features, reducer)
    comps = np.asarray(reducer["components"], np.float32)
    return ((Xs - np.asarray(reducer["pca_mean"], np.float32)) @ comps.T).astype(np.float32)


def _as_features(features, dim: int | None = None) -> np.ndarray:
    X = np.asarray(features)
    if X.ndim == 1:
        X = X[None, :]
    if X.ndim != 2:
        raise ValueError(f"features must be a (N, D) array, got shape {X.shape}")
    if dim is not None and X.shape[1] != dim:
        raise ValueError(f"features have {X.shape[1]} dimensions, the fitted maps expect {dim}")
    X = X.astype(np.float32, copy=False)
    if not np.all(np.isfinite(X)):
        raise ValueError("features contain NaN or infinite values")
    return X


# ---------------------------------------------------------------- fitting the maps

def fit_projections(features: np.ndarray, labels_idx: np.ndarray | None = None, seed: int = 0,
                    methods=METHODS, *, n_jobs: int = 2, tsne_kwargs: dict | None = None,
                    umap_kwargs: dict | None = None, quality_sample: int = QUALITY_SAMPLE,
                    k: int = KNN_K) -> dict:
    """Fit 2-D maps of ``features`` (N, D) and measure their quality.

    ``labels_idx`` (N,) integer class per image (negative = unlabelled: not used as a query in the
    kNN agreement) or None (no agreement is computed). ``tsne_kwargs`` / ``umap_kwargs`` override
    the size-dependent defaults chosen here. Returns::

        {"methods": [...],
         "coords": {method: float32 (N, 2)},
         "pca50": float32 (N, k<=50),
         "reducer": {"mean", "scale", "pca_mean", "components", ...}: float32 arrays (apply_reducer),
         "params": {"seed", "n", "dim", "standardize", "pca": {...}, "tsne": {...}, "umap": {...}},
         "quality": {"sample_size", "k", "features_knn_agreement",
                     method: {"trustworthiness", "knn_agreement"}},
         "fit_seconds": {"pca": s, "tsne": s, "umap": s, "quality": s}}

    ``params``, ``quality`` and ``fit_seconds`` are JSON-ready (floats, ints, strings, None).
    """
    methods = tuple(methods)
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown projection method(s) {sorted(unknown)}; choose from {METHODS}")
    X = _as_features(features)
    n, d = X.shape
    if n < 5:
        raise ValueError(f"need at least 5 images to draw a map, got {n}")
    if labels_idx is not None:
        labels_idx = np.asarray(labels_idx).astype(np.int64).reshape(-1)
        if len(labels_idx) != n:
            raise ValueError(f"labels_idx has {len(labels_idx)} entries for {n} feature rows")

    fit_seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    Z, reducer = fit_reducer(X, PCA_DIM, seed)
    coords: dict[str, np.ndarray] = {}
    # The PCA map is the first two components of the same fit, so MapPlacer can place it exactly.
    if Z.shape[1] >= 2:
        pca2 = Z[:, :2].copy()
    else:
        pca2 = np.column_stack([Z[:, 0], np.zeros(n, np.float32)])
    fit_seconds["pca"] = time.perf_counter() - t0
    if "pca" in methods:
        coords["pca"] = pca2
    params: dict = {
        "seed": int(seed), "n": int(n), "dim": int(d), "standardize": True,
        "pca": {"n_components": int(Z.shape[1]),
                "explained_variance_ratio": float(reducer["explained_variance_ratio"].sum()),
                "explained_variance_ratio_2d": float(reducer["explained_variance_ratio"][:2].sum())},
    }

    if "tsne" in methods:
        t0 = time.perf_counter()
        coords["tsne"], params["tsne"] = _fit_tsne(Z, seed, n_jobs, tsne_kwargs or {})
        fit_seconds["tsne"] = time.perf_counter() - t0
    if "umap" in methods:
        t0 = time.perf_counter()
        coords["umap"], params["umap"] = _fit_umap(Z, seed, umap_kwargs or {})
        fit_seconds["umap"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    quality = map_quality(standardize(X, reducer), {m: coords[m] for m in methods}, labels_idx,
                          seed=seed, sample=quality_sample, k=k)
    fit_seconds["quality"] = time.perf_counter() - t0
    return {"methods": list(methods), "coords": {m: coords[m] for m in methods}, "pca50": Z,
            "reducer": reducer, "params": params, "quality": quality,
            "fit_seconds": {m: float(s) for m, s in fit_seconds.items()}}


def tsne_defaults(n: int) -> dict:
    """openTSNE parameters for ``n`` points (the bench's budget: 100k points in a few minutes)."""
    return {
        # Perplexity 30 is the standard; tiny sets need perplexity < (n - 1) / 3 for 3*perplexity
        # neighbours to exist.
        "perplexity": float(min(30.0, max(2.0, (n - 1) / 3.0 - 1))),
        "early_exaggeration_iter": 250,
        # learning_rate="auto" (n / exaggeration, Belkina et al. 2019) converges in far fewer
        # iterations on large data than the classic 200, so the optimisation phase can be trimmed
        # at 100k without visible loss: that is where the 100k budget is won.
        "n_iter": 500 if n <= 50_000 else 350,
        "learning_rate": "auto",
        "initialization": "pca",  # deterministic and keeps the global layout (Kobak & Linderman 2021)
        "metric": "euclidean",
        # FFT interpolation is O(N) per iteration but has a fixed grid cost that dominates below
        # ~10k points, where Barnes-Hut is faster (openTSNE's own "auto" rule); at the sizes where
        # time matters (10k-100k+) it is always FFT.
        "negative_gradient_method": "fft" if n >= 10_000 else "bh",
        "neighbors": "auto",  # exact below 1000 points, annoy (seeded) above
        "dof": 1,
    }


def _fit_tsne(Z: np.ndarray, seed: int, n_jobs: int, overrides: dict) -> tuple[np.ndarray, dict]:
    from openTSNE import TSNE

    p = {**tsne_defaults(len(Z)), **overrides}
    emb = TSNE(n_components=2, n_jobs=n_jobs, random_state=seed, verbose=False, **p).fit(Z)
    return np.asarray(emb, dtype=np.float32), {**p, "n_jobs": int(n_jobs), "implementation": "openTSNE"}


def umap_defaults(n: int) -> dict:
    return {
        "n_neighbors": int(min(15, n - 1)),
        "min_dist": 0.1,
        "metric": "euclidean",
        # The neighbour graph of 100k points fits easily either way; low_memory keeps NN-descent's
        # working set small on these shared 23 GB machines at a small speed cost.
        "low_memory": True,
        "init": "spectral",
        "n_epochs": None,  # umap's own choice: 500 below 10k points, 200 above
    }


def _fit_umap(Z: np.ndarray, seed: int, overrides: dict) -> tuple[np.ndarray, dict]:
    with warnings.catch_warnings():
        # umap/pynndescent/numba emit import-time and "n_jobs overridden" warnings; none is actionable.
        warnings.simplefilter("ignore")
        import umap  # lazy: numba JIT compilation costs tens of seconds

        p = {**umap_defaults(len(Z)), **overrides}
        # A fixed random_state makes umap run its SGD single-threaded (n_jobs=1): the maps stored in
        # an experiment must be reproducible from its seed, and on the 2-core machines this project
        # targets parallel UMAP would gain at most 2x on a step that is not the bottleneck.
        reducer = umap.UMAP(n_components=2, random_state=seed, n_jobs=1, verbose=False, **p)
        emb = reducer.fit_transform(Z)
    return np.asarray(emb, dtype=np.float32), {**p, "n_jobs": 1, "random_state": int(seed),
                                               "implementation": "umap-learn"}


# ---------------------------------------------------------------- quality

def quality_sample_indices(n: int, seed: int = 0, sample: int = QUALITY_SAMPLE) -> np.ndarray:
    if n <= sample:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=sample, replace=False))


def map_quality(X_std: np.ndarray, coords: dict[str, np.ndarray], labels_idx: np.ndarray | None,
                seed: int = 0, sample: int = QUALITY_SAMPLE, k: int = KNN_K) -> dict:
    """Trustworthiness and kNN label agreement of each 2-D map (see the module docstring)."""
    from sklearn.manifold import trustworthiness

    n = len(X_std)
    idx = quality_sample_indices(n, seed, sample)
    s = len(idx)
    k_tw = int(min(k, max(1, (s - 1) // 2 - 1)))  # sklearn requires n_neighbors < n_samples / 2
    k_nn = int(min(k, n - 1))
    out: dict = {"sample_size": int(s), "k": int(k_nn), "trustworthiness_k": k_tw,
                 "features_knn_agreement": None}
    queries = idx
    if labels_idx is not None:
        queries = idx[labels_idx[idx] >= 0]
        if len(queries):
            out["features_knn_agreement"] = _knn_agreement(X_std, labels_idx, queries, k_nn)
    for m, Y in coords.items():
        tw = float(trustworthiness(X_std[idx], Y[idx], n_neighbors=k_tw)) if s > 3 else None
        agree = None
        if labels_idx is not None and len(queries):
            agree = _knn_agreement(Y, labels_idx, queries, k_nn)
        out[m] = {"trustworthiness": tw, "knn_agreement": agree}
    return out


def _knn_agreement(space: np.ndarray, labels: np.ndarray, queries: np.ndarray, k: int) -> float:
    """Mean over ``queries`` of the share of their k nearest neighbours (among all points) with the same label."""
    from sklearn.neighbors import NearestNeighbors

    # KD-tree for the 2-D maps (fast at 100k); brute force (BLAS, chunked by sklearn) in feature space.
    algo = "kd_tree" if space.shape[1] <= 3 else "brute"
    nn = NearestNeighbors(n_neighbors=k + 1, algorithm=algo).fit(space)
    _, ind = nn.kneighbors(space[queries])
    # Drop the query itself (normally the first hit; with duplicates it may be elsewhere or absent).
    keep = np.ones_like(ind, dtype=bool)
    is_self = ind == queries[:, None]
    has_self = is_self.any(axis=1)
    keep[has_self] = ~is_self[has_self]
    keep[~has_self, -1] = False
    nbrs = ind[keep].reshape(len(queries), k)
    return float((labels[nbrs] == labels[queries][:, None]).mean())


# ---------------------------------------------------------------- placing new images

class Placement(NamedTuple):
    coords: dict[str, np.ndarray]  # method -> float32 (M, 2)
    neighbors: np.ndarray          # int64 (M, k): row indices (into the experiment's images) of the nearest references
    distances: np.ndarray          # float32 (M, k): euclidean distances in the standardised PCA-50 space, ascending


class MapPlacer:
    """Places new feature vectors on fitted maps by kNN interpolation in the PCA-50 space.

    ``ref_pca`` (N, k) are the reference images' reduced features (``fit_projections(...)["pca50"]``,
    optionally only the training rows), ``coords`` their coordinates per map, ``reducer`` the
    standardiser + PCA that produced them, ``index`` (N,) the reference rows' indices in the
    experiment's image table (returned as neighbours). Methods in ``linear`` are placed exactly by
    the PCA itself (their coordinates must be the first two PCA components).
    """

    def __init__(self, ref_pca: np.ndarray, coords: dict[str, np.ndarray], reducer: dict,
                 index: np.ndarray | None = None, k: int = KNN_K, linear=("pca",)):
        self.ref = np.ascontiguousarray(ref_pca, dtype=np.float32)
        n = len(self.ref)
        if n == 0:
            raise ValueError("MapPlacer needs at least one reference point")
        self.coords = {m: np.asarray(c, dtype=np.float32) for m, c in coords.items()}
        for m, c in self.coords.items():
            if c.shape != (n, 2):
                raise ValueError(f"coordinates of {m!r} have shape {c.shape}, expected ({n}, 2)")
        self.reducer = {key: np.asarray(reducer[key], dtype=np.float32)
                        for key in ("mean", "scale", "pca_mean", "components")}
        self.index = np.arange(n, dtype=np.int64) if index is None else np.asarray(index, dtype=np.int64)
        self.k = int(min(k, n))
        self.linear = tuple(m for m in linear if m in self.coords)
        # float64 copies for the distance expansion: |a|^2 + |b|^2 - 2ab cancels badly in float32.
        self._ref64 = self.ref.astype(np.float64)
        self._sq = np.einsum("ij,ij->i", self._ref64, self._ref64)

    @classmethod
    def from_projection(cls, result: dict, mask: np.ndarray | None = None, k: int = KNN_K) -> MapPlacer:
        """Build from ``fit_projections``' result; ``mask`` (N,) bool picks the reference rows (e.g. train)."""
        rows = np.arange(len(result["pca50"])) if mask is None else np.flatnonzero(np.asarray(mask, bool))
        return cls(result["pca50"][rows], {m: c[rows] for m, c in result["coords"].items()},
                   result["reducer"], index=rows, k=k)

    @property
    def methods(self) -> list[str]:
        return list(self.coords)

    def transform(self, features: np.ndarray) -> np.ndarray:
        return apply_reducer(features, self.reducer)

    def place(self, new_features: np.ndarray) -> Placement:
        Z = self.transform(new_features)
        m, k = len(Z), self.k
        nbr = np.empty((m, k), np.int64)
        dist = np.empty((m, k), np.float32)
        # Bound the (chunk, N) distance block to ~16M float64 entries whatever N and M are.
        chunk = max(1, (1 << 24) // len(self.ref))
        for a in range(0, m, chunk):
            z = Z[a:a + chunk].astype(np.float64)
            d2 = self._sq[None, :] - 2.0 * (z @ self._ref64.T) + np.einsum("ij,ij->i", z, z)[:, None]
            if k < d2.shape[1]:
                cand = np.argpartition(d2, k - 1, axis=1)[:, :k]
            else:
                cand = np.broadcast_to(np.arange(d2.shape[1]), d2.shape).copy()
            # Exact distances for the k candidates (the expansion above is only good for ranking).
            exact = np.linalg.norm(self._ref64[cand] - z[:, None, :], axis=2)
            order = np.argsort(exact, axis=1, kind="stable")
            nbr[a:a + chunk] = np.take_along_axis(cand, order, axis=1)
            dist[a:a + chunk] = np.take_along_axis(exact, order, axis=1)
        # Inverse-distance weights; a (near) duplicate of a reference point lands on it.
        w = 1.0 / np.maximum(dist.astype(np.float64), 1e-9)
        w /= w.sum(axis=1, keepdims=True)
        out = {}
        for meth, c in self.coords.items():
            if meth in self.linear:
                out[meth] = Z[:, :2].copy() if Z.shape[1] >= 2 else np.column_stack([Z[:, 0], np.zeros(m, np.float32)])
            else:
                out[meth] = np.einsum("mk,mkc->mc", w, c[nbr].astype(np.float64)).astype(np.float32)
        return Placement(out, self.index[nbr], dist)

    # -- serialisation: plain arrays, so the caller can np.savez them (allow_pickle=False works)

    def to_arrays(self) -> dict[str, np.ndarray]:
        d = {"ref_pca": self.ref, "index": self.index, "k": np.array(self.k, np.int64),
             "methods": np.array(self.methods, dtype=str), "linear": np.array(self.linear, dtype=str)}
        d.update({f"reducer_{key}": v for key, v in self.reducer.items()})
        d.update({f"coords_{m}": c for m, c in self.coords.items()})
        return d

    def to_stored(self, train_nn_distances: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The arrays to store among a backbone's map arrays (``PLACER_PREFIX`` + ``to_arrays``), plus the
        training images' nearest-neighbour distances (sorted) when given."""
        out = {PLACER_PREFIX + k: v for k, v in self.to_arrays().items()}
        if train_nn_distances is not None:
            out[TRAIN_NN_KEY] = np.sort(np.asarray(train_nn_distances, np.float32))
        return out

    @classmethod
    def from_stored(cls, arrays) -> MapPlacer | None:
        """The placer stored by ``to_stored`` among other arrays (a loaded projections.npz); None when
        there is none."""
        mine = {k[len(PLACER_PREFIX):]: v for k, v in arrays.items() if k.startswith(PLACER_PREFIX)}
        return cls.from_arrays(mine) if mine else None

    @classmethod
    def from_arrays(cls, d) -> MapPlacer:
        methods = [str(m) for m in np.asarray(d["methods"]).reshape(-1)]
        reducer = {key: d[f"reducer_{key}"] for key in ("mean", "scale", "pca_mean", "components")}
        return cls(d["ref_pca"], {m: d[f"coords_{m}"] for m in methods}, reducer, index=d["index"],
                   k=int(np.asarray(d["k"])), linear=tuple(str(m) for m in np.asarray(d["linear"]).reshape(-1)))


def stored_nn_distances(arrays) -> np.ndarray | None:
    """The training images' sorted nearest-neighbour distances stored by ``MapPlacer.to_stored`` (float64),
    or None when the arrays have none."""
    if TRAIN_NN_KEY not in arrays:
        return None
    return np.sort(np.asarray(arrays[TRAIN_NN_KEY], np.float64))
