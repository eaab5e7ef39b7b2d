"""2-D maps (PCA, t-SNE, UMAP), their quality measures, and placing new points on them."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from covidviz.stats.projection import MapPlacer, Placement, apply_reducer, fit_projections

# Short t-SNE schedule: the tests check behaviour, not convergence to the last decimal.
FAST_TSNE = {"n_iter": 100, "early_exaggeration_iter": 50}


def clustered(n=300, d=64, c=5, seed=0, spread=1.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(c, d)) * 4.0
    y = rng.integers(0, c, n)
    X = (centres[y] + rng.normal(size=(n, d)) * spread).astype(np.float32)
    return X, y


@pytest.fixture(scope="module")
def data():
    return clustered()


@pytest.fixture(scope="module")
def fitted(data):
    X, y = data
    return fit_projections(X, y, seed=0, methods=("pca", "tsne"), tsne_kwargs=FAST_TSNE)


def test_layout_and_shapes(data, fitted):
    X, _ = data
    n = len(X)
    assert fitted["methods"] == ["pca", "tsne"]
    for m in ("pca", "tsne"):
        c = fitted["coords"][m]
        assert c.shape == (n, 2) and c.dtype == np.float32 and np.isfinite(c).all()
    assert fitted["pca50"].shape == (n, 50) and fitted["pca50"].dtype == np.float32
    # the PCA map is the first two components, and the stored reducer reproduces the 50-D vectors
    np.testing.assert_array_equal(fitted["coords"]["pca"], fitted["pca50"][:, :2])
    np.testing.assert_allclose(apply_reducer(X, fitted["reducer"]), fitted["pca50"], atol=1e-3)
    p = fitted["params"]
    assert p["pca"]["n_components"] == 50 and 0 < p["pca"]["explained_variance_ratio"] <= 1.0001
    assert p["tsne"]["perplexity"] == 30 and p["tsne"]["implementation"] == "openTSNE"
    assert p["tsne"]["n_iter"] == 100  # overrides win over the size-dependent defaults
    assert set(fitted["fit_seconds"]) == {"pca", "tsne", "quality"}
    assert fitted["quality"]["sample_size"] == n and fitted["quality"]["k"] == 10


def test_small_inputs_get_valid_parameters():
    X, y = clustered(n=40, d=8, c=2)
    r = fit_projections(X, y, methods=("pca", "tsne"), tsne_kwargs=FAST_TSNE)
    assert r["pca50"].shape == (40, 8)  # never more components than dimensions
    assert r["params"]["tsne"]["perplexity"] < 40 / 3
    assert r["coords"]["tsne"].shape == (40, 2)


def test_same_seed_same_maps_other_seed_other_tsne(data, fitted):
    X, y = data
    again = fit_projections(X, y, seed=0, methods=("pca", "tsne"), tsne_kwargs=FAST_TSNE)
    for m in ("pca", "tsne"):
        np.testing.assert_array_equal(again["coords"][m], fitted["coords"][m])
    other = fit_projections(X, y, seed=1, methods=("tsne",), tsne_kwargs=FAST_TSNE)
    assert not np.allclose(other["coords"]["tsne"], fitted["coords"]["tsne"])


def test_clustered_data_scores_high_and_shuffled_labels_low(data, fitted):
    X, y = data
    q = fitted["quality"]
    assert q["features_knn_agreement"] > 0.95
    assert q["tsne"]["knn_agreement"] > 0.9
    for m in ("pca", "tsne"):
        assert 0.0 <= q[m]["trustworthiness"] <= 1.0
    assert q["tsne"]["trustworthiness"] > 0.9
    shuffled = np.random.default_rng(0).permutation(y)
    r = fit_projections(X, shuffled, methods=("pca",))
    # 5 balanced classes: chance agreement is about 0.2
    assert r["quality"]["pca"]["knn_agreement"] < 0.35
    assert r["quality"]["features_knn_agreement"] < 0.35


def test_no_labels_no_agreement(data):
    X, _ = data
    r = fit_projections(X, None, methods=("pca",))
    assert r["quality"]["features_knn_agreement"] is None
    assert r["quality"]["pca"]["knn_agreement"] is None
    assert 0.0 <= r["quality"]["pca"]["trustworthiness"] <= 1.0


def test_quality_uses_a_bounded_seeded_sample():
    X, y = clustered(n=600, d=16, c=3)
    r = fit_projections(X, y, methods=("pca",), quality_sample=200)
    assert r["quality"]["sample_size"] == 200
    r2 = fit_projections(X, y, methods=("pca",), quality_sample=200)
    assert r2["quality"] == r["quality"]


def test_bad_inputs_are_rejected(data):
    X, y = data
    with pytest.raises(ValueError, match="unknown projection"):
        fit_projections(X, y, methods=("isomap",))
    with pytest.raises(ValueError, match="labels_idx"):
        fit_projections(X, y[:10], methods=("pca",))
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_projections(bad, y, methods=("pca",))


# ---------------------------------------------------------------- MapPlacer

def test_placing_a_training_point_returns_it(data, fitted):
    X, _ = data
    placer = MapPlacer.from_projection(fitted)
    rows = [0, 17, 123, 299]
    pl = placer.place(X[rows])
    assert isinstance(pl, Placement)
    assert pl.neighbors.shape == (4, 10) and pl.distances.shape == (4, 10)
    np.testing.assert_array_equal(pl.neighbors[:, 0], rows)
    assert (pl.distances[:, 0] < 1e-2).all()
    assert (np.diff(pl.distances, axis=1) >= 0).all()
    for m in ("pca", "tsne"):
        span = np.ptp(fitted["coords"][m], axis=0).max()
        np.testing.assert_allclose(pl.coords[m], fitted["coords"][m][rows], atol=1e-3 * span)


def test_new_point_lands_in_its_cluster(data, fitted):
    X, y = data
    rng = np.random.default_rng(5)
    placer = MapPlacer.from_projection(fitted)
    tsne = fitted["coords"]["tsne"]
    centroids = np.stack([tsne[y == c].mean(axis=0) for c in range(5)])
    for c in range(5):
        new = X[y == c].mean(axis=0) + rng.normal(size=X.shape[1]).astype(np.float32) * 0.5
        pl = placer.place(new)  # a single (D,) vector is accepted
        assert (y[pl.neighbors[0]] == c).all()
        assert np.linalg.norm(centroids - pl.coords["tsne"][0], axis=1).argmin() == c


def test_placer_on_a_subset_returns_table_rows(data, fitted):
    X, _ = data
    mask = np.zeros(len(X), bool)
    mask[::2] = True
    placer = MapPlacer.from_projection(fitted, mask=mask)
    pl = placer.place(X[[4, 5]])
    assert pl.neighbors[0, 0] == 4  # row 4 is a reference point: itself
    assert mask[pl.neighbors].all()  # neighbours are always reference (train) rows, by table index


def test_placer_round_trips_through_npz(tmp_path, data, fitted):
    X, _ = data
    placer = MapPlacer.from_projection(fitted)
    arrays = placer.to_arrays()
    assert all(isinstance(v, np.ndarray) for v in arrays.values())
    np.savez(tmp_path / "placer.npz", **arrays)
    with np.load(tmp_path / "placer.npz", allow_pickle=False) as f:
        loaded = MapPlacer.from_arrays(f)
    a, b = placer.place(X[:7] + 0.3), loaded.place(X[:7] + 0.3)
    np.testing.assert_array_equal(a.neighbors, b.neighbors)
    for m in placer.methods:
        np.testing.assert_allclose(a.coords[m], b.coords[m], rtol=1e-6)
    assert loaded.methods == ["pca", "tsne"]


def test_placer_rejects_wrong_dimension(fitted):
    placer = MapPlacer.from_projection(fitted)
    with pytest.raises(ValueError, match="dimensions"):
        placer.place(np.zeros((1, 10), np.float32))


def test_placement_latency_single_image_10k_references():
    # A generous bound (typically ~1 ms): placing one upload must feel instant in the app.
    rng = np.random.default_rng(0)
    n, d, k = 10_000, 1024, 50
    reducer = {"mean": np.zeros(d, np.float32), "scale": np.ones(d, np.float32),
               "pca_mean": np.zeros(d, np.float32),
               "components": np.linalg.qr(rng.normal(size=(d, k)))[0].T.astype(np.float32)}
    placer = MapPlacer(rng.normal(size=(n, k)).astype(np.float32),
                       {"tsne": rng.normal(size=(n, 2)), "umap": rng.normal(size=(n, 2))}, reducer)
    x = rng.normal(size=(1, d)).astype(np.float32)
    placer.place(x)  # warm-up
    best = min(_timed(placer.place, x) for _ in range(7))
    assert best < 0.05, f"placing one image took {best * 1000:.1f} ms"


def _timed(fn, *args):
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def test_importing_projection_does_not_load_numba_or_umap():
    code = ("import sys, covidviz.stats.projection, covidviz.stats.som; "
            "bad = [m for m in ('umap', 'numba', 'pynndescent', 'openTSNE') if m in sys.modules]; "
            "sys.exit(repr(bad) if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=str(Path(__file__).resolve().parents[1]))
    assert res.returncode == 0, res.stderr


@pytest.mark.slow
def test_umap_map_is_seeded_and_keeps_clusters(data):
    X, y = data
    a = fit_projections(X, y, seed=0, methods=("umap",))
    b = fit_projections(X, y, seed=0, methods=("umap",))
    assert a["coords"]["umap"].shape == (len(X), 2)
    np.testing.assert_array_equal(a["coords"]["umap"], b["coords"]["umap"])
    assert a["quality"]["umap"]["knn_agreement"] > 0.9
    assert a["params"]["umap"]["n_neighbors"] == 15 and a["params"]["umap"]["n_jobs"] == 1
    placer = MapPlacer.from_projection(a)
    np.testing.assert_array_equal(placer.place(X[:3]).neighbors[:, 0], [0, 1, 2])
