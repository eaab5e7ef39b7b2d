"""SOM page: hexagon geometry (views.som_figure), layer values and class relations against hand
computations, and the page itself through AppTest (controls, node selection -> gallery, the diagnose page's upload).

Uses the trained + analysed ``tiny_experiment`` (multi-class) and a fake multi-label experiment whose
SOM is fitted here through the analysis step's own writer (``experiment._som``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from covidviz import runs, ui
from covidviz.analysis.experiment import _som as write_som
from covidviz.data.labels import MULTILABEL
from covidviz.views import formats, som_figure
from covidviz.views import som as som_view
from tests.app_fixtures import make_fake_experiment

REPO = Path(__file__).resolve().parents[1]
PAGE = str(REPO / "app_pages" / "som.py")
TIMEOUT = 60


pytestmark = pytest.mark.usefixtures("app_like_server")


@pytest.fixture
def tiny(tiny_experiment, monkeypatch):
    monkeypatch.setenv(ui.RUNS_ENV, str(tiny_experiment.parent))
    return runs.read_experiment(tiny_experiment)


@pytest.fixture(scope="module")
def multilabel_root(tmp_path_factory) -> Path:
    """A fake multi-label experiment (one backbone) with a SOM fitted on clustered features."""
    root = tmp_path_factory.mktemp("ml-runs")
    folder = make_fake_experiment(root, "ml", n=120, multilabel=True)
    exp = runs.read_experiment(folder)
    images, labels = exp.images(), exp.labels
    onehot = labels.onehot(images["labels"])
    rng = np.random.default_rng(1)
    feats = onehot @ rng.normal(size=(onehot.shape[1], 8)) * 3 + rng.normal(size=(len(images), 8))
    np.save(exp.path / runs.BACKBONES / "densenet121" / runs.FEATURES, feats.astype(np.float16))
    write_som(exp, "densenet121", onehot, exp.probabilities("densenet121"), (images["split"] == "train").to_numpy(), 0)
    return root


def sk(exp_or_folder, name: str) -> str:
    """The page's widget key ``name`` for an experiment (every key is scoped to its experiment)."""
    folder = getattr(exp_or_folder, "path", exp_or_folder)
    return ui.scoped(runs.Experiment(Path(folder), {}), name)


def run_page(session: dict | None = None) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    for k, v in (session or {}).items():
        at.session_state[k] = v
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def figures(at: AppTest) -> list[dict]:
    """Plotly figure specs on the page, in order."""
    return [json.loads(el.proto.spec) for el in at.main.get("plotly_chart")]


def som_arrays(exp, arch):
    return exp.load_arrays(runs.SOM, arch), exp.load_json(runs.SOM_INFO, arch)


# ---------------------------------------------------------------- geometry

def test_hexagons_are_regular_and_neighbours_share_an_edge(tiny):
    a, _ = som_arrays(tiny, tiny.backbones[0])
    xy = a["hex_xy"].astype(np.float64)
    v = som_figure.hexagon_vertices(xy)
    # Regular: every vertex at R from its centre, every side of length R.
    assert np.allclose(np.linalg.norm(v - xy[:, None, :], axis=2), som_figure.R, atol=1e-9)
    sides = np.linalg.norm(v - np.roll(v, -1, axis=1), axis=2)
    assert np.allclose(sides, som_figure.R, atol=1e-9)
    nbrs = som_figure.neighbours(xy)
    interior = [len(n) for n in nbrs]
    assert max(interior) == 6 and min(interior) >= 2
    for i, ns in enumerate(nbrs):
        for j in ns:
            shared = sum(np.min(np.linalg.norm(v[j] - p, axis=1)) < 1e-6 for p in v[i])
            assert shared == 2, (i, j, shared)  # one common edge, no overlap, no gap
    # Non-neighbours never touch: their centres are >= sqrt(3) apart (the next ring of a hexagonal grid).
    d = np.linalg.norm(xy[:, None] - xy[None], axis=2)
    far = d > 1 + 1e-6
    assert d[far].min() == pytest.approx(np.sqrt(3), abs=1e-5)


