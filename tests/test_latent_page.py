"""The latent-space page: pure data shaping (views.latent, views.latent_selection) and the page
through AppTest.

AppTest cannot draw a lasso and Streamlit refuses to set a chart's selection through session state,
so the selection is tested in two halves: ``selection_rows`` on a selection payload built from the
page's real figure (the shape the browser sends), and the page with the selection rows it stores.
The browser test (tests/test_browser_latent.py) draws a real box selection. Every key the page keeps
is scoped to the experiment (``ui.scoped``); ``sk`` builds them here.
"""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from covidviz import runs, ui
from covidviz.views import latent
from covidviz.views import latent_selection as selection

REPO = Path(__file__).resolve().parents[1]
PAGE = str(REPO / "app_pages" / "latent.py")
TIMEOUT = 120
NAMES = ["COVID-19", "Normal", "Pneumonia"]


pytestmark = pytest.mark.usefixtures("app_like_server")


# ---------------------------------------------------------------- pure helpers

def _images(n=12):
    labels = [NAMES[i % 3] for i in range(n)]
    return pd.DataFrame({"image_id": [f"img{i}" for i in range(n)], "path": [f"/x/{i}.png" for i in range(n)],
                         "labels": labels, "patient_id": [f"p{i}" for i in range(n)], "dataset": "csv",
                         "source": ["A" if i % 2 else "" for i in range(n)], "sex": ["M", "F", ""] * (n // 3),
                         "age": [np.nan if i % 4 == 0 else 40 + i for i in range(n)],
                         "split": ["train", "val", "test"] * (n // 3)})


def sk(exp_or_folder, name: str) -> str:
    """The page's session key ``name`` for an experiment (its folder, or the experiment)."""
    folder = getattr(exp_or_folder, "path", exp_or_folder)
    return ui.scoped(runs.Experiment(Path(folder), {}), name)


def _probs(n=12):
    p = np.full((n, 3), 0.1, np.float32)
    for i in range(n):
        p[i, (i + (i % 4 == 0)) % 3] = 0.8  # every 4th image is predicted as the next class
    return p


def test_point_table_and_outcomes():
    images, probs = _images(), _probs()
    t = latent.point_table(images, probs, NAMES, "multiclass")
    assert list(t["label"][:3]) == NAMES and t.loc[0, "prediction"] == "Normal" and t.loc[1, "prediction"] == "Normal"
    assert t.loc[0, "source"] == "csv" and t.loc[1, "source"] == "A"  # empty source falls back to the dataset
    assert list(t["sex"][:3]) == ["Male", "Female", latent.UNKNOWN]
    out = latent.outcomes(images, probs, NAMES, "COVID-19", 0.5)
    # image 0: COVID-19 predicted Normal -> FN; image 3: Normal predicted COVID-19 -> FP; 6: COVID-19 -> TP
    assert out[0] == "FN" and out[3] == "TP" or out[3] == "FP"
    truth = np.array([NAMES[i % 3] == "COVID-19" for i in range(12)])
    pred = probs[:, 0] >= 0.5
    expected = np.where(truth, np.where(pred, "TP", "FN"), np.where(pred, "FP", "TN"))
    assert list(out) == list(expected) and "FN" in out and "TN" in out


def test_base_figure_draws_every_row_once_and_hover_has_probabilities():
    images, probs = _images(), _probs()
    t = latent.point_table(images, probs, NAMES, "multiclass")
    coords = np.arange(24, dtype=np.float32).reshape(12, 2)
    for colour_by in latent.COLOUR_BY:
        values = latent.outcomes(images, probs, NAMES, "Normal", 0.5) if colour_by == "outcome" else None
        fig = latent.base_figure(coords, t, probs, NAMES, colour_by, values)
        rows = np.concatenate([np.asarray(tr.customdata)[:, 0] for tr in fig.data]).astype(int)
        assert sorted(rows) == list(range(12)), colour_by
        assert all(tr.type == "scattergl" for tr in fig.data)
        for tr in fig.data:  # each point's x/y is its row's coordinates
            cd = np.asarray(tr.customdata)
            assert np.allclose(np.asarray(tr.x), coords[cd[:, 0].astype(int), 0])
    fig = latent.base_figure(coords, t, probs, NAMES, "age")
    assert [tr.name for tr in fig.data][-1].startswith("unknown (3)")  # ages NaN for rows 0, 4, 8
    assert "P(Pneumonia) = %{customdata[3]:.3f}" in fig.data[0].hovertemplate
    assert fig.layout.dragmode == "select"


def _fourteen_findings():
    """A 14-finding multi-label table with 30 label combinations (14 single findings, 14 pairs, one triple,
    none), singles common and combinations ever rarer, and its probabilities."""
    from covidviz.data.labels import NIH_FINDINGS

    names = list(NIH_FINDINGS)
    cells = ([(n, 30) for n in names] + [(f"{names[i]}|{names[(i + 1) % 14]}", 2 + i) for i in range(14)]
             + [(f"{names[0]}|{names[2]}|{names[5]}", 3), ("", 40)])
    labels = [c for c, k in cells for _ in range(k)]
    n = len(labels)
    images = pd.DataFrame({"image_id": [f"i{k}" for k in range(n)], "labels": labels, "dataset": "nih", "source": "nih",
                           "sex": "M", "age": 50.0, "split": ["train", "val", "test"] * (n // 3) + ["train"] * (n % 3)})
    probs = np.random.default_rng(0).random((n, 14)).astype(np.float32)
    return names, images, probs, len({c for c, _ in cells})


def test_legend_colours_never_repeat_on_14_findings_with_30_combinations():
    from covidviz.views import palette
    from covidviz.views.style import class_colours

    names, images, probs, n_cells = _fourteen_findings()
    assert n_cells == 30
    t = latent.point_table(images, probs, names, "multilabel")
    coords = np.random.default_rng(1).normal(size=(len(t), 2)).astype(np.float32)
    for colour_by in ("label", "prediction", "source"):
        fig = latent.base_figure(coords, t, probs, names, colour_by, order=names + [latent.NO_FINDING], reserve=1)
        colours = [str(tr.marker.color).lower() for tr in fig.data]
        assert len(colours) == len(set(colours)), (colour_by, colours)
        rows = np.concatenate([np.asarray(tr.customdata)[:, 0] for tr in fig.data]).astype(int)
        assert sorted(rows) == list(range(len(t))), colour_by  # every image drawn once, the rare ones as "other"
    fig = latent.base_figure(coords, t, probs, names, "label", order=names + [latent.NO_FINDING], reserve=1)
    legend = {tr.name.split(" (")[0]: str(tr.marker.color) for tr in fig.data}
    # Each finding keeps its colour of every page; "No finding" its grey; the rarest combinations are one entry.
    assert all(legend[n] == class_colours(names)[n] for n in names) and legend[latent.NO_FINDING] == "#8c8c8c"
    other = [tr for tr in fig.data if tr.name.startswith(palette.OTHER)]
    assert len(other) == 1 and other[0].marker.color == palette.OTHER_COLOUR and len(fig.data) <= 18
    # An external set drawn over it: an outline (open symbol) in a colour the legend does not show yet.
    placed = {"site-b": {"coords": {"tsne": coords[:5]}, "image_id": np.array([f"e{k}" for k in range(5)]),
                         "labels": np.array(["Edema"] * 5), "probs": probs[:5]}}
    ext = latent.external_traces(placed, "tsne", names, "label", used=latent.used_colours(fig))
    assert len(ext) == 1 and ext[0].marker.symbol.endswith("-open")
    assert str(ext[0].marker.color).lower() not in {str(tr.marker.color).lower() for tr in fig.data}


def test_legend_colours_keep_fixed_colours_and_group_the_rest():
    from covidviz.views import palette

    cats = ["A", "B", "unknown"] + [f"c{k}" for k in range(20)]
    colours, others = palette.legend_colours(cats, {"A": "#0072B2", "B": "#0072B2"})
    assert colours["A"] == "#0072B2" and colours["B"] != "#0072B2"  # a fixed colour taken first is not reused
    assert colours["unknown"] == "#BBBBBB" and len(set(colours.values())) == len(colours)
    assert others == cats[len(colours):] and len(colours) + len(others) == len(cats)
    # ``reserve`` leaves the last free colours (never the highlights') for what is drawn over the map.
    kept, _ = palette.legend_colours(cats, reserve=2)
    spare = palette.free_colours(kept.values(), 2)
    assert len(spare) == 2 and not set(spare) & set(kept.values()) and not set(spare) & palette.HIGHLIGHTS


def test_selection_rows_from_plotly_points():
    sel = {"points": [{"curve_number": 1, "point_index": 4, "customdata": [7.0, 0.1, 0.8, 0.1]},
                      {"curve_number": 0, "point_index": 0, "customdata": [2.0, 0.8, 0.1, 0.1]},
                      {"curve_number": 5, "point_index": 0, "customdata": [7.0]},     # ring over row 7 again
                      {"curve_number": 6, "point_index": 0, "customdata": [-1.0]},    # the upload star
                      {"curve_number": 2, "point_index": 3, "customdata": {"0": 9, "1": 0.5}},  # as chromium sends it
                      {"curve_number": 0, "point_index": 1}],                        # no customdata
           "point_indices": [4, 0, 0, 0, 1], "box": [{}], "lasso": []}
    assert list(selection.selection_rows(sel)) == [7, 2, 9]
    assert len(selection.selection_rows(None)) == 0 and len(selection.selection_rows({"points": []})) == 0
    assert selection.selection_signature(sel) != selection.selection_signature(None)


def test_gallery_pages_class_mix_and_csv():
    rows = np.arange(50)[::-1]
    assert selection.page_count(50) == 3 and selection.page_count(0) == 1
    assert list(selection.gallery_page(rows, 1)) == list(range(49, 25, -1))
    assert list(selection.gallery_page(rows, 3)) == [1, 0]
    assert list(selection.gallery_page(rows, 99)) == [1, 0]  # clamped
    images, probs = _images(), _probs()
    t = latent.point_table(images, probs, NAMES, "multiclass")
    sel = np.array([0, 3, 6, 1])
    mix = selection.class_mix({"A": t}, sel, NAMES)
    assert mix.loc["COVID-19", "Labelled"] == 3 and mix.loc["Normal", "Labelled"] == 1
    assert mix.loc["Normal", "A"] == 2 and mix.loc["COVID-19", "Share"] == "75%"
    assert latent.NO_FINDING not in mix.index
    csv = pd.read_csv(io.BytesIO(selection.selection_csv(images, sel, {"a": probs}, NAMES,
                                                       {"a:tsne": np.ones((12, 2))})))
    assert list(csv["row"]) == [0, 3, 6, 1] and list(csv["image_id"]) == ["img0", "img3", "img6", "img1"]
    assert list(csv["a:prediction"]) == ["Normal", "COVID-19", "COVID-19", "Normal"]
    assert csv["a:p::Normal"].iloc[0] == pytest.approx(0.8) and "a:tsne:x" in csv


def test_upload_for_matches_backbone_and_map():
    # The record is already matched to the experiment (ui.upload_for); this picks the backbone's map.
    up = {"name": "x.png", "experiment": "tiny", "backbones": {"a": {"probs": [0.2, 0.8], "coords": {"tsne": [1, 2]},
                                                                     "neighbors": [3, 4], "distances": [0.1, 0.2]}}}
    xy, nbrs, d, rec = latent.upload_for(up, "a", "tsne")
    assert list(xy) == [1, 2] and list(nbrs) == [3, 4] and list(d) == [0.1, 0.2]
    assert latent.upload_for(up, "a", "pca")[0] is None  # not placed on that map, neighbours still known
    assert list(latent.upload_for(up, "a", "pca")[1]) == [3, 4]
    assert latent.upload_for(up, "b", "tsne") is None
    assert latent.upload_for(None, "a", "tsne") is None


# ---------------------------------------------------------------- the page (AppTest, real tiny experiment)

@pytest.fixture
def tiny_root(tiny_experiment, tmp_path, monkeypatch) -> Path:
    """A private copy of the trained + analysed tiny experiment (tests may add an unanalysed one)."""
    root = tmp_path / "runs"
    shutil.copytree(tiny_experiment, root / tiny_experiment.name)
    monkeypatch.setenv(ui.RUNS_ENV, str(root))
    return root


def run_page(**state) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    for k, v in state.items():
        at.session_state[k] = v
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def charts(at: AppTest) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def selectbox(at, label):
    return next(s for s in at.selectbox if s.label == label)


def test_page_controls_maps_and_quality(tiny_root):
    at = run_page()
    exp = runs.read_experiment(next(tiny_root.iterdir()))
    assert at.title[0].value == f"Latent space: {exp.name}"
    assert selectbox(at, "Map").options == ["t-SNE", "PCA"]  # only the methods analysed (no UMAP)
    assert selectbox(at, "Backbone").options == [ui.arch_label(a) for a in exp.backbones]
    specs = charts(at)
    assert len(specs) == 2  # both backbones side by side by default
    n = len(exp.images())
    for spec in specs:
        base = [t for t in spec["data"] if t["type"] == "scattergl"]
        assert sum(_len(t["x"]) for t in base) == n  # every image drawn, none sampled
    q = json.loads((exp.path / runs.BACKBONES / exp.backbones[0] / runs.PROJECTIONS_INFO).read_text())["quality"]
    md = " ".join(m.value for m in at.markdown)
    assert f"[Trustworthiness](/glossary#trustworthiness): **{q['tsne']['trustworthiness']:.2f}**" in md
    assert any("kNN label agreement" in c.value for c in at.caption)
    # Colour by outcome: the class picker and the thresholds appear, traces are TP/FN/FP/TN.
    at = selectbox(at, "Colour by").set_value("outcome").run()
    assert not at.exception
    assert selectbox(at, "Class").options == list(exp.labels.names)
    names = [t["name"].split(" (")[0] for t in charts(at)[0]["data"]]
    assert set(names) <= set(latent.OUTCOMES) and names
    assert any("Thresholds:" in c.value for c in at.caption)
    for colour in ("confidence", "split", "source", "sex", "age", "prediction"):
        at = selectbox(at, "Colour by").set_value(colour).run()
        assert not at.exception, colour
    at = selectbox(at, "Map").set_value("pca").run()
    assert "PCA" in charts(at)[0]["layout"]["title"]["text"]
    at.toggle[0].set_value(False).run()
    assert len(charts(at)) == 1


def _len(v) -> int:
    if isinstance(v, dict):  # plotly's typed-array encoding {"dtype", "bdata", "shape"}
        return int(str(v.get("shape", "0")).split(",")[0]) if "shape" in v else len(np.frombuffer(
            __import__("base64").b64decode(v["bdata"]), dtype=np.dtype(v["dtype"])))
    return len(v)


def test_selection_makes_gallery_class_mix_csv_and_rings_in_both_maps(tiny_root):
    at = run_page()
    spec = charts(at)[0]
    # The payload a box selection sends: the points' customdata of the page's own figure.
    trace = spec["data"][0]
    cd = _decode(trace["customdata"])
    sel = {"points": [{"curve_number": 0, "point_index": i, "customdata": list(map(float, cd[i]))}
                      for i in range(min(30, len(cd)))]}
    rows = selection.selection_rows(sel)
    assert len(rows) == min(30, len(cd))
    exp = runs.read_experiment(next(tiny_root.iterdir()))
    at = run_page(**{sk(exp, "latent_selection"): [int(r) for r in rows]})
    assert any(f"{len(rows)} images selected" in m.value for m in at.markdown)
    # The gallery page is ONE html block of numbered pictures with wrapping captions (file name, labels).
    (block,) = [h.value for h in at.get("html") if "latent-gallery" in h.value]
    shown = min(len(rows), selection.GALLERY_PAGE)
    assert block.count('class="latent-thumb"') == shown and block.count("data:image/png;base64,") == shown
    captions = [c.split(">")[-1] for c in block.split("</figcaption>")[:-1]]
    assert len(captions) == shown and all(" · true: " in c and " · pred: " in c for c in captions)
    names = exp.images()["image_id"].to_numpy()
    assert f"1. {selection.file_name(names[rows[0]])} · true: " in block
    picker = at.selectbox(key=sk(exp, "latent_open_pick"))
    assert picker.options[:2] == [f"1. {selection.file_name(names[rows[0]])}", f"2. {selection.file_name(names[rows[1]])}"]
    # One ring trace per map, over the same rows in both (identity across backbones): the page opened on
    # a stored selection draws both maps anew, so both ring it.
    for spec in charts(at):
        ring = next(t for t in spec["data"] if t["name"].startswith("selected"))
        assert sorted(_decode(ring["customdata"])[:, 0].astype(int)) == sorted(rows)
    mix = next(h.value for h in at.get("html") if 'class="latent-mix"' in h.value)
    headers = re.findall(r"<th[^>]*>([^<]*)</th>", mix)
    assert headers[:3] == ["Class", "Labelled", "Share"] and headers[3:] == [ui.arch_label(a) for a in exp.backbones]
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", mix)
    assert sum(int(v) for v in cells[1::len(headers)]) == len(rows)
    assert len(at.get("download_button")) == 1
    # Pages: 30 images -> 2 pages of 24.
    if len(rows) > selection.GALLERY_PAGE:
        at.selectbox(key=sk(exp, "latent_gallery_page")).set_value(2).run()
        assert any("Images 25–30" in c.value for c in at.caption)
        assert "25. " in next(h.value for h in at.get("html") if "latent-gallery" in h.value)


def _decode(v) -> np.ndarray:
    if isinstance(v, dict):
        import base64

        arr = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        shape = tuple(int(s) for s in str(v.get("shape", len(arr))).split(","))
        return arr.reshape(shape)
    return np.asarray(v, dtype=np.float64)


def test_opening_an_image_shows_it_with_probabilities_and_heatmaps(tiny_root):
    exp = runs.read_experiment(next(tiny_root.iterdir()))
    at = run_page(**{sk(exp, "latent_selection"): [0, 1, 2]})
    at.selectbox(key=sk(exp, "latent_open_pick")).set_value(1).run()
    assert not at.exception
    image_id = exp.images().iloc[1]["image_id"]
    assert any(h.value == f"Image {image_id}" for h in at.header)
    probs = next(h.value for h in at.get("html") if 'class="latent-probs"' in h.value)
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", probs)
    width = 1 + len(exp.backbones)  # class, then a probability per backbone
    assert cells[::width] == list(exp.labels.names)
    assert np.allclose([float(v) for v in cells[1::width]], exp.probabilities(exp.backbones[0])[1], atol=1e-3)
    # Original + one CAM per backbone (the phantoms are on disk, so the heatmaps are computed).
    captions = [c for i in at.get("image") for c in i.captions]
    assert any(c.startswith("Original") for c in captions), (captions, [c.value for c in at.caption])
    assert sum("CAM for" in c for c in captions) == len(exp.backbones)
    # The opened image is marked on the map (by the follow-up run that redraws the maps).
    assert any(t["name"] == "opened image" for t in charts(at)[0]["data"])
    at.button(key=sk(exp, "latent_close")).click().run()
    assert not any(h.value.startswith("Image ") for h in at.header)
    assert at.selectbox(key=sk(exp, "latent_open_pick")).value is None  # the picker is reset with it


def test_upload_is_a_star_with_its_neighbours_ringed(tiny_root):
    exp = runs.read_experiment(next(tiny_root.iterdir()))
    a = exp.backbones[0]
    upload = {"name": "my-xray.png", "experiment": exp.name, "backbones": {
        a: {"probs": [0.3, 0.7], "coords": {"tsne": [1.5, -2.0], "pca": [0.0, 0.0]}, "neighbors": [4, 5, 6],
            "distances": [0.1, 0.2, 0.3], "som_node": 3, "som_qe": 0.5, "som_qe_pct": 40.0, "ood": True}}}
    at = run_page(upload=upload)
    assert any("my-xray.png" in i.value and "outside the training distribution" in i.value for i in at.info)
    data = charts(at)[0]["data"]
    star = next(t for t in data if t["name"] == "your upload")
    assert _decode(star["x"])[0] == pytest.approx(1.5) and star["marker"]["symbol"] == "star"
    ring = next(t for t in data if t["name"].startswith("upload's nearest neighbours"))
    assert sorted(_decode(ring["customdata"])[:, 0].astype(int)) == [4, 5, 6]
    # Not for another experiment; and the neighbours can be selected in one click.
    assert not any(t["name"] == "your upload" for t in charts(at)[1]["data"])
    at.button(key=sk(exp, "latent_select_neighbours")).click().run()
    assert any("3 images selected" in m.value for m in at.markdown)
    at2 = run_page(upload={**upload, "experiment": "some-other-experiment"})
    assert not any(t["name"] == "your upload" for spec in charts(at2) for t in spec["data"])


def test_unanalysed_experiment_says_what_to_run(tmp_path, monkeypatch):
    from tests.app_fixtures import make_fake_experiment

    root = tmp_path / "runs"
    make_fake_experiment(root, "raw", n=30)
    monkeypatch.setenv(ui.RUNS_ENV, str(root))
    at = run_page()
    assert any("not been analysed" in w.value for w in at.warning)
    assert any(c.value == f"python train.py analyze {root / 'raw'}" for c in at.code)
    assert not at.get("plotly_chart")


def test_a_selection_does_not_survive_a_switch_to_a_smaller_experiment(tmp_path, monkeypatch):
    """Select 50 images of a 300-image experiment, switch to a 40-image one: before keys were scoped, the
    selection was kept and ``overlay_traces`` indexed past the small map (IndexError in ``coords[rows]``)."""
    from bench.latent import build_experiment

    root = tmp_path / "runs"
    big, small = build_experiment(root, n=300, name="big"), build_experiment(root, n=40, name="small")
    monkeypatch.setenv(ui.RUNS_ENV, str(root))
    neighbours = list(range(250, 300))  # select through the page itself: the upload's neighbours button
    upload = {"name": "u.png", "experiment": "big",
              "backbones": {"densenet121": {"coords": {"tsne": [0.0, 0.0]}, "neighbors": neighbours}}}
    at = run_page(experiment="big", upload=upload)
    at.button(key=sk(big, "latent_select_neighbours")).click().run()
    assert not at.exception and any("50 images selected" in m.value for m in at.markdown)
    at.selectbox(key=sk(big, "latent_colour")).set_value("split").run()   # a widget value on "big"
    at.sidebar.selectbox(key=ui.EXPERIMENT_KEY).set_value("small").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Latent space: small"
    assert not any("images selected" in m.value for m in at.markdown)            # selection empty
    assert any("latent-gallery-empty" in h.value for h in at.get("html"))
    assert at.selectbox(key=sk(small, "latent_colour")).value == "label"          # no widget value carried over
    for spec in charts(at):
        assert not any(t["name"].startswith("selected") for t in spec["data"])
        assert sum(_len(t["x"]) for t in spec["data"]) == 40
    # Back on "big": its own selection is still there (kept per experiment, never shared); its widgets start
    # from their defaults (Streamlit drops the values of widgets a run did not draw).
    at.sidebar.selectbox(key=ui.EXPERIMENT_KEY).set_value("big").run()
    assert not at.exception and any("50 images selected" in m.value for m in at.markdown)


def test_external_set_is_placed_on_the_maps_and_can_be_hidden(tiny_experiment, tmp_path_factory, monkeypatch):
    from tests.external_fixtures import SITE, tiny_with_external

    folder = tiny_with_external(tiny_experiment, tmp_path_factory)
    monkeypatch.setenv(ui.RUNS_ENV, str(folder.parent))
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]

    def external_traces():
        specs = [json.loads(el.proto.spec) for el in at.get("plotly_chart")]
        return [[t for t in s["data"] if t["name"].startswith(f"External: {SITE}")] for s in specs]

    found = external_traces()
    assert found and all(len(t) == 1 and _len(t[0]["x"]) == 45 for t in found)  # every map, every image
    assert all(np.all(_decode(t[0]["customdata"])[:, 0] == -1) for t in found)  # never a selectable row
    at.selectbox(key=sk(folder, "latent_colour")).set_value("set").run()
    names = [t["name"] for t in json.loads(at.get("plotly_chart")[0].proto.spec)["data"]]
    assert any(n.startswith("Train (") for n in names) and any(n.startswith(f"External: {SITE}") for n in names)
    at.multiselect(key=sk(folder, "latent_sites")).set_value([]).run()
    assert not at.exception and all(not t for t in external_traces())
