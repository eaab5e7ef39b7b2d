"""The diagnose step (covidviz.diagnose) and page (app_pages/diagnose.py) on the trained tiny experiment."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from covidviz import inference, runs
from covidviz.analysis.calibration import apply_temperature
from covidviz.cam import METHODS
from covidviz.data.imageio import decode_bytes, decode_upload, read_image
from covidviz.runs.records import Analysis, Rate
from covidviz.views import diagnose as diagnose_view
from tests.dicom_factory import make_dicom

REPO = Path(__file__).resolve().parents[1]
PAGE = str(REPO / "app_pages" / "diagnose.py")

pytestmark = pytest.mark.usefixtures("app_like_server")


@pytest.fixture(scope="module")
def exp(tiny_experiment):
    return runs.read_experiment(tiny_experiment)


@pytest.fixture(scope="module")
def predictor(exp):
    return inference.Predictor(exp)


def _rows(exp, split):
    return np.flatnonzero((exp.images()["split"] == split).to_numpy())


def _png(arr) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


# ------------------------------------------------------------------------------ library

def test_predict_reproduces_training_outputs_and_calibrates(exp, predictor):
    images = exp.images()
    for r in _rows(exp, "test")[:3]:
        d = predictor.predict(read_image(images["path"].iloc[r]), "t")
        for arch, b in d.backbones.items():
            stored = exp.probabilities(arch)[r]
            assert np.allclose(b.raw_probs, stored, atol=2e-3), (arch, b.raw_probs, stored)
            assert np.allclose(b.features, np.asarray(exp.features(arch)[r], np.float32), atol=2e-2, rtol=2e-2)
            temp = exp.analysis().backbone(arch).temperature
            assert np.allclose(b.probs, apply_temperature(b.raw_probs, temp, exp.labels.task))
            assert b.probs.sum() == pytest.approx(1.0) and b.top == int(np.argmax(b.probs))
            assert set(b.cams) == {"cam"} and b.cams["cam"].raw.shape == (1, *d.pixels.shape)


def test_calls_use_the_validation_thresholds_and_report_test_rates(exp, predictor):
    d = predictor.predict(np.asarray(exp.thumbnails()[_rows(exp, "test")[0]]))
    analysis = exp.load_json(runs.ANALYSIS)
    for arch, b in d.backbones.items():
        for j, c in enumerate(b.calls):
            thr = exp.analysis().backbone(arch).point(c["class"], "youden").threshold
            assert c["threshold"] == pytest.approx(thr)
            assert c["positive"] == (b.raw_probs[j] >= thr)
            test = analysis["backbones"][arch]["thresholds"]["per_class"][c["class"]]["points"]["youden"]["test"]
            assert c["test"]["sensitivity"] == Rate.of(test["sensitivity"]) and c["test"]["npv"] == Rate.of(test["npv"])
            assert c["test"]["sensitivity"].value == (test["sensitivity"] or {}).get("value")


def test_similar_cases_are_training_images_and_ood_flags_non_xrays(exp, predictor):
    train = set(_rows(exp, "train").tolist())
    r = int(_rows(exp, "train")[0])
    d = predictor.predict(np.asarray(exp.thumbnails()[r]))
    for b in d.backbones.values():
        assert set(b.neighbors) <= train and len(b.neighbors) >= inference.K_SIMILAR
        assert b.neighbors[0] == r  # a training image finds itself first
        assert list(b.distances) == sorted(b.distances)
        assert not b.ood and b.nn_pct < 50
        assert set(b.coords) == {"pca", "tsne"} and b.som_node is not None
    assert diagnose_view.ood_message(d) is None
    for fake in (np.full((64, 64), 255, np.uint8), (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)):
        d = predictor.predict(fake, "photo.png")
        assert d.ood and all(b.ood and b.nn_pct > 99 and b.som_qe_pct > 99 for b in d.backbones.values())
        msg = diagnose_view.ood_message(d)
        assert "99th percentile" in msg and "SOM" in msg and "nearest training image" in msg


def test_session_record_follows_the_contract(exp, predictor):
    d = predictor.predict(np.asarray(exp.thumbnails()[3]), "x.png")
    rec = json.loads(json.dumps(d.session_record()))
    assert rec["name"] == "x.png" and rec["experiment"] == exp.name and set(rec["backbones"]) == set(exp.backbones)
    for arch, b in rec["backbones"].items():
        assert set(b) == {"probs", "coords", "neighbors", "distances", "som_node", "som_qe", "som_qe_pct", "ood"}
        assert len(b["probs"]) == exp.labels.num_classes and all(len(xy) == 2 for xy in b["coords"].values())
        assert b["neighbors"] == d.backbones[arch].neighbors and isinstance(b["som_node"], int)


def test_heatmaps_for_another_class_and_fixed_scale(exp, predictor):
    d = predictor.predict(np.asarray(exp.thumbnails()[4]), methods=METHODS)
    for arch, b in d.backbones.items():
        assert set(b.cams) == set(METHODS)
        other = (b.top + 1) % exp.labels.num_classes
        maps = predictor.heatmaps(d.pixels, arch, other, ("cam", "gradcam"))
        assert int(maps["cam"].class_idx[0]) == other
        assert not np.allclose(maps["cam"].raw, b.cams["cam"].raw)
        scale = predictor.fixed_scale(arch, "cam")
        assert scale > 0 and predictor.fixed_scale(arch, "cam") == scale
        fixed = diagnose_view.heat_for_display(b.cams["cam"], scale)
        assert fixed.min() >= 0 and fixed.max() <= 1
        assert np.allclose(fixed, np.clip(b.cams["cam"].raw[0] / scale, 0, 1))
        png = diagnose_view.overlay_png(np.asarray(exp.thumbnails()[4]), fixed, 0.5)
        assert Image.open(io.BytesIO(png)).size == (64, 64)


def test_concurrent_predictions_each_get_their_own_result(exp, predictor):
    rows = list(_rows(exp, "test")[:8])
    films = [np.asarray(exp.thumbnails()[r]) for r in rows]
    serial = [predictor.predict(f, methods=("cam", "gradcam")) for f in films]
    results: dict[int, inference.Diagnosis] = {}
    errors = []
    start = threading.Barrier(8)

    def work(i):
        try:
            start.wait()
            results[i] = predictor.predict(films[i], f"img{i}", methods=("cam", "gradcam"))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    [t.start() for t in threads]
    [t.join(120) for t in threads]
    assert not errors and len(results) == 8
    for i in range(8):
        assert results[i].name == f"img{i}"
        for arch in exp.backbones:
            a, b = results[i].backbones[arch], serial[i].backbones[arch]
            assert np.allclose(a.probs, b.probs, atol=1e-5) and np.allclose(a.features, b.features, atol=1e-4)
            assert np.allclose(a.cams["gradcam"].raw, b.cams["gradcam"].raw, atol=1e-4)
            assert a.neighbors == b.neighbors
    # different images really gave different answers (so the comparison above could fail)
    assert len({tuple(np.round(r.backbones[exp.backbones[0]].probs, 6)) for r in results.values()}) > 1


def test_case_report_png(exp, predictor):
    film = np.asarray(exp.thumbnails()[2])
    d = predictor.predict(film, "case.png")
    heats = {a: b.cams["cam"].normalised[0] for a, b in d.backbones.items()}
    png = diagnose_view.case_report_png(d, film, heats, list(exp.labels.names), {"tinycnn": "Tiny"}, "cam",
                                   {"tinycnn": "weights random"})
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.mode == "RGB" and img.width > 1000
    arr = np.asarray(img)
    assert ((arr[..., 0] > 150) & (arr[..., 1] < 40) & (arr[..., 2] < 60)).sum() > 500  # the red notice box


def test_decode_upload_keeps_high_bit_depth_for_window_level():
    ramp = np.tile(np.linspace(0, 4000, 64), (48, 1))
    dcm = make_dicom(ramp, photometric="MONOCHROME1", bits=12, window=(1000, 1000))
    d = decode_upload(dcm, "m1.dcm")
    assert np.array_equal(d.gray, decode_bytes(dcm, "m1.dcm"))
    assert d.high_bit_depth and d.patient["PatientName"] == "Doe^Jane" and "PatientName" not in d.info
    # MONOCHROME1: raw is inverted like the image, the file's window 500..1500 maps to 2500..3500
    assert d.raw[0, 0] > d.raw[0, -1] and d.window == pytest.approx((2500.0, 3500.0), abs=1)
    lo, hi = d.window
    custom = d.windowed(lo, hi)
    assert custom[0, 0] == 255 and custom[0, -1] == 0
    wide = d.windowed(0, 4000)
    assert 100 < wide[0, 32] < 160
    d16 = decode_upload(_png(ramp.astype(np.uint16)), "x16.png")
    assert d16.high_bit_depth and d16.window[1] > d16.window[0] and d16.patient == {}
    d8 = decode_upload(_png(ramp.astype(np.uint8)), "x8.png")
    assert not d8.high_bit_depth and d8.windowed(0, 10) is d8.gray


# ------------------------------------------------------------------------------ the page (AppTest)

@pytest.fixture
def page(tiny_experiment, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from covidviz import ui

    monkeypatch.setenv(ui.RUNS_ENV, str(tiny_experiment.parent))
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _upload(at, name, data):
    at.file_uploader(key="diagnose_upload").set_value((name, data, "application/octet-stream")).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def test_page_png_upload_shows_everything(page, exp):
    at = _upload(page, "chest.png", _png(np.asarray(exp.thumbnails()[_rows(exp, "test")[1]])))
    assert [s.value for s in at.subheader] == ["What the models see", "Predictions", "Where the models look",
                                               "Similar training images", "Where it falls on the maps", "Case report"]
    assert at.title[0].value == f"Diagnose: {exp.name}"
    rec = at.session_state["upload"]
    assert rec["name"] == "chest.png" and set(rec["backbones"]) == set(exp.backbones)
    assert len(at.dataframe) >= 2 and len(at.get("plotly_chart")) == 2
    assert len(at.get("download_button")) == 3  # two overlays + the case report
    at.selectbox(key="diagnose_target").set_value("Pneumonia")
    at.selectbox(key="diagnose_method").set_value("gradcam")
    at.radio(key="diagnose_scale").set_value("Fixed (comparable between images)").run()
    assert not at.exception and not at.error
    captions = [img.caption for el in at.get("image") for img in el.proto.imgs]
    assert captions.count("Grad-CAM for Pneumonia") == 2, captions


def test_page_dicom_hides_patient_fields_and_offers_window(page):
    ramp = np.tile(np.linspace(0, 4000, 64), (64, 1))
    at = _upload(page, "film.dcm", make_dicom(ramp, photometric="MONOCHROME1", bits=12, window=(2000, 3000)))
    assert "Doe^Jane" not in str(at) and "TEST123" not in str(at)
    assert any("identifying field" in c.value for c in at.caption)
    at.toggle(key="diagnose_window_on").set_value(True).run()
    at.slider(key="diagnose_width").set_value(500.0).run()
    assert not at.exception and not at.error and "Predictions" in [s.value for s in at.subheader]
    at.toggle(key="diagnose_show_patient").set_value(True).run()
    assert "Doe^Jane" in str(at.json[0].value)


def test_page_flat_16bit_png_with_window_control(page):
    at = _upload(page, "flat16.png", _png(np.full((64, 64), 1234, np.uint16)))
    at.toggle(key="diagnose_window_on").set_value(True).run()
    assert not at.exception and not at.error and "Predictions" in [s.value for s in at.subheader]


def test_page_pick_a_test_image(page, exp):
    at = page
    at.radio(key="diagnose_source").set_value("Pick a test image of this experiment").run()
    at.multiselect(key="diagnose_filter_label").set_value(["Normal"]).run()
    assert not at.exception
    options = at.selectbox(key="diagnose_test_row").options
    assert options and all("label Normal" in o for o in options)
    assert "Predictions" in [s.value for s in at.subheader]
    assert at.session_state["upload"]["name"].startswith("test image ")


def test_page_marks_an_image_unlike_the_training_xrays(page):
    rgb = np.zeros((96, 128, 3), np.uint8)
    rgb[..., 0] = np.linspace(0, 255, 128)[None, :].astype(np.uint8)  # a colour gradient "photo"
    rgb[..., 1] = 200
    at = _upload(page, "holiday.jpg", _png(rgb))
    warnings = [w.value for w in at.warning]
    assert any("unlike the training X-rays" in w and "99th percentile" in w for w in warnings), warnings
    assert any("Colour image (RGB)" in w for w in warnings)
    assert "Predictions" in [s.value for s in at.subheader]  # still shown, but marked
    assert any("Unlike the training images" in c.value for c in at.caption)
    assert all(b["ood"] for b in at.session_state["upload"]["backbones"].values())


def test_multilabel_predictions_use_sigmoids_and_per_class_temperatures():
    from covidviz.data.labels import MULTILABEL, LabelSpace
    from covidviz.data.preprocess import Preprocessing
    from covidviz.models import Classifier

    class StandIn:  # the little of runs.Experiment a Predictor reads; no analysis artefacts
        name, backbones = "ml", ["tinycnn"]
        labels = LabelSpace(("Atelectasis", "Effusion", "Nodule"), MULTILABEL)
        preprocessing = Preprocessing(32)
        manifest = {"backbones": {"tinycnn": {}}}

        def backbone(self, arch):
            return self.manifest["backbones"][arch]

        def analysis(self):  # calibration only: no thresholds were chosen
            return Analysis({"backbones": {"tinycnn": {"calibration": {"temperature": [1.0, 2.0, 0.5]}}}})

        def has_artifact(self, name, arch=None):
            return False

        def load_model(self, arch):
            import torch

            torch.manual_seed(0)
            return Classifier(arch, 3).eval()

    p = inference.Predictor(StandIn())
    d = p.predict(np.random.default_rng(0).integers(0, 255, (40, 50), dtype=np.uint8), "ml.png")
    b = d.backbones["tinycnn"]
    assert np.allclose(b.raw_probs, 1 / (1 + np.exp(-b.logits)))
    assert np.allclose(b.probs, apply_temperature(b.raw_probs, [1.0, 2.0, 0.5], "multilabel"))
    assert all(c["positive"] is None and c["threshold"] is None for c in b.calls)  # not analysed: no calls
    assert b.neighbors == [] and b.som_node is None and not b.ood
    rec = d.session_record()["backbones"]["tinycnn"]
    assert rec["coords"] == {} and rec["som_node"] is None


def test_page_says_so_when_the_models_cannot_be_loaded(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from covidviz import ui
    from tests.app_fixtures import make_fake_experiment

    make_fake_experiment(tmp_path / "runs", "fake", n=40)  # head-only weights, not analysed
    monkeypatch.setenv(ui.RUNS_ENV, str(tmp_path / "runs"))
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    at.file_uploader(key="diagnose_upload").set_value(("x.png", _png(np.full((64, 64), 90, np.uint8)), "image/png"))
    at.run()
    assert not at.exception
    assert any("could not be loaded" in e.value for e in at.error)