def test_polygon_path_closes_each_hexagon_and_separates_with_none():
    v = som_figure.hexagon_vertices(np.array([[0.0, 0.0], [1.0, 0.0]]))
    x, y = som_figure.polygon_path(v)
    assert len(x) == 16 and x[7] is None and x[15] is None
    assert (x[0], y[0]) == (x[6], y[6]) and (x[8], y[8]) == (x[14], y[14])


# ---------------------------------------------------------------- layers vs hand computations

def _nd(exp, arch, splits=None):
    a, _ = som_arrays(exp, arch)
    return a, som_view.node_data(exp.images(), exp.labels, exp.probabilities(arch), a["node"], len(a["hex_xy"]), splits)


def test_layers_match_stored_som_and_hand_computation(tiny):
    arch = tiny.backbones[0]
    a, nd = _nd(tiny, arch, ["train"])
    assert np.array_equal(nd.hits(), a["hits"])
    assert np.array_equal(nd.counts().astype(int), a["class_counts"])
    a, nd = _nd(tiny, arch)
    assert np.array_equal(nd.hits(), a["hits_all"])
    mp = som_view.layer_values(nd, "mean_prob", 1)["values"]
    assert np.allclose(mp, a["mean_probs"][:, 1], equal_nan=True)
    images, probs, node = tiny.images(), tiny.probabilities(arch), a["node"]
    names = list(tiny.labels.names)
    label = np.array([names.index(c) for c in images["labels"]])
    dom = som_view.layer_values(nd, "dominant")
    dens = som_view.layer_values(nd, "density", 2)["values"]
    err = som_view.layer_values(nd, "error")["values"]
    for n in range(len(a["hex_xy"])):
        on = np.flatnonzero(node == n)
        if not len(on):
            assert dom["dominant"][n] == -1 and np.isnan(err[n]) and np.isnan(dens[n])
            continue
        counts = np.bincount(label[on], minlength=len(names))
        assert dom["dominant"][n] == counts.argmax()
        assert dom["purity"][n] == pytest.approx(counts.max() / len(on))
        assert dens[n] == pytest.approx(100 * np.sum(label[on] == 2) / max(np.sum(label == 2), 1))
        assert err[n] == pytest.approx(np.mean(probs[on].argmax(1) != label[on]))
    assert np.nansum(dens) == pytest.approx(100.0)


def test_multilabel_error_layer_uses_the_chosen_class_and_its_threshold(multilabel_root):
    exp = runs.read_experiment(multilabel_root / "ml")
    a, nd = _nd(exp, "densenet121")
    assert nd.classes[-1] == som_view.NO_FINDING and nd.labels.task == MULTILABEL
    y = exp.labels.onehot(exp.images()["labels"])
    p = exp.probabilities("densenet121")
    err = som_view.layer_values(nd, "error", 1, thresholds={"Pneumonia": 0.3})["values"]
    for n in np.unique(a["node"]):
        on = a["node"] == n
        assert err[n] == pytest.approx(np.mean((p[on, 1] >= 0.3) != (y[on, 1] > 0)))
    with pytest.raises(ValueError):
        som_view.layer_values(nd, "error", len(nd.classes) - 1)  # "No finding" has no model output


def test_class_relations_on_a_known_count_matrix():
    # nodes x classes: A and B share nodes 0-1 in equal proportions, C lives alone on node 2.
    counts = np.array([[2, 4, 0], [1, 2, 0], [0, 0, 5], [0, 0, 0]])
    sim = som_view.class_cooccurrence(counts)
    assert sim[0, 1] == pytest.approx(1.0) and sim[0, 2] == pytest.approx(0.0)
    counts2 = np.array([[3, 1], [1, 3]])
    assert som_view.class_cooccurrence(counts2)[0, 1] == pytest.approx(6 / 10)
    share = som_view.share_on_dominated(np.array([[3, 1, 0], [1, 3, 0], [0, 2, 4]]))
    # Class 1: 1 image on node 0 (dominated by 0), 3 on node 1 (by 1), 2 on node 2 (by 2).
    assert np.allclose(share[1], [1 / 6, 3 / 6, 2 / 6])
    assert np.allclose(share.sum(axis=1), 1)
    assert som_view.closest_pairs(sim, ["A", "B", "C"], top=1) == [("A", "B", pytest.approx(1.0))]


