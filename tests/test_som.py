"""The hexagonal self-organizing map: fitting, its summaries, and placing new images."""

from __future__ import annotations

import numpy as np
import pytest

from covidviz.stats.som import fit_som, hex_umatrix, som_grid_shape, som_place

C = 4


def clustered(n=400, d=64, c=C, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(c, d)) * 4.0
    y = rng.integers(0, c, n)
    X = (centres[y] + rng.normal(size=(n, d))).astype(np.float32)
    return X, y


@pytest.fixture(scope="module")
def data():
    X, y = clustered()
    onehot = np.eye(C)[y]
    probs = 0.7 * onehot + 0.3 / C
    train = np.random.default_rng(1).random(len(X)) < 0.7
    return X, y, onehot, probs, train


@pytest.fixture(scope="module")
def som(data):
    X, _, onehot, probs, train = data
    return fit_som(X, onehot, probs, train, seed=0, iterations=4000)


def test_shapes_and_counts(data, som):
    X, y, onehot, probs, train = data
    n, n_train = len(X), int(train.sum())
    gx, gy = som["grid"]
    nodes = gx * gy
    assert gy % 2 == 1
    assert som["weights"].shape == (gx, gy, 50)
    assert som["hex_xy"].shape == (nodes, 2)
    assert som["umatrix"].shape == (nodes,) and som["umatrix"].max() == pytest.approx(1.0)
    assert (som["umatrix"] >= 0).all()
    assert som["node"].shape == (n,) and som["node"].min() >= 0 and som["node"].max() < nodes
    assert som["hits"].sum() == n_train and som["hits_all"].sum() == n
    assert som["class_counts"].shape == (nodes, C) and som["class_counts"].sum() == n_train
    assert som["class_counts_all"].sum() == n
    assert som["mean_probs"].shape == (nodes, C)
    empty = som["hits_all"] == 0
    assert np.isnan(som["mean_probs"][empty]).all() and np.isfinite(som["mean_probs"][~empty]).all()
    np.testing.assert_allclose(som["mean_probs"][~empty].sum(axis=1), 1.0, rtol=1e-5)
    assert som["prototype"].shape == (nodes,) and som["prototype"].min() >= 0 and som["prototype"].max() < n
    assert som["qe_train_sorted"].shape == (n_train,) and (np.diff(som["qe_train_sorted"]) >= 0).all()
    assert som["params"]["iterations"] == 4000 and som["params"]["n_train"] == n_train
    assert som["fit_seconds"] > 0


def test_errors_are_finite_and_consistent(data, som):
    _, _, _, _, train = data
    assert np.isfinite(som["quantization_error"]) and som["quantization_error"] >= 0
    assert np.isfinite(som["topographic_error"]) and 0 <= som["topographic_error"] <= 1
    assert som["quantization_error"] == pytest.approx(som["qe"][train].mean(), rel=1e-5)
    p = som["qe_percentiles"]
    assert p["50"] <= p["90"] <= p["95"] <= p["99"]


def test_clustered_data_gives_pure_nodes(som):
    cc = som["class_counts"]
    purity = cc.max(axis=1).sum() / cc.sum()
    assert purity > 0.95
    # the classes occupy different regions of the map: each class's majority nodes are disjoint
    majority = cc.argmax(axis=1)[cc.sum(axis=1) > 0]
    assert len(set(majority)) == C


def test_same_seed_same_map(data, som):
    X, _, onehot, probs, train = data
    again = fit_som(X, onehot, probs, train, seed=0, iterations=4000)
    np.testing.assert_array_equal(again["weights"], som["weights"])
    np.testing.assert_array_equal(again["node"], som["node"])


def test_prototype_is_the_nearest_image(data, som):
    X, *_ = data
    from covidviz.stats.projection import apply_reducer

    Z = apply_reducer(X, som["reducer"])
    W = som["weights"].reshape(-1, som["weights"].shape[-1])
    for node in (0, len(W) // 2, len(W) - 1):
        assert som["prototype"][node] == np.linalg.norm(Z - W[node], axis=1).argmin()


def test_placing_images(data, som):
    X, _, _, _, train = data
    for i in np.flatnonzero(train)[:5]:
        node, qe, pct = som_place(som, X[i])
        assert node == som["node"][i]
        assert qe == pytest.approx(float(som["qe"][i]), rel=1e-4, abs=1e-4)
        assert 0 <= pct <= 100
    outlier = X[0] + 50.0
    node, qe, pct = som_place(som, outlier)
    assert qe > som["qe_percentiles"]["99"] and pct > 99


def test_place_from_saved_arrays(tmp_path, data, som):
    X, *_ = data
    arrays = {k: v for k, v in som.items() if isinstance(v, np.ndarray)}
    arrays.update({f"reducer_{k}": v for k, v in som["reducer"].items()})
    np.savez(tmp_path / "som.npz", **arrays)
    with np.load(tmp_path / "som.npz", allow_pickle=False) as f:
        assert som_place(f, X[3]) == som_place(som, X[3])


def test_no_labels_no_probs(data):
    X, _, _, _, train = data
    r = fit_som(X, None, None, train, iterations=500, grid=(4, 5))
    assert r["class_counts"] is None and r["mean_probs"] is None
    assert r["grid"] == (4, 5) and r["hits"].sum() == train.sum()


def test_grid_sizing():
    x, y = som_grid_shape(100_000)
    assert y % 2 == 1 and 1400 < x * y < 1800  # ~5 * sqrt(N) nodes
    assert abs(x / (y * np.sqrt(3) / 2) - 1) < 0.15  # square on screen for isotropic data
    xe, ye = som_grid_shape(100_000, eig_ratio=4.0)
    assert xe / (ye * np.sqrt(3) / 2) == pytest.approx(2.0, rel=0.15)  # sqrt of the eigenvalue ratio
    x, y = som_grid_shape(3)
    assert min(x, y) >= 3 and 14 <= x * y <= 20  # never below ~16 nodes
    x, y = som_grid_shape(10**9)
    assert x * y <= 2600


@pytest.mark.parametrize("shape", [(5, 5), (6, 7), (4, 6)])
def test_umatrix_matches_minisom_on_odd_row_grids(shape):
    from minisom import MiniSom

    s = MiniSom(*shape, 3, topology="hexagonal", random_seed=0)
    xx, yy = s.get_euclidean_coordinates()
    hex_xy = np.column_stack([xx.ravel(), yy.ravel()])
    um = hex_umatrix(s.get_weights(), hex_xy)
    interior = np.isclose(np.linalg.norm(hex_xy[:, None] - hex_xy[None], axis=2), 1).sum(axis=1)
    assert interior.max() == 6
    if shape[1] % 2:  # MiniSom's own neighbour table agrees with its coordinates only then
        np.testing.assert_allclose(um, s.distance_map(scaling="mean").ravel(), rtol=1e-6)


def test_bad_inputs(data):
    X, _, onehot, probs, train = data
    with pytest.raises(ValueError, match="train_mask"):
        fit_som(X, onehot, probs, train[:10])
    with pytest.raises(ValueError, match="at least 4"):
        fit_som(X, onehot, probs, np.zeros(len(X), bool))
    with pytest.raises(ValueError, match="labels_onehot"):
        fit_som(X, onehot[:5], probs, train)
