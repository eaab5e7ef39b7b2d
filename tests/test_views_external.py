"""External test sets in the app's views (``covidviz.views.external`` and the maps' parts in
``views.latent`` / ``views.som`` / ``views.som_figure``), Streamlit-free and without training."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from covidviz import runs
from covidviz.data.labels import MULTICLASS, LabelSpace
from covidviz.runs.external import ExternalSet, list_external
from covidviz.stats.projection import MapPlacer
from covidviz.views import compare, latent, overview, som, som_figure
from covidviz.views import external as view
from tests.app_fixtures import make_fake_experiment
from tests.external_fixtures import write_fake_external

NAMES = ["COVID-19", "Normal", "Pneumonia"]


@pytest.fixture
def fake(tmp_path):
    folder = make_fake_experiment(tmp_path / "runs")
    metrics = write_fake_external(folder, "site-b", macro=0.7, drop=0.1)
    return runs.read_experiment(folder), list_external(folder)[0][0], metrics


def test_overview_table_has_one_row_per_site_and_backbone_with_auc_and_drop(fake):
    exp, ext, _ = fake
    table = overview.external_table([ext], exp.backbones)
    assert list(table["Site"]) == ["site-b", "site-b"] and list(table["Backbone"]) == ["DenseNet121", "ResNet50"]
    assert table.loc[0, "Macro AUC (95% CI)"] == "0.700 (0.650–0.750)"
    assert table.loc[0, "Drop from internal (95% CI)"] == "+0.100 (+0.000, +0.200)"
    assert overview.external_sets_text([ext]) == "**site-b**: `folder:/data/site-b` · 20 images scored, 1 left out"
    assert "train.py evaluate runs/EXP --data KIND:PATH --name SITE" in view.OVERVIEW_CAPTION
    assert view.problems_text([]) is None
    assert "2 external test set folder(s)" in view.problems_text(["a: broken", "b: broken"])


def test_test_set_choice_and_site_metrics_read_like_the_analysis(fake):
    exp, ext, _ = fake
    assert view.test_set_options([ext]) == [view.INTERNAL, "site-b"]
    assert view.test_set_label("site-b") == "External: site-b" and view.test_set_label(view.INTERNAL) == view.INTERNAL_LABEL
    shown, source = view.test_source(None, exp.backbones, ext)
    assert shown == exp.backbones and isinstance(source, view.SiteMetrics)
    table = compare.class_table(source, shown, NAMES, pair=(shown[0], shown[1]))
    assert table.loc["COVID-19", "DenseNet121 AUC"] == pytest.approx(0.7)
    assert "Difference" not in table  # no paired tests on an external set
    assert compare.roc_curves(source, shown, compare.MACRO)[shown[0]]["text"] == "AUC 0.700 (95% CI 0.650–0.750)"
    assert view.test_source("analysis", ["a"], None) == (["a"], "analysis")


def test_site_arrays_join_predictions_on_image_id():
    labels = LabelSpace(tuple(NAMES), MULTICLASS)
    images = pd.DataFrame({"image_id": ["a", "b", "c"], "labels": ["Normal", "COVID-19", "Pneumonia"]})
    pred = pd.DataFrame({"image_id": ["c", "a", "b"], "p::COVID-19": [0.1, 0.2, 0.7],
                         "p::Normal": [0.2, 0.7, 0.2], "p::Pneumonia": [0.7, 0.1, 0.1]})
    onehot, probs = view.site_arrays(images, {"x": pred}, labels)
    assert onehot.tolist() == [[0, 1, 0], [1, 0, 0], [0, 0, 1]]
    assert probs["x"].argmax(1).tolist() == [1, 0, 2]  # rows follow the images table, not the predictions'


def test_internal_vs_external_table(fake, tmp_path):
    exp, ext, _ = fake

    class Analysis:  # the part of runs.records.Analysis the table reads
        def backbone(self, arch):
            from covidviz.runs.records import BackboneAnalysis
            per = {c: {"auc": 0.8, "ci_low": 0.75, "ci_high": 0.85} for c in NAMES}
            return BackboneAnalysis(arch, {"test": {"per_class": per, "macro": {"auc": 0.8, "ci_low": 0.7,
                                                                               "ci_high": 0.9}}})

    table = view.internal_vs_external(Analysis(), ext, exp.backbones, NAMES)
    assert len(table) == len(exp.backbones) * (len(NAMES) + 1)
    row = table.loc[("DenseNet121", "Macro average")]
    assert row["Internal test AUC (95% CI)"] == "0.800 (0.700–0.900)"
    assert row["site-b AUC (95% CI)"] == "0.700 (0.650–0.750)"
    assert row["Drop (95% CI)"] == "+0.100 (+0.000, +0.200)"
    other = ExternalSet(tmp_path, {"backbones": {}})  # a set scored before a backbone was added
    assert set(view.internal_vs_external(Analysis(), other, ["resnet50"], NAMES)["Drop (95% CI)"]) == {"—"}


def test_external_images_land_on_the_stored_maps_without_refitting():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(40, 6)).astype(np.float32)
    reducer = {"mean": feats.mean(0), "scale": feats.std(0), "pca_mean": np.zeros(6, np.float32),
               "components": np.eye(6, dtype=np.float32)[:4]}
    ref = ((feats - reducer["mean"]) / reducer["scale"])[:, :4]
    coords = {"tsne": rng.normal(size=(40, 2)).astype(np.float32), "pca": ref[:, :2].copy()}
    placer = MapPlacer(ref, coords, reducer, k=5)
    stored = placer.to_stored() | {"coords_tsne": coords["tsne"]}
    placed = view.place_on_maps(stored, feats[[3, 7]])
    assert np.allclose(placed["tsne"], coords["tsne"][[3, 7]], atol=1e-4)  # a reference image lands on itself
    assert np.allclose(placed["pca"], coords["pca"][[3, 7]], atol=1e-4)
    assert view.place_on_maps({"coords_tsne": coords["tsne"]}, feats) == {}  # no placer stored: nothing placed


def test_external_images_get_their_best_matching_som_node():
    weights = np.arange(12, dtype=np.float64).reshape(2, 2, 3)  # 4 nodes of 3-D weights
    identity = {"reducer_mean": np.zeros(3), "reducer_scale": np.ones(3), "reducer_pca_mean": np.zeros(3),
                "reducer_components": np.eye(3)}
    som_arrays = {"weights": weights, "qe_train_sorted": np.array([0.1, 0.2]), **identity}
    nodes, qe = view.place_on_som(som_arrays, weights.reshape(4, 3)[[2, 0, 3]] + 0.01)
    assert nodes.tolist() == [2, 0, 3] and np.all(qe < 0.1)


def test_set_colouring_and_external_traces_are_never_selectable():
    values = view.set_values(np.array(["train", "test"]), {"site-b": 2})
    assert values.tolist() == ["Train", "Test", "External: site-b", "External: site-b"]
    assert view.set_order(["site-b"]) == ["Train", "Validation", "Test", "External: site-b"]
    assert "set" in latent.COLOUR_BY
    placed = {"site-b": {"coords": {"tsne": np.ones((3, 2), np.float32)}, "image_id": ["x", "y", "z"],
                         "labels": ["Normal", "", "COVID-19"], "probs": np.full((3, 3), 1 / 3)}}
    traces = latent.external_traces(placed, "tsne", NAMES, "set")
    assert [t.name for t in traces] == ["External: site-b (3)"]
    assert np.all(np.asarray(traces[0].customdata)[:, 0] == -1)  # selection_rows drops negative rows
    assert latent.external_traces(placed, "umap", NAMES, "label") == []


def test_som_set_layer_counts_internal_and_external_images():
    labels = LabelSpace(tuple(NAMES), MULTICLASS)
    images = pd.DataFrame({"labels": ["Normal"] * 4, "split": ["train", "train", "test", "val"]})
    nd = som.node_data(images, labels, np.full((4, 3), 1 / 3), np.array([0, 0, 1, 2]), 4, ["train", "test"])
    ext = {"site-b": np.array([3, 3, 1])}
    sets = som.set_node_data(nd, images["split"], ext)
    assert sets.classes == ["Train", "Test", "External: site-b"]  # Validation is filtered out by the split choice
    layer = som.layer_values(sets, "set")
    assert layer["kind"] == "categorical" and layer["title"] == "Dominant set"
    assert layer["dominant"].tolist() == [0, 1, -1, 2] and layer["purity"][1] == pytest.approx(0.5)
    assert som.external_on_node(ext, 3) == "External images on this node (placed without refitting): site-b 2"
    assert som.external_on_node(ext, 0) is None
    hex_xy = np.array([[0, 0], [1, 0], [0.5, 0.87], [1.5, 0.87]])
    traces = som_figure.external_markers(hex_xy, ext)
    assert len(traces) == 1 and traces[0].name == "External: site-b (3)" and len(traces[0].x) == 2