def test_node_from_selection_reads_only_the_centres_trace():
    event = {"selection": {"points": [{"curve_number": 3, "point_index": 1, "customdata": 9},
                                      {"curve_number": 7, "point_index": 12, "customdata": 12}]}}
    assert som_figure.node_from_selection(event, 7) == 12
    assert som_figure.node_from_selection(event, 5) is None
    assert som_figure.node_from_selection({"selection": {"points": []}}, 7) is None
    assert som_figure.node_from_selection(None, 7) is None


def test_prototype_mosaic_puts_each_prototype_at_its_hexagon():
    import base64
    import io

    from PIL import Image

    xy = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3) / 2]])
    thumbs = np.stack([np.full((64, 64), v, np.uint8) for v in (10, 120, 250)])
    uri = som_figure.prototype_mosaic(xy, thumbs, np.array([2, 0, 1]), px_per_unit=40)
    img = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))
    x0, _, _, y1 = som_figure.map_extent(xy)
    for (cx, cy), want in zip(xy, (250, 10, 120)):
        px = img[int(round((y1 - cy) * 40)), int(round((cx - x0) * 40))]
        assert px[3] == 255 and px[0] == want
    assert img[0, 0, 3] == 0  # outside every hexagon: transparent


# ---------------------------------------------------------------- the page (AppTest)

def test_page_shows_both_maps_with_qe_te_and_every_layer_renders(tiny):
    at = run_page()
    assert at.title[0].value == f"Self-organizing map: {tiny.name}"
    qe = [m.value for m in at.metric if m.label == "QE"]
    te = [m.value for m in at.metric if m.label == "TE"]
    infos = [som_arrays(tiny, arch)[1] for arch in tiny.backbones]
    assert qe == [f"{i['quantization_error']:.3g}" for i in infos]
    assert te == [f"{100 * i['topographic_error']:.1f} %" for i in infos]
    assert any("How to read" in c.value for c in at.caption)
    for arch, fig in zip(tiny.backbones, figures(at)):
        centres = next(t for t in fig["data"] if t.get("name") == "nodes")
        assert len(centres["x"]) == len(som_arrays(tiny, arch)[0]["hex_xy"])
        assert centres["marker"]["showscale"] is True  # U-matrix colour bar
    assert at.selectbox(key=sk(tiny, "som_class")).disabled
    for layer in som_view.LAYERS:
        at.selectbox(key=sk(tiny, "som_layer")).select(layer).run()
        assert not at.exception, (layer, [e.value for e in at.exception])
        assert at.selectbox(key=sk(tiny, "som_class")).disabled == (layer not in som_view.CLASS_LAYERS)
    at.selectbox(key=sk(tiny, "som_layer")).select("dominant").run()
    legend = {t["name"] for t in figures(at)[0]["data"] if t.get("showlegend")}
    present = set(tiny.images()["labels"])
    assert present <= legend
    at.toggle(key=sk(tiny, "som_prototypes")).set_value(True).run()
    assert not at.exception
    images = figures(at)[0]["layout"]["images"]
    assert len(images) == 1 and images[0]["source"].startswith("data:image/png;base64,")


