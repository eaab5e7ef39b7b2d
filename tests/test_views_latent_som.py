"""The Latent space and SOM pages' view helpers (``views.latent``, ``views.latent_selection``,
``views.som``, ``views.som_figure``) on small hand-made inputs: no Streamlit, no trained experiment."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from covidviz.data.labels import MULTICLASS, MULTILABEL, LabelSpace
from covidviz.runs.records import Analysis
from covidviz.views import latent, som, som_figure
from covidviz.views import latent_selection as selection
from covidviz.views.style import NO_FINDING, OKABE_ITO

NAMES = ["COVID-19", "Normal", "Pneumonia"]


def _analysis(per_arch: dict[str, dict[str, float | None]]) -> Analysis:
    """analysis.json with a Youden threshold per backbone and class (None: none could be chosen)."""
    return Analysis({"backbones": {arch: {"thresholds": {"per_class": {
        cls: {"points": {"youden": {"threshold": t}}} for cls, t in per_class.items()}}}
        for arch, per_class in per_arch.items()}})


def _point(row: int) -> dict:
    return {"curve_number": 0, "point_index": row, "customdata": [float(row), 0.2, 0.8]}


# ---------------------------------------------------------------- latent: maps, thresholds, overlays, upload

def test_youden_threshold_and_caption_read_the_analysis():
    analysis = _analysis({"densenet121": {"COVID-19": 0.31, "Normal": None}, "resnet50": {"COVID-19": float("nan")}})
    assert latent.youden_threshold(analysis, "densenet121", "COVID-19") == (0.31, "0.310 (Youden, validation)")
    for arch, cls in (("densenet121", "Normal"), ("resnet50", "COVID-19"), ("densenet121", "Pneumonia")):
        assert latent.youden_threshold(analysis, arch, cls)[0] == 0.5  # none stored, or not finite
    assert latent.youden_threshold(None, "densenet121", "COVID-19") == (0.5, "0.5 (no Youden threshold stored)")
    caption = latent.thresholds_caption(analysis, ["densenet121", "resnet50"], "COVID-19")
    assert caption == "Thresholds: DenseNet121 0.310 (Youden, validation); ResNet50 0.5 (no Youden threshold stored)"


def test_common_methods_keep_the_first_maps_order():
    a = latent.Maps({"pca": np.zeros((2, 2)), "tsne": np.zeros((2, 2)), "umap": np.zeros((2, 2))}, {}, {})
    b = latent.Maps({"pca": np.zeros((2, 2)), "tsne": np.zeros((2, 2))}, {}, {})
    assert latent.common_methods([a, b]) == ["tsne", "pca"]
    assert latent.common_methods([a]) == ["tsne", "umap", "pca"]
    assert latent.common_methods([b, latent.Maps({"umap": np.zeros((2, 2))}, {}, {})]) == []
    assert latent.common_methods([]) == []


def test_quality_markdown_names_the_map_and_formats_measures():
    maps = latent.Maps({"tsne": np.zeros((2, 2))}, {"tsne": {"trustworthiness": 0.912, "knn_agreement": None},
                                                    "features_knn_agreement": 0.8, "sample_size": 5000, "k": 10}, {})
    md = latent.quality_markdown(maps, "resnet50", "tsne")
    lines = md.split("  \n")
    assert lines[0] == "**Map quality · ResNet50 t-SNE**"
    assert lines[1:] == ["Trustworthiness: **0.91**", "kNN label agreement (map): **—**",
                         "kNN label agreement (features): **0.80**", "Measured on: **5,000 images, k = 10**"]


def test_outcome_colours_come_from_the_shared_palette():
    assert set(latent.OUTCOME_COLOURS.values()) <= set(OKABE_ITO)
    assert len(set(latent.OUTCOME_COLOURS.values())) == len(latent.OUTCOMES)


def test_with_overlays_adds_rings_and_star_without_touching_the_cached_figure():
    coords = np.arange(20, dtype=np.float32).reshape(10, 2)
    base = {"data": [{"type": "scattergl", "name": "base"}], "layout": {"title": "x"}}
    up = {"name": "u.png", "backbones": {"a": {"coords": {"tsne": [0.5, -1]}, "neighbors": [7, 8], "distances": [1, 2]}}}
    fig = latent.with_overlays(base, coords, [1, 2, 3], 4, latent.upload_for(up, "a", "tsne"))
    assert base["data"] == [{"type": "scattergl", "name": "base"}]  # the shared cached figure is unchanged
    names = [t["name"] for t in fig["data"]]
    assert names == ["base", "selected (3)", "upload's nearest neighbours (2)", "opened image", "your upload"]
    ring = fig["data"][1]
    assert list(np.asarray(ring["x"])) == [2.0, 4.0, 6.0]  # the selected rows' x
    assert list(np.asarray(fig["data"][-1]["x"])) == [0.5]
    plain = latent.with_overlays(base, coords, [], None, None)
    assert [t["name"] for t in plain["data"]] == ["base"]


def test_upload_notice_lists_each_backbone_and_unions_neighbours():
    up = {"name": "chest.png", "experiment": "e", "backbones": {
        "densenet121": {"coords": {"tsne": [1, 2]}, "neighbors": [5, 3], "distances": [0.1, 0.2], "ood": True},
        "resnet50": {"coords": {}, "neighbors": [3, 9], "distances": [0.1, 0.3], "ood": False}}}
    text, nbrs = latent.upload_notice(up, ["densenet121", "resnet50"], "tsne")
    assert text.startswith("**chest.png** (from the diagnose page)")
    assert "DenseNet121: placed on this map, 2 nearest neighbours ringed — **outside the training distribution**" in text
    assert "ResNet50: not placed on this map, 2 nearest neighbours ringed" in text
    assert "ResNet50: not placed on this map, 2 nearest neighbours ringed —" not in text
    assert list(nbrs) == [3, 5, 9]
    assert latent.upload_notice(up, ["tinycnn"], "tsne") is None
    assert latent.upload_notice(None, ["densenet121"], "tsne") is None
    anonymous = {**up, "name": ""}
    assert latent.upload_notice(anonymous, ["resnet50"], "tsne")[0].startswith("**your upload**")


# ---------------------------------------------------------------- latent: selection, gallery, detail

def test_selection_change_click_opens_box_selects_and_unchanged_maps_are_ignored():
    charts = {"a": {"selection": {"points": [_point(4), _point(6)], "box": [{"x": [0, 1]}]}}, "b": None}
    before = {}
    sigs, rows, opened = selection.selection_change(before, charts)
    assert list(rows) == [4, 6] and opened is None
    assert before == {}  # the caller's dict is not modified
    assert set(sigs) == {"a"}  # "b" has no selection: same as the empty signature, not recorded
    # The same event again (a rerun for another widget): nothing new.
    assert selection.selection_change(sigs, charts)[1:] == (None, None)
    # A click on one point of the other map opens it and keeps the selection.
    charts["b"] = {"selection": {"points": [_point(9)]}}
    sigs2, rows, opened = selection.selection_change(sigs, charts)
    assert rows is None and opened == 9 and set(sigs2) == {"a", "b"}
    # An emptied chart selection (plotly drops it on redraw) never clears the shared one.
    charts["a"] = {"selection": {"points": []}}
    assert selection.selection_change(sigs2, charts)[1:] == (None, None)


def test_gallery_range_and_caption_of_the_last_page():
    rows = np.arange(30)
    shown = selection.gallery_page(rows, 2)
    assert selection.gallery_range(2, len(shown), len(rows)) == "Images 25–30 of 30"
    assert selection.gallery_range(1, 24, 1234) == "Images 1–24 of 1,234"


def test_detail_meta_falls_back_for_missing_values():
    images = pd.DataFrame({"labels": ["COVID-19|Pneumonia", ""], "split": "test", "source": ["", "siteA"],
                           "dataset": "nih", "sex": ["", "F"], "age": [np.nan, 41.0], "patient_id": "p7"})
    assert selection.detail_meta(images.iloc[0]) == ("true: **COVID-19, Pneumonia** · split: test · source: nih · "
                                                     "sex: — · age: — · patient: p7")
    assert selection.detail_meta(images.iloc[1]) == (f"true: **{NO_FINDING}** · split: test · source: siteA · sex: F · "
                                           "age: 41 · patient: p7")


def test_probability_table_and_explained_class():
    p = np.array([0.1, 0.7, 0.2], np.float32)
    table = selection.probability_table({"DenseNet121": p, "ResNet50": p[::-1]}, NAMES)
    assert list(table.index) == NAMES and list(table.columns) == ["DenseNet121", "ResNet50"]
    assert table.loc["Pneumonia", "ResNet50"] == pytest.approx(0.1)
    assert selection.explained_class(NAMES, None, p) == "Normal"   # the top class
    assert selection.explained_class(NAMES, 2, p) == "Pneumonia"   # the chosen class


# ---------------------------------------------------------------- som: controls, thresholds, quality

ML = LabelSpace(("COVID-19", "Pneumonia"), MULTILABEL)
MC = LabelSpace(tuple(NAMES), MULTICLASS)


def test_class_options_and_choice():
    assert som.class_options(ML, "density") == ["COVID-19", "Pneumonia", NO_FINDING]
    assert som.class_options(ML, "error") == ["COVID-19", "Pneumonia"]  # "No finding" has no model output
    assert som.class_options(MC, "density") == NAMES
    assert som.needs_class("error", ML) and not som.needs_class("error", MC)
    assert som.needs_class("density", MC) and not som.needs_class("hits", ML)
    c = som.choice(ML, "density", NO_FINDING, "Test", True)
    assert (c.cls, c.splits, c.prototypes) == (2, ["test"], True)
    assert som.choice(ML, "error", "Pneumonia", "All splits").cls == 1
    c = som.choice(MC, "hits", "not a class", "All splits")
    assert c.cls == 0 and c.splits is None and c.prototypes is False


def test_youden_thresholds_skip_classes_without_one():
    analysis = _analysis({"densenet121": {"COVID-19": 0.3, "Pneumonia": None}})
    assert som.youden_thresholds(analysis, "densenet121") == {"COVID-19": 0.3}
    assert som.youden_thresholds(analysis, "resnet50") == {}
    assert som.youden_thresholds(None, "densenet121") == {}


def test_quality_metrics_format_som_json():
    rows = som.quality_metrics({"quantization_error": 1.23456, "topographic_error": 0.0456, "grid": [12, 9]})
    assert [(label, value) for label, value, _ in rows] == [("Quantization error", "1.23"),
                                                             ("Topographic error", "4.6 %"), ("Grid", "12 × 9")]
    assert som.quality_metrics({"quantization_error": 1, "topographic_error": 0})[2][1] == "? × ?"


# ---------------------------------------------------------------- som: one node

def _nd(labels: LabelSpace, cells: list[str], probs, node, n_nodes: int, splits=None) -> som.NodeData:
    images = pd.DataFrame({"labels": cells, "split": ["train", "test"] * (len(cells) // 2) + ["train"] * (len(cells) % 2)})
    return som.node_data(images, labels, np.asarray(probs, np.float64), np.asarray(node), n_nodes, splits)


def test_node_rows_metrics_and_multiclass_summary():
    cells = ["COVID-19", "COVID-19", "Normal", "Pneumonia", "Normal", "COVID-19"]
    probs = [[.8, .1, .1], [.2, .7, .1], [.1, .8, .1], [.1, .1, .8], [.6, .3, .1], [.1, .1, .8]]
    nd = _nd(MC, cells, probs, [0, 0, 0, 1, 0, 2], 3)
    rows = som.node_rows(nd, 0)
    assert list(rows) == [0, 1, 2, 4]
    assert list(som.node_rows(_nd(MC, cells, probs, [0, 0, 0, 1, 0, 2], 3, ["test"]), 0)) == [1]
    arrays = {"hits": np.array([3, 1, 0]), "umatrix": np.array([0.25, 1.0, 0.5]), "qe": np.arange(6, dtype=float)}
    metrics = som.node_metrics(arrays, 0, rows, "Test")
    assert [(label, value) for label, value, _ in metrics] == [("Images (test)", 4), ("Training hits", 3),
                                                               ("U-matrix", "0.25"), ("Mean QE", "1.75")]
    assert som.node_metrics(arrays, 2, np.array([], np.int64), "Test")[3][1] == "—"
    s = som.node_summary(nd, rows)
    assert list(s.stats["Images"]) == [2, 2, 0] and list(s.stats["Predicted"]) == ["2", "2", "0"]
    assert s.stats.loc["COVID-19", "Share"] == "50%" and s.stats.loc["Normal", "Mean probability"] == "0.48"
    # Wrong: row 1 (COVID-19 predicted Normal) and row 4 (Normal predicted COVID-19).
    assert s.headline == "Dominant class **COVID-19** (50% of its images) · error rate 50% (2 of 4)"
    assert "Errors" not in s.stats


def test_multilabel_summary_uses_thresholds_and_pads_no_finding():
    cells = ["COVID-19", "COVID-19|Pneumonia", "", ""]
    probs = [[.6, .1], [.4, .9], [.2, .2], [.45, .1]]
    nd = _nd(ML, cells, probs, [0, 0, 0, 0], 1)
    rows = som.node_rows(nd, 0)
    s = som.node_summary(nd, rows, {"COVID-19": 0.5})
    assert list(s.stats.index) == ["COVID-19", "Pneumonia", NO_FINDING]
    assert list(s.stats["Images"]) == [2, 1, 2]
    assert list(s.stats["Predicted"]) == ["1", "1", "—"]          # COVID-19 at 0.5: only image 0
    assert list(s.stats["Errors"]) == ["1", "0", "—"]             # image 1 (0.4 < 0.5) missed
    assert s.headline == "Dominant class **COVID-19** (50% of its images)"
    s2 = som.node_summary(nd, rows, {"COVID-19": 0.3})
    assert list(s2.stats["Errors"]) == ["1", "0", "—"]            # image 3 (0.45) now a false positive
    images = pd.DataFrame({"image_id": ["a", "b", "c", "d"], "split": ["train", "val", "test", "other"],
                           "labels": cells})
    table = som.node_images_table(images, nd, rows, s.predicted, np.array([0.1234, 1, 2, 3]))
    assert list(table["Split"]) == ["Train", "Validation", "Test", "other"]
    assert list(table["Labels"]) == ["COVID-19", "COVID-19, Pneumonia", NO_FINDING, NO_FINDING]
    assert list(table["Predicted"]) == ["COVID-19", "Pneumonia", NO_FINDING, NO_FINDING]
    assert table["Top probability"][1] == "Pneumonia 0.90" and table["QE"][0] == pytest.approx(0.123)
    assert som.gallery_captions(table, 2) == ["COVID-19 → COVID-19", "COVID-19, Pneumonia → Pneumonia"]


def test_multiclass_images_table_names_the_top_class():
    nd = _nd(MC, ["Normal", "Pneumonia"], [[.2, .7, .1], [.5, .1, .4]], [0, 0], 1)
    images = pd.DataFrame({"image_id": ["x", "y"], "split": ["val", "test"], "labels": ["Normal", "Pneumonia"]})
    rows = som.node_rows(nd, 0)
    table = som.node_images_table(images, nd, rows, som.node_summary(nd, rows).predicted, np.zeros(2))
    assert list(table["Predicted"]) == ["Normal", "COVID-19"] and list(table["Top probability"]) == ["0.70", "0.50"]


# ---------------------------------------------------------------- som: relations and upload

def test_class_relations_headline_and_share_table():
    # Node 0: 2 COVID + 2 Normal; node 1: 3 Pneumonia. COVID and Normal share a node, Pneumonia is alone.
    nd = _nd(MC, ["COVID-19", "COVID-19", "Normal", "Normal", "Pneumonia", "Pneumonia", "Pneumonia"],
             np.full((7, 3), 1 / 3), [0, 0, 0, 0, 1, 1, 1], 2)
    rel = som.class_relations(nd)
    assert rel.pairs == [("COVID-19", "Normal", pytest.approx(1.0))]
    assert rel.headline == "Closest on the map: **COVID-19** & **Normal** (1.00)"
    assert rel.share.index.name == "Images of" and list(rel.share.columns) == NAMES
    assert rel.share.loc["Normal", "COVID-19"] == pytest.approx(1.0)  # node 0's tie goes to the first class
    apart = som.class_relations(_nd(MC, ["COVID-19", "Normal"], np.full((2, 3), 1 / 3), [0, 1], 2))
    assert apart.pairs == [] and apart.headline.startswith("No two classes share nodes")


def test_upload_on_map_and_elsewhere():
    up = {"name": "chest.png", "experiment": "e", "backbones": {
        "a": {"som_node": 4, "som_qe": 1.25, "som_qe_pct": 99.46, "ood": True},
        "b": {"som_node": None, "som_qe": None, "som_qe_pct": None, "ood": False}}}
    a = som.upload_on_map(up, "a")
    assert (a.node, a.has_qe, a.pct_text) == (4, True, "99.5")
    assert a.text == ("**chest.png** (★) sits on node 4; its quantization error 1.25 is larger than 99.5 % of the "
                      "training images'. It is unlike the training images: treat the model's output with extra caution.")
    b = som.upload_on_map(up, "b")
    assert b.node is None and not b.has_qe and not b.ood
    assert som.upload_on_map(up, "c") is None and som.upload_on_map(None, "a") is None
    assert som.upload_on_map({**up, "name": None}, "a").name == "uploaded image"
    assert som.MapUpload("x", 1, 0.5, 40.2, False).pct_text == "40"
    assert som.upload_elsewhere(up, None) == "e"        # scored with another experiment
    assert som.upload_elsewhere(up, up) is None         # this experiment's
    assert som.upload_elsewhere(None, None) is None and som.upload_elsewhere({"name": "x"}, None) is None


# ---------------------------------------------------------------- som figures

HEX = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3) / 2]])


def test_backbone_figure_layer_hover_highlight_and_upload():
    nd = _nd(MC, ["COVID-19", "Normal", "Normal"], [[.8, .1, .1], [.1, .8, .1], [.7, .2, .1]], [0, 1, 1], 3)
    arrays = {"hex_xy": HEX, "umatrix": np.array([0.2, 0.6, 1.0])}
    fig = som_figure.backbone_figure(arrays, nd, "error", highlight=1, upload=2, width=600)
    centres = fig.data[som_figure.centres_trace_index(fig)]
    assert list(centres.customdata) == [0, 1, 2]
    assert centres.text[1] == "node 1<br>2 images<br>Normal 100%<br>Error rate: 0.5"
    assert centres.text[2] == "node 2<br>no images<br>U-matrix 1.00"
    assert [s.line.color for s in fig.layout.shapes] == [som_figure.UPLOAD_COLOUR, som_figure.SELECTED_COLOUR]
    assert fig.layout.height == som_figure.map_height(HEX, 600)
    assert any(t.name == "uploaded image" and t.mode == "markers" for t in fig.data)  # the star (no mosaic)


def test_relation_heatmap_blanks_the_diagonal_and_qe_histogram_marks_the_upload():
    sim = np.array([[1.0, 0.25], [0.25, 1.0]])
    fig = som_figure.relation_heatmap(sim, ["A", "B"])
    z = fig.data[0].z
    assert z[0][0] is None and z[1][1] is None and z[0][1] == pytest.approx(0.25)
    assert list(fig.data[0].text[0]) == ["—", "0.25"] and fig.data[0].zmin == 0 and fig.data[0].zmax == 1
    assert sim[0, 0] == 1.0  # the caller's matrix is not modified
    hist = som_figure.qe_histogram(np.array([0.1, 0.2, 0.4]), 0.35, "upload (67 %)")
    assert list(hist.data[0].x) == [0.1, 0.2, 0.4]
    line = hist.layout.shapes[0]
    assert line.x0 == line.x1 == 0.35 and hist.layout.annotations[0].text == "upload (67 %)"
