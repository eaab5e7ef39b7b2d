"""Navigation that never misleads, and no cold start (issues 24.7 and 25.4).

- An unknown ``?exp=`` (or an experiment deleted while open) is named, with what is shown instead.
- Diagnose and Batch load and warm up the experiment's models as they open, so the first upload is as
  fast as the next (``Predictor.warm_up``, ``ui.diagnose_predictor``; timed by bench/cold_start.py).
- The test-image picker opens on a typical test image that the out-of-distribution verdict passes; the
  demo opens on it; a picked test image is named as such on the other pages, never "your upload".
- An image opened from the Latent gallery is drawn under the gallery's picker, where the user is looking;
  the neighbours button counts what the notice rings.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from covidviz import inference, runs, ui
from covidviz.ui.navigation import fallback_text
from covidviz.views import example_image, image_name
from covidviz.views import latent_selection as selection
from tests.app_fixtures import make_fake_experiment
from tests.test_latent_page import run_page as run_latent_page

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "app.py")
DIAGNOSE = str(REPO / "app_pages" / "diagnose.py")
TIMEOUT = 120

pytestmark = pytest.mark.usefixtures("app_like_server")


def key(folder: str, name: str) -> str:
    return f"{folder}::{name}"


def flat(node) -> list:
    """Every element of an AppTest tree in page order."""
    children = getattr(node, "children", None)
    if children is None:
        return [node]
    return [el for k in sorted(children) for el in flat(children[k])]


def texts(at: AppTest) -> list[tuple[str, str]]:
    """(type, text) of the page's elements, in order (headers, markdown, buttons' labels...)."""
    out = []
    for el in flat(at.main):
        value = getattr(el, "value", None)
        label = getattr(getattr(el, "proto", None), "label", None)
        out.append((el.type, value if isinstance(value, str) else (label or "")))
    return out


# ---------------------------------------------------------------- pure helpers

def test_fallback_text_names_the_missing_experiment_and_what_is_shown():
    t = fallback_text("covid3-old", "demo", "/runs", from_address=True)
    assert "No experiment named **covid3-old** in `/runs`" in t and "showing **demo** instead" in t
    assert fallback_text("x", None, "/runs", True).endswith("pick one in the sidebar.")
    assert fallback_text("x", None, "/runs", True, others=False).endswith("asks for it).")
    assert "is no longer in `/runs`; showing **b** instead" in fallback_text("a", "b", "/runs", from_address=False)


def test_image_names_say_what_the_image_is():
    test = {"name": image_name.record_name(image_name.TEST, "synthetic:0042"), "source": image_name.TEST}
    assert test["name"] == "test image synthetic:0042"
    assert image_name.short_label(test) == "test image synthetic:0042"
    assert image_name.phrase(test, start=True) == "The test image **synthetic:0042**"
    ext = {"name": image_name.record_name(image_name.EXTERNAL, "a.png", "siteB"), "source": image_name.EXTERNAL}
    assert image_name.phrase(ext) == "the image **a.png** of the external set siteB"
    up = {"name": "chest.png", "source": image_name.UPLOAD}
    assert image_name.short_label(up) == "your upload" and image_name.phrase(up) == "**chest.png**"
    assert image_name.source_of({"name": "test image 7"}) == image_name.TEST  # a record from before ``source``
    assert image_name.phrase(None) == "**your upload**"
    assert [image_name.kind_label(r) for r in (test, ext, up, None)] == [
        "the test image", "the external image", "your upload", "your upload"]


def test_neighbours_button_counts_what_the_notice_rings():
    record = {"backbones": {"densenet121": {"neighbors": list(range(10))},
                            "resnet50": {"neighbors": list(range(5, 15))}}}
    counts = selection.neighbour_counts(record, ["densenet121", "resnet50"])
    assert counts == [10, 10]
    assert selection.neighbours_button(counts, 15) == "Select the ringed neighbours: 10 + 10, 15 different images"
    assert selection.neighbours_button([10, 10], 20) == "Select the ringed neighbours: 10 + 10 = 20 images"
    assert selection.neighbours_button(selection.neighbour_counts(record, ["resnet50"]), 10) == \
        "Select the 10 ringed neighbours"
    assert selection.opened_note(selection.GALLERY, 3) == "Opened from the gallery (number 3 of the selection)."
    assert "map" in selection.opened_note(selection.MAP)


def test_example_row_is_the_first_typical_offered_film_that_passes_the_gate():
    read = []

    def passes(row):
        read.append(row)
        return {4: False, 9: None}.get(row, True)

    assert example_image.example_row([4, 2, 9, 7], [9, 7, 4], passes) == 9  # 4 fails the gate; 9 unreadable: kept
    assert read == [4, 9]
    assert example_image.example_row([1, 2], [3], passes) is None
    assert example_image.example_row(range(100), range(100), lambda r: False) is None
    assert len([r for r in read if r not in (4, 9)]) == 0  # no film read for rows not offered


# ---------------------------------------------------------------- an unknown or deleted experiment (app.py)

def _app(root: Path, monkeypatch, exp: str | None = None) -> AppTest:
    monkeypatch.setenv(ui.RUNS_ENV, str(root))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    if exp is not None:
        at.query_params["exp"] = exp
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _fallback(at: AppTest) -> list[str]:
    return [w.value for w in at.warning if "No experiment named" in w.value or "no longer in" in w.value]


def test_an_unknown_address_names_the_missing_experiment_and_what_is_shown(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    make_fake_experiment(root, "demo", completed="2026-11-20T09:00:00")
    make_fake_experiment(root, "covid3", completed="2026-11-25T19:00:00")
    at = _app(root, monkeypatch, "covid3-deleted")
    assert at.title[0].value == "Overview: demo"
    [note] = _fallback(at)
    assert "**covid3-deleted**" in note and "showing **demo** instead" in note and str(root) in note
    at.run()  # still said on the next run (the address has been rewritten by then)
    assert len(_fallback(at)) == 1
    at.sidebar.selectbox[0].select("covid3").run()  # the user picks one: the notice has done its job
    assert at.title[0].value == "Overview: covid3" and not _fallback(at)
    assert not _fallback(_app(root, monkeypatch, "covid3"))  # a known name: nothing to say


def test_an_unknown_address_without_a_default_asks_to_pick(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    make_fake_experiment(root, "older", completed="2026-11-20T09:00:00")
    make_fake_experiment(root, "newer", completed="2026-11-25T19:00:00")
    at = _app(root, monkeypatch, "no-such-experiment")
    assert at.sidebar.selectbox[0].value is None
    [note] = _fallback(at)
    assert "**no-such-experiment**" in note and note.endswith("pick one in the sidebar.")


def test_an_experiment_deleted_while_open_is_named(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    make_fake_experiment(root, "older", completed="2026-11-20T09:00:00")
    make_fake_experiment(root, "newer", completed="2026-11-25T19:00:00")
    at = _app(root, monkeypatch)
    at.sidebar.selectbox[0].select("older").run()
    assert not _fallback(at)
    shutil.rmtree(root / "older")
    at.run()
    assert at.title[0].value == "Overview: newer"
    [note] = _fallback(at)
    assert "**older** is no longer in" in note and "showing **newer** instead" in note


# ---------------------------------------------------------------- Diagnose: preload, example image, the demo

def _png(arr) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(arr, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_diagnose_loads_and_warms_the_models_as_it_opens(tiny_experiment, monkeypatch):
    calls = []
    real = inference.Predictor.warm_up
    monkeypatch.setattr(inference.Predictor, "warm_up", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    monkeypatch.setenv(ui.RUNS_ENV, str(tiny_experiment.parent))
    ui.diagnose_cache._diagnose_predictor.clear()  # a fresh server: nothing loaded yet
    at = AppTest.from_file(DIAGNOSE, default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    assert calls == [1] and "upload" not in at.session_state  # loaded and warmed before any upload
    exp = runs.read_experiment(tiny_experiment)
    film = np.asarray(exp.thumbnails()[0])
    at.file_uploader(key=key(tiny_experiment.name, "diagnose_upload")).set_value(("a.png", _png(film), "image/png")).run()
    assert not at.exception and at.session_state["upload"]["name"] == "a.png"
    assert at.session_state["upload"]["source"] == image_name.UPLOAD
    assert calls == [1]  # the upload used the warm predictor
    assert ui.loading_text(exp) == f"Loading the models of {exp.name}…"


def test_the_test_picker_opens_on_an_image_the_verdict_passes(tiny_experiment, monkeypatch):
    exp = runs.read_experiment(tiny_experiment)
    typical = example_image.typical_rows(exp)
    assert typical, "the analysed tiny experiment has a fitted detector"
    split = exp.images()["split"].to_numpy()
    assert all(split[r] == "test" for r in typical)
    monkeypatch.setenv(ui.RUNS_ENV, str(tiny_experiment.parent))
    at = AppTest.from_file(DIAGNOSE, default_timeout=TIMEOUT).run()
    at.radio(key=key(tiny_experiment.name, "diagnose_source")).set_value("Pick a test image of this experiment").run()
    assert not at.exception, [e.value for e in at.exception]
    row = at.selectbox(key=key(tiny_experiment.name, "diagnose_test_row")).value
    assert row in typical
    record = at.session_state["upload"]
    assert record["source"] == image_name.TEST and record["name"].startswith("test image ")
    assert not record["verdict"]["is_ood"] and not any(b["ood"] for b in record["backbones"].values())


def test_the_demo_opens_on_its_example_test_image(tiny_experiment, tmp_path, monkeypatch):
    root = tmp_path / "runs"
    root.mkdir()
    (root / "demo").symlink_to(tiny_experiment, target_is_directory=True)
    monkeypatch.setenv(ui.RUNS_ENV, str(root))
    at = AppTest.from_file(DIAGNOSE, default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.radio(key=key("demo", "diagnose_source")).value == "Pick a test image of this experiment"
    record = at.session_state["upload"]  # predicted as the page opens: the reading is there at once
    assert record["source"] == image_name.TEST and not any(b["ood"] for b in record["backbones"].values())


# ---------------------------------------------------------------- Latent: where the opened image is drawn

@pytest.fixture
def latent_root(tiny_experiment, tmp_path, monkeypatch) -> Path:
    root = tmp_path / "runs"
    shutil.copytree(tiny_experiment, root / tiny_experiment.name)
    monkeypatch.setenv(ui.RUNS_ENV, str(root))
    return root / tiny_experiment.name


def test_an_image_opened_from_the_gallery_is_drawn_under_its_picker(latent_root):
    exp = runs.read_experiment(latent_root)
    at = run_latent_page(**{key(exp.path.name, "latent_selection"): [0, 1, 2]})
    at.selectbox(key=key(exp.path.name, "latent_open_pick")).set_value(1).run()
    assert not at.exception
    image_id = exp.images().iloc[1]["image_id"]
    order = [t for _, t in texts(at)]
    assert order.index("Gallery") < order.index(f"Image {image_id}")  # under the picker, not above, out of view
    assert any("Opened from the gallery (number 2 of the selection)" in t for t in order)
    # A click on the map opens it under the maps, above the selection.
    at = run_latent_page(**{key(exp.path.name, "latent_selection"): [0, 1, 2], key(exp.path.name, "latent_open"): 2,
                    key(exp.path.name, "latent_open_origin"): selection.MAP})
    order = [t for _, t in texts(at)]
    assert order.index(f"Image {exp.images().iloc[2]['image_id']}") < order.index("Selection")


def test_a_picked_test_image_is_named_as_such_on_the_maps(latent_root):
    exp = runs.read_experiment(latent_root)
    a = exp.backbones[0]
    record = {"name": "test image synthetic:0007", "source": image_name.TEST, "experiment": exp.name, "backbones": {
        a: {"probs": [0.3, 0.7], "coords": {"tsne": [1.5, -2.0], "pca": [0.0, 0.0]}, "neighbors": [4, 5, 6],
            "distances": [0.1, 0.2, 0.3], "som_node": 3, "som_qe": 0.5, "som_qe_pct": 40.0, "ood": False}}}
    at = run_latent_page(upload=record)
    notice = next(i.value for i in at.info if "magenta star" in i.value)
    assert notice.startswith("The test image **synthetic:0007** (from the diagnose page)")
    spec = at.get("plotly_chart")[0].proto.spec
    assert "test image synthetic:0007" in spec and "your upload" not in spec
    button = at.button(key=key(exp.path.name, "latent_select_neighbours"))
    assert button.proto.label == "Select the 3 ringed neighbours"