def test_selecting_a_node_shows_exactly_its_images(tiny):
    arch = tiny.backbones[1]
    a, _ = som_arrays(tiny, arch)
    node = int(np.bincount(a["node"]).argmax())
    from covidviz.views.latent_selection import file_name
    from covidviz.views.style import SPLIT_LABELS

    split = tiny.images()["split"].to_numpy()
    ids = np.array([f"{file_name(i)} ({SPLIT_LABELS[s].lower()})" for i, s in zip(tiny.images()["image_id"], split)])
    at = run_page()
    at.number_input(key=sk(tiny, f"som_node_{arch}")).set_value(node).run()
    assert not at.exception
    table = next(d.value for d in at.dataframe if "Image" in d.value.columns)
    assert sorted(table["Image"]) == sorted(ids[a["node"] == node])
    assert any(m.value == f"#### Node {node}" for m in at.markdown)
    grid = tuple(som_arrays(tiny, arch)[1]["grid"])
    assert any(formats.som_position(node, grid) in c.value for c in at.caption)  # where it is, in map terms
    stats = next(t.value for t in at.table if "Images" in t.value.columns)
    assert int(stats["Images"].sum()) == int((a["node"] == node).sum())
    # The selected hexagon is outlined on that backbone's map, exactly around the node's centre.
    fig = figures(at)[1]
    path = fig["layout"]["shapes"][0]["path"]
    pts = np.array([[float(c) for c in p.split(",")] for p in path[2:-2].split(" L ")])
    assert np.allclose(pts, som_figure.hexagon_vertices(a["hex_xy"][[node]].astype(float))[0], atol=1e-3)
    # Restricting to the test split keeps only the node's test images.
    at.selectbox(key=sk(tiny, "som_split")).select("Test").run()
    tables = [d.value for d in at.dataframe if "Image" in d.value.columns]
    want = sorted(ids[(a["node"] == node) & (split == "test")])
    if want:
        assert sorted(tables[0]["Image"]) == want
    else:
        assert not tables


def test_upload_is_highlighted_with_its_qe(tiny):
    archs = tiny.backbones
    up = {"name": "chest.png", "experiment": tiny.name, "backbones": {
        arch: {"probs": [0.2, 0.8], "coords": {}, "neighbors": [], "distances": [], "som_node": 2 + k,
               "som_qe": 1.25, "som_qe_pct": 97.0, "ood": k == 1} for k, arch in enumerate(archs)}}
    at = run_page({"upload": up})
    assert any("chest.png" in i.value and "97 %" in i.value for i in at.info)
    assert any("unlike the training images" in w.value for w in at.warning)  # the second backbone is OOD
    maps = [f for f in figures(at) if any(t.get("name") == "nodes" for t in f["data"])]
    assert len(maps) == 2 and all(any(t.get("name") == "your upload" for t in f["data"]) for f in maps)
    at.button(key=sk(tiny, f"som_goto_upload_{archs[0]}")).click().run()
    assert at.number_input(key=sk(tiny, f"som_node_{archs[0]}")).value == 2
    # The diagnose page stores None where a backbone has no SOM: nothing to star, no crash.
    empty = {arch: {**rec, "som_node": None, "som_qe": None, "som_qe_pct": None, "ood": False}
             for arch, rec in up["backbones"].items()}
    at = run_page({"upload": {**up, "backbones": empty}})
    assert not any("chest.png" in i.value for i in at.info)
    assert not any(t.get("name") == "your upload" for f in figures(at) for t in f["data"])
    # An upload scored with another experiment is not drawn here.
    at = run_page({"upload": {**up, "experiment": "some-other-run"}})
    assert not any("chest.png" in i.value for i in at.info)
    assert any("some-other-run" in c.value for c in at.caption)


def test_class_relations_section_matches_cosine_of_counts(tiny):
    at = run_page()
    arch = tiny.backbones[0]
    _, nd = _nd(tiny, arch)
    sim = som_view.class_cooccurrence(nd.counts())
    heat = next(f for f in figures(at) if f["data"][0]["type"] == "heatmap")
    z = np.array(heat["data"][0]["z"], dtype=float)
    off = ~np.eye(len(z), dtype=bool)
    assert np.allclose(z[off], sim[off], equal_nan=True)
    a, b, s = som_view.closest_pairs(sim, nd.classes, 1)[0]
    assert any(f"**{a}** & **{b}** ({s:.2f})" in m.value for m in at.markdown)


def test_multilabel_page_error_layer_and_class_choice(multilabel_root, monkeypatch):
    monkeypatch.setenv(ui.RUNS_ENV, str(multilabel_root))
    ml = multilabel_root / "ml"
    at = run_page()
    at.selectbox(key=sk(ml, "som_layer")).select("error").run()
    assert not at.selectbox(key=sk(ml, "som_class")).disabled  # multi-label: error is per class
    assert som_view.NO_FINDING not in at.selectbox(key=sk(ml, "som_class")).options
    at.selectbox(key=sk(ml, "som_layer")).select("density").run()
    assert som_view.NO_FINDING in at.selectbox(key=sk(ml, "som_class")).options
    at.selectbox(key=sk(ml, "som_class")).select(som_view.NO_FINDING).run()
    assert not at.exception


