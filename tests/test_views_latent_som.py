"""The Latent space and SOM pages' view helpers (``views.latent``, ``views.latent_selection``,
``views.som``, ``views.som_figure``) on small hand-made inputs: no Streamlit, no trained experiment."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from covidviz.data.labels import MULTICLASS, MULTILABEL, LabelSpace
from covidviz.runs.records import Analysis, ProjectionsInfo, SomInfo
from covidviz.views import formats, glossary, latent, som, som_figure
from covidviz.views import latent_selection as selection
from covidviz.views.style import NO_FINDING, OKABE_ITO, PALETTE, SELECTION_COLOUR, UPLOAD_COLOUR

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
    assert latent.youden_threshold(analysis, "densenet121", "COVID-19") == (0.31, "0.310 (raw score), Youden on validation")
    for arch, cls in (("densenet121", "Normal"), ("resnet50", "COVID-19"), ("densenet121", "Pneumonia")):
        assert latent.youden_threshold(analysis, arch, cls)[0] == 0.5  # none stored, or not finite
    assert latent.youden_threshold(None, "densenet121", "COVID-19") == (0.5, "0.500 (raw score), no Youden threshold stored")
    caption = latent.thresholds_caption(analysis, ["densenet121", "resnet50"], "COVID-19")
    assert caption == ("Thresholds: DenseNet121 0.310 (raw score), Youden on validation; ResNet50 0.500 (raw score), "
                       "no Youden threshold stored")


def _maps(methods, quality=None) -> latent.Maps:
    return latent.Maps({m: np.zeros((2, 2)) for m in methods}, ProjectionsInfo({"quality": quality or {}}))


def test_common_methods_keep_the_first_maps_order():
    a, b = _maps(["pca", "tsne", "umap"]), _maps(["pca", "tsne"])
    assert latent.common_methods([a, b]) == ["tsne", "pca"]
    assert latent.common_methods([a]) == ["tsne", "umap", "pca"]
    assert latent.common_methods([b, _maps(["umap"])]) == []
    assert latent.common_methods([]) == []


def test_quality_markdown_names_the_map_formats_measures_and_links_them():
    maps = _maps(["tsne"], {"tsne": {"trustworthiness": 0.912, "knn_agreement": None},
                            "features_knn_agreement": 0.8, "sample_size": 5000, "k": 10})
    md = latent.quality_markdown(maps, "resnet50", "tsne")
    lines = md.split("  \n")
    knn = "[kNN label agreement](/glossary#knn-label-agreement)"
    assert lines[0] == "**Map quality · ResNet50 t-SNE**"
    assert lines[1:] == ["[Trustworthiness](/glossary#trustworthiness): **0.91**", f"{knn} (map): **—**",
                         f"{knn} (features): **0.80**", "Measured on: **5,000 images, k = 10**"]
    # An analysis without a quality block (or without projections.json) reads as dashes, not a KeyError.
    assert [v for _, v in latent.quality_rows(_maps(["tsne"]), "tsne")] == ["—", "—", "—"]


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
    assert [t["name"] for t in plain["data"]] == ["base"] and plain["layout"] is base["layout"]
    # One colour for "the selection" and one for "your upload" (its star and its neighbours), from views.style.
    assert ring["marker"]["color"] == SELECTION_COLOUR
    assert fig["data"][2]["marker"]["color"] == fig["data"][-1]["marker"]["color"] == UPLOAD_COLOUR
    assert SELECTION_COLOUR not in PALETTE[:15] and UPLOAD_COLOUR not in PALETTE
    # A revision changes the figure (so the browser re-creates the map) without touching the cache.
    assert latent.with_overlays(base, coords, [], None, None, revision=2)["layout"]["datarevision"] == 2
    assert "datarevision" not in base["layout"]


def test_drawn_figure_redraws_what_overlay_key_recorded():
    coords = np.arange(20, dtype=np.float32).reshape(10, 2)
    base = {"data": [{"type": "scattergl", "name": "base"}], "layout": {}}
    up = latent.upload_for({"backbones": {"a": {"coords": {"tsne": [0.5, -1]}, "neighbors": [7, 8]}}}, "a", "tsne")
    key = latent.overlay_key(4, up)
    assert key == (4, (0.5, -1.0), (7, 8)) and latent.overlay_key(None, None) == (None, None, ())
    import plotly.io as pio

    def same(a, b):  # byte for byte what the browser receives
        return pio.to_json(a, validate=False) == pio.to_json(b, validate=False)
    assert same(latent.drawn_figure(base, coords, [1, 2], key), latent.with_overlays(base, coords, [1, 2], 4, up))
    assert same(latent.drawn_figure(base, coords, (), latent.overlay_key(None, None)), latent.with_overlays(base, coords))
    assert not same(latent.drawn_figure(base, coords, [1], key), latent.with_overlays(base, coords, [1, 2], 4, up))


def test_figure_dict_stores_hover_texts_as_fixed_width_strings():
    images, probs = pd.DataFrame({"image_id": ["a", "bb"], "labels": ["COVID-19", ""], "source": "s", "dataset": "d",
                                  "sex": "M", "age": 40.0, "split": "test"}), np.full((2, 3), 1 / 3, np.float32)
    t = latent.point_table(images, probs, NAMES, MULTICLASS)
    fig = latent.base_figure(np.zeros((2, 2), np.float32), t, probs, NAMES, "split")
    d = latent.figure_dict(fig)
    text = d["data"][0]["text"]
    assert text.dtype.kind == "U" and list(text) == ["a<br>COVID-19", f"bb<br>{NO_FINDING}"]
    import plotly.io as pio

    assert pio.to_json(d, validate=False) == pio.to_json(fig.to_dict(), validate=False)  # the same JSON is sent


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
    info = SomInfo({"quantization_error": 1.23456, "topographic_error": 0.0456, "grid": [12, 9],
                    "qe_percentiles": {"95": 2.5}, "params": {"sigma": 3}, "fit_seconds": 1.5})
    rows = som.quality_metrics(info)
    assert [(label, value) for label, value, _ in rows] == [("QE", "1.23"), ("TE", "4.6 %"), ("Grid", "12 × 9")]
    assert rows[0][2].startswith("Quantization error") and rows[1][2].startswith("Topographic error")
    assert rows[2][2] == "12 hexagons wide (columns, left to right) × 9 high (rows, top to bottom)."
    assert (info.grid, info.qe_percentiles, info.params, info.fit_seconds) == ((12, 9), {"95": 2.5}, {"sigma": 3}, 1.5)
    empty = SomInfo({})  # an older or partial som.json: dashes, never a KeyError
    assert [v for _, v, _ in som.quality_metrics(empty)] == ["—", "—", "? × ?"] and empty.grid is None


def test_projections_info_reads_quality_per_map():
    info = ProjectionsInfo({"methods": ["pca", "tsne"], "params": {"seed": 0}, "fit_seconds": {"tsne": 2.0},
                            "quality": {"tsne": {"trustworthiness": 0.9, "knn_agreement": 0.7},
                                        "features_knn_agreement": 0.8, "sample_size": 2000, "k": 15}})
    assert info.methods == ["pca", "tsne"] and info.params == {"seed": 0} and info.fit_seconds == {"tsne": 2.0}
    assert (info.trustworthiness("tsne"), info.knn_agreement("tsne"), info.features_knn_agreement) == (0.9, 0.7, 0.8)
    assert info.trustworthiness("umap") is None and (info.sample_size, info.k) == (2000, 15)
    assert ProjectionsInfo({}).k == 10 and ProjectionsInfo({}).sample_size is None and ProjectionsInfo({}).methods == []


def test_node_position_uses_the_pictures_columns_and_rows():
    """node = i * rows + j (stats.som); the page draws MiniSom's hexagonal coordinates with the y axis
    up: the caption must count columns left to right and rows top to bottom as the picture shows them."""
    from minisom import MiniSom

    gx, gy = 15, 7
    xx, yy = MiniSom(gx, gy, 2, topology="hexagonal", random_seed=0).get_euclidean_coordinates()
    hex_xy = np.column_stack([xx.ravel(), yy.ravel()])  # as stats.som stores them
    assert som.grid_shape(hex_xy) == (gx, gy)
    xs, ys = hex_xy[:, 0], hex_xy[:, 1]
    for node in range(gx * gy):
        col, row = som.node_cell(node, (gx, gy))
        # Hexagon columns: x = i, or i - 0.5 on every other row.
        assert col == 1 + int(np.ceil(xs[node] - 1e-6) - np.ceil(xs.min() - 1e-6))
        assert row == 1 + len(np.unique(np.round(ys[ys > ys[node] + 1e-6], 3)))  # rows above it, drawn higher
    top_left = int(np.lexsort((xs, -ys))[0])       # the highest row, its leftmost hexagon
    bottom_right = int(np.lexsort((-xs, ys))[0])   # the lowest row, its rightmost hexagon
    assert formats.som_position(top_left, (gx, gy)) == "column 1 of 15 (left to right), row 1 of 7 (top to bottom)"
    assert formats.som_position(bottom_right, (gx, gy)) == "column 15 of 15 (left to right), row 7 of 7 (top to bottom)"
    # The example: a map 15 wide x 7 high; node 13 * 7 + 2 = 93 is in the 14th column, 5th row from the top.
    assert formats.som_position(93, (15, 7)) == "column 14 of 15 (left to right), row 5 of 7 (top to bottom)"
    assert som.node_cell is formats.som_cell  # one definition, the figure's hover text included
    fig = som_figure.som_figure(hex_xy, {"values": np.zeros(gx * gy), "kind": "continuous", "title": "", "range": (0, 1)},
                                "hits", [""] * (gx * gy), [])
    assert fig.layout.yaxis.autorange != "reversed" and fig.layout.yaxis.range[0] < fig.layout.yaxis.range[1]  # y up


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
    assert [(label, value) for label, value, _ in metrics] == [("Images", 4), ("Hits", 3),
                                                               ("U-matrix", "0.25"), ("Mean QE", "1.75")]
    assert metrics[0][2] == "Images of the chosen split(s) on this node: test."
    assert som.node_metrics(arrays, 2, np.array([], np.int64), "Test")[3][1] == "—"
    s = som.node_summary(nd, rows)
    assert list(s.stats["Images"]) == [2, 2, 0] and list(s.stats["Predicted"]) == ["2", "2", "0"]
    assert s.stats.loc["COVID-19", "Share"] == "50%" and s.stats.loc["Normal", "Mean P"] == "0.48"
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
    assert list(table["Image"]) == ["a (train)", "b (validation)", "c (test)", "d (other)"]
    assert list(table["Labels"]) == ["COVID-19", "COVID-19, Pneumonia", NO_FINDING, NO_FINDING]
    assert list(table["Predicted"]) == ["COVID-19", "Pneumonia", NO_FINDING, NO_FINDING]
    assert table["Top P"][1] == "Pneumonia 0.90" and table["QE"][0] == pytest.approx(0.123)
    assert set(som.NODE_TABLE_COLUMNS) == set(table.columns)  # every column has a width that fits
    assert som.gallery_captions(table, 2) == ["COVID-19 → COVID-19", "COVID-19, Pneumonia → Pneumonia"]


def test_multiclass_images_table_names_the_top_class():
    nd = _nd(MC, ["Normal", "Pneumonia"], [[.2, .7, .1], [.5, .1, .4]], [0, 0], 1)
    images = pd.DataFrame({"image_id": ["x", "y"], "split": ["val", "test"], "labels": ["Normal", "Pneumonia"]})
    rows = som.node_rows(nd, 0)
    table = som.node_images_table(images, nd, rows, som.node_summary(nd, rows).predicted, np.zeros(2))
    assert list(table["Predicted"]) == ["Normal", "COVID-19"] and list(table["Top P"]) == ["0.70", "0.50"]


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
    a = som.upload_on_map(up, "a", (3, 5))
    assert (a.node, a.has_qe, a.pct_text) == (4, True, "99.5")
    assert a.label == "your upload"
    assert a.text == ("**chest.png** (★) sits on node 4, at column 1 of 3 (left to right), row 1 of 5 (top to bottom). "
                      "[Out-of-distribution](/glossary#out-of-distribution) verdict: unlike the training images. Treat "
                      "the model's output with extra caution. A detail behind the verdict, not a second test: its SOM "
                      "[quantization error](/glossary#qe) 1.25 is larger than that of 99.5 % of the training images.")
    assert som.upload_on_map(up, "a").position is None and "sits on node 4. " in som.upload_on_map(up, "a").text
    # with the verdict the Diagnose page stored: its status and THE yardstick (its stated false-alarm rate)
    verdict = {"status": "in-distribution", "checked": True, "false_alarm_rate": 0.05, "detector": "mahalanobis"}
    fine = som.upload_on_map({**up, "verdict": verdict}, "a", (3, 5))
    assert ("verdict: like the training images. An image is flagged when it lies farther from the training images "
            "than the farthest 5 % of the validation images") in fine.text
    assert fine.text.index("verdict:") < fine.text.index("A detail behind the verdict")
    b = som.upload_on_map(up, "b")
    assert b.node is None and not b.has_qe and not b.ood
    assert som.upload_on_map(up, "c") is None and som.upload_on_map(None, "a") is None
    assert som.upload_on_map({**up, "name": None}, "a").name == "**your upload**"
    picked = som.upload_on_map({**up, "name": "test image p12-3", "source": "test"}, "a", (3, 5))
    assert picked.label == "the test image" and picked.text.startswith("The test image **p12-3** (★) sits on node 4")
    assert som.MapUpload("x", 1, 0.5, 40.2, False).pct_text == "40"
    assert som.upload_elsewhere(up, None) == "e"        # scored with another experiment
    assert som.upload_elsewhere(up, up) is None         # this experiment's
    assert som.upload_elsewhere(None, None) is None and som.upload_elsewhere({"name": "x"}, None) is None


# ---------------------------------------------------------------- som figures

HEX = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3) / 2]])
GRID_2X2 = np.array([[0.0, 0.0], [-0.5, np.sqrt(3) / 2], [1.0, 0.0], [0.5, np.sqrt(3) / 2]])  # node = i * 2 + j


def test_backbone_figure_layer_hover_highlight_and_upload():
    nd = _nd(MC, ["COVID-19", "Normal", "Normal", "Normal"], [[.8, .1, .1], [.1, .8, .1], [.7, .2, .1], [.1, .8, .1]],
             [0, 1, 1, 1], 4)
    arrays = {"hex_xy": GRID_2X2, "umatrix": np.array([0.2, 0.6, 1.0, 0.4])}
    fig = som_figure.backbone_figure(arrays, nd, "error", highlight=1, upload=2, width=600)
    centres = fig.data[som_figure.centres_trace_index(fig)]
    assert list(centres.customdata) == [0, 1, 2, 3]
    # Node 1 (i=0, j=1) is drawn in the left column, upper row; node 2 (i=1, j=0) right, lower.
    assert centres.text[1] == "node 1 (column 1, row 1)<br>3 images<br>Normal 100%<br>Error rate: 0.333"
    assert centres.text[2] == "node 2 (column 2, row 2)<br>no images<br>U-matrix 1.00"
    # Upload then selection, each outline over a white halo; the star in the upload colour.
    assert [s.line.color for s in fig.layout.shapes] == [som_figure.HALO_COLOUR, UPLOAD_COLOUR,
                                                         som_figure.HALO_COLOUR, SELECTION_COLOUR]
    assert fig.layout.height == som_figure.map_height(GRID_2X2, 600)
    star = next(t for t in fig.data if t.name == "your upload" and t.mode == "markers")  # the star (no mosaic)
    assert star.marker.color == UPLOAD_COLOUR


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
    assert line.line.color == UPLOAD_COLOUR


# ---------------------------------------------------------------- latent: captions, class mix, gallery block

def test_gallery_caption_shows_the_file_name_not_a_cut_path():
    assert selection.file_name("covid3:images/000185.png") == "000185.png"
    assert selection.file_name("nih14:00000013_005.png") == "00000013_005.png"
    assert selection.file_name("C:\\x\\y.png") == "y.png" and selection.file_name("plain") == "plain"
    table = pd.DataFrame({"image_id": ["covid3:images/000185.png"], "labels": ["COVID-19|Pneumonia"]})
    caption = selection.gallery_caption(table, 0, NAMES, np.array([[0.1, 0.2, 0.7]]))
    assert caption == "000185.png · true: COVID-19, Pneumonia · pred: Pneumonia 0.70"
    assert selection.pick_labels([0], table, 25) == {0: "25. 000185.png"}


def test_gallery_html_is_one_wrapping_block_of_numbered_figures():
    thumbs = np.zeros((5, 64, 64), np.uint8)
    block = selection.gallery_html(thumbs, [3, 1], ["a.png · true: <x>", "b.png"], first=25)
    assert block.count('<img class="latent-thumb"') == 2 and block.count("data:image/png;base64,") == 2
    assert "25. a.png · true: &lt;x&gt;" in block and "26. b.png" in block  # escaped, numbered as the picker
    assert "overflow-wrap:anywhere" in block and "grid-template-columns" in block


def test_class_mix_has_short_headers_and_a_markdown_table():
    t = pd.DataFrame({"labels": ["COVID-19", "Normal", "COVID-19|Pneumonia"], "prediction": ["COVID-19", "Normal", "Normal"]})
    mix = selection.class_mix({"DenseNet121": t, "ResNet50": t}, np.array([0, 1, 2]), NAMES)
    assert list(mix.columns) == ["Labelled", "Share", "DenseNet121", "ResNet50"]
    assert mix.loc["COVID-19", "Labelled"] == 2 and mix.loc["COVID-19", "Share"] == "67%"
    block = selection.table_html(mix, "latent-mix")
    assert block.startswith('<table class="latent-mix" style="max-width:100%') and "overflow-wrap:anywhere" in block
    assert [h.split(">")[-1] for h in block.split("</th>")[:-1]] == ["Class", "Labelled", "Share", "DenseNet121",
                                                                       "ResNet50"]
    assert block.count("<tr>") == 1 + len(mix) and ">67%</td>" in block
    assert "&lt;b&gt;" in selection.table_html(pd.DataFrame({"x": ["<b>"]}))  # escaped
    probs = selection.probability_table({"DenseNet121": np.array([0.1234, 0.8766])}, ["A", "B"])
    block = selection.table_html(probs, "latent-probs", "{:.3f}")
    assert ">Class</th>" in block and ">0.123</td>" in block and "text-align:right\">0.877" in block
    assert "several findings" in selection.class_mix_help(True) and "several" not in selection.class_mix_help()


def test_valid_rows_drop_rows_another_experiment_had():
    assert list(selection.valid_rows([0, 5, 12, -1], 10)) == [0, 5]
    assert list(selection.valid_rows(None, 10)) == [] and list(selection.valid_rows([], 0)) == []


# ---------------------------------------------------------------- latent: when a map is redrawn

BASE = ("tsne", "label", None, 560)
OTHERS = (None, None, ())


def test_a_new_map_is_drawn_at_once_with_its_rings():
    plan, wait = selection.next_drawing(None, BASE, [3, 4], OTHERS, [], followup=False)
    assert plan == selection.MapDrawing(BASE, (3, 4), OTHERS) and not wait
    # Another colouring: drawn anew at once (with rings: plotly's own selection does not survive it).
    plan2, wait = selection.next_drawing(plan, ("tsne", "split", None, 560), [3, 4], OTHERS, [3, 4], followup=False)
    assert plan2.rings == (3, 4) and plan2.base[1] == "split" and not wait


def test_the_map_selected_on_is_not_redrawn_and_the_other_waits_for_the_follow_up():
    before = selection.MapDrawing(BASE, (), OTHERS)
    # The map the user drew the box on shows plotly's own selection: nothing to redraw, ever.
    plan, wait = selection.next_drawing(before, BASE, [3, 4], OTHERS, [4, 3], followup=False)
    assert plan is before and not wait
    assert selection.next_drawing(before, BASE, [3, 4], OTHERS, [4, 3], followup=True) == (before, False)
    # The other map must ring the selection: held back now (drawn as before), drawn by the follow-up run.
    plan, wait = selection.next_drawing(before, BASE, [3, 4], OTHERS, [], followup=False)
    assert plan is before and wait
    plan, wait = selection.next_drawing(before, BASE, [3, 4], OTHERS, [], followup=True)
    assert plan.rings == (3, 4) and not wait
    # Opening an image changes the overlays: the selected-on map gets its rings then (it is redrawn anyway).
    opened = (3, None, ())
    plan, _ = selection.next_drawing(before, BASE, [3, 4], opened, [4, 3], followup=True)
    assert plan.rings == (3, 4) and plan.others == opened
    # A map still ringing an older selection is redrawn with the new rings, even where the box was drawn.
    old = selection.MapDrawing(BASE, (9,), OTHERS)
    assert selection.next_drawing(old, BASE, [3, 4], OTHERS, [3, 4], followup=True)[0].rings == (3, 4)


def test_a_stale_plotly_selection_is_dropped_by_a_new_revision():
    drawn = selection.MapDrawing(BASE, (), OTHERS, revision=1)
    # "Clear selection": the map still shows plotly's box over rows 3, 4; same overlays -> bump the revision.
    plan, wait = selection.next_drawing(drawn, BASE, [], OTHERS, [3, 4], followup=False)
    assert plan is drawn and wait
    plan, wait = selection.next_drawing(drawn, BASE, [], OTHERS, [3, 4], followup=True)
    assert plan == selection.MapDrawing(BASE, (), OTHERS, revision=2) and not wait


def test_plan_drawings_covers_the_maps_shown_and_reads_chart_states():
    sel = {"selection": {"points": [_point(3), _point(4)]}}
    plans, pending = selection.plan_drawings(None, {"a": BASE, "b": BASE}, [3, 4], {"a": OTHERS, "b": OTHERS},
                                             {"a": sel, "b": None}, followup=False)
    assert plans["a"].rings == (3, 4) and plans["b"].rings == (3, 4) and not pending  # first drawing of both
    plans2, pending = selection.plan_drawings({**plans, "gone": plans["a"]}, {"a": BASE, "b": BASE}, [3, 4],
                                              {"a": OTHERS, "b": OTHERS}, {"a": sel, "b": None}, followup=False)
    assert set(plans2) == {"a", "b"} and plans2 == plans and not pending


# ---------------------------------------------------------------- glossary links in the pages' captions

def test_captions_link_their_statistics_to_the_glossary():
    for text, terms in ((latent.INTRO, ("t-SNE", "UMAP", "PCA")),
                        (latent.QUALITY_HELP, ("Trustworthiness", "kNN label agreement")),
                        (som.INTRO, ("SOM",)), (som.QUALITY_HELP, ("QE", "TE")), (som.LAYER_HELP["umatrix"], ("U-matrix",)),
                        (som.LAYER_HELP["hits"], ("Hits",)), (som.LAYER_HELP["dominant"], ("Purity",))):
        for term in terms:
            assert f"(/glossary#{glossary.slug(term)})" in text, (term, text)
    notice, _ = latent.upload_notice({"name": "x.png", "backbones": {"a": {"coords": {}, "neighbors": [1], "ood": True}}},
                                     ["a"], "tsne")
    assert "(/glossary#pca-50-units)" in notice and "(/glossary#out-of-distribution)" in notice