def test_experiment_without_som_says_how_to_analyse(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    make_fake_experiment(root, "fresh")
    monkeypatch.setenv(ui.RUNS_ENV, str(root))
    at = run_page()
    assert any("no self-organizing map yet" in w.value for w in at.warning)
    assert any(c.value.startswith("python train.py analyze") and c.value.endswith("fresh") for c in at.code)
    assert not at.main.get("plotly_chart")


def test_a_node_chosen_on_one_experiment_does_not_reach_a_smaller_one(tmp_path, monkeypatch):
    """Choose node 50 on a 56-node map, switch to an experiment whose map has 9 nodes: no widget value
    (node, layer) carries over, and nothing fails (a kept node 50 would exceed the node input's maximum)."""
    from tests.test_browser_som import make_big_experiment

    root = tmp_path / "runs"
    big = make_big_experiment(root, "big", n=300, archs=("densenet121",), grid=(8, 7), iterations=600)
    small = make_big_experiment(root, "small", n=60, archs=("densenet121",), grid=(3, 3), iterations=200)
    monkeypatch.setenv(ui.RUNS_ENV, str(root))
    at = run_page({ui.EXPERIMENT_KEY: "big"})
    at.number_input(key=sk(big, "som_node_densenet121")).set_value(50).run()
    at.selectbox(key=sk(big, "som_layer")).select("hits").run()
    assert any(m.value == "#### Node 50" for m in at.markdown)
    at.sidebar.selectbox(key=ui.EXPERIMENT_KEY).set_value("small").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Self-organizing map: small"
    assert at.number_input(key=sk(small, "som_node_densenet121")).value is None
    assert at.selectbox(key=sk(small, "som_layer")).value == "umatrix"
    assert not any(m.value.startswith("#### Node") for m in at.markdown)
    at.sidebar.selectbox(key=ui.EXPERIMENT_KEY).set_value("big").run()
    assert not at.exception and at.title[0].value == "Self-organizing map: big"


def test_external_set_sits_on_its_som_nodes_and_the_set_layer(tiny_experiment, tmp_path_factory, monkeypatch):
    from tests.external_fixtures import SITE, tiny_with_external

    folder = tiny_with_external(tiny_experiment, tmp_path_factory)
    monkeypatch.setenv(ui.RUNS_ENV, str(folder.parent))
    at = run_page()

    def maps_and_sites():
        maps = [f for f in figures(at) if any(t.get("name") == "nodes" for t in f["data"])]
        return maps, [[t for t in f["data"] if str(t.get("name")).startswith(f"External: {SITE}")] for f in maps]

    # Off by default: on most hexagons they would hide the map; chosen, they are outlines, not fills.
    maps, ext = maps_and_sites()
    assert maps and all(not t for t in ext) and at.multiselect(key=sk(folder, "som_sites")).value == []
    at.multiselect(key=sk(folder, "som_sites")).set_value([SITE]).run()
    maps, ext = maps_and_sites()
    assert maps and all(len(t) == 1 and t[0]["name"] == f"External: {SITE} (45)" for t in ext)
    assert all(t[0]["marker"]["symbol"] == "diamond-open" for t in ext)
    legend_colours = [str(t["marker"].get("color")).lower() for t in maps[0]["data"] if t.get("showlegend")
                      and isinstance((t.get("marker") or {}).get("color"), str)]
    assert len(legend_colours) == len(set(legend_colours))  # the site's colour is none of the layer's
    at.selectbox(key=sk(folder, "som_layer")).select("set").run()
    assert not at.exception, [e.value for e in at.exception]
    legend = {t["name"] for t in figures(at)[0]["data"] if t.get("showlegend")}
    assert {"Train", f"External: {SITE}"} <= legend
    at.multiselect(key=sk(folder, "som_sites")).set_value([]).run()
    legend = {t["name"] for t in figures(at)[0]["data"] if t.get("showlegend")}
    assert not at.exception and f"External: {SITE}" not in legend
