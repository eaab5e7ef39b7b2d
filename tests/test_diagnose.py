"""The diagnose step (covidviz.diagnose) and page (app_pages/diagnose.py) on the trained tiny experiment."""

from __future__ import annotations

import io
import json
import re
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from covidviz import inference, runs
from covidviz.cam import METHODS, OVERLAY_ALPHA, describe_grid
from covidviz.data.imageio import decode_bytes, decode_upload, read_image
from covidviz.runs.records import POINTS, Analysis, Rate
from covidviz.stats.calibration import apply_temperature
from covidviz.ui.state import scoped
from covidviz.views import diagnose as diagnose_view
from covidviz.views import diagnose_calls as calls_view
from covidviz.views import reliability as rel
from covidviz.views import report as report_view
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


def key(name: str, folder: str = "tiny") -> str:
    """A Diagnose widget's key: scoped to the experiment's folder (``ui.state.scoped``)."""
    return scoped(SimpleNamespace(path=Path(folder)), name)


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


def test_one_path_from_logits_to_calibrated_probabilities(exp, predictor):
    from covidviz.stats.calibration import calibrated_probabilities

    logits = np.random.default_rng(0).normal(size=(5, exp.labels.num_classes)) * 3
    for arch in exp.backbones:
        raw, probs = predictor.probabilities(arch, logits)
        temp = predictor.temperature(arch)
        assert np.allclose(raw, np.exp(logits) / np.exp(logits).sum(1, keepdims=True))
        assert np.allclose(probs, apply_temperature(raw, temp, exp.labels.task)) and probs.dtype == np.float64
        one_raw, one = predictor.probabilities(arch, logits[2])  # one image: the same numbers
        assert np.allclose(one, probs[2]) and np.allclose(one_raw, raw[2])
    assert np.array_equal(calibrated_probabilities(raw, None, exp.labels.task), raw)  # no temperature: unchanged
    assert calibrated_probabilities(raw, None, exp.labels.task) is not raw


def test_calls_use_the_validation_thresholds_and_report_test_rates(exp, predictor):
    d = predictor.predict(np.asarray(exp.thumbnails()[_rows(exp, "test")[0]]))
    analysis = exp.load_json(runs.ANALYSIS)
    for arch, b in d.backbones.items():
        for j, c in enumerate(b.calls):
            thr = exp.analysis().backbone(arch).point(c["class"], "youden").threshold
            assert c["raw_threshold"] == pytest.approx(thr)
            assert c["positive"] == (b.raw_probs[j] >= thr) == (c["prob"] >= c["threshold"])
            test = analysis["backbones"][arch]["thresholds"]["per_class"][c["class"]]["points"]["youden"]["test"]
            assert c["test"]["sensitivity"] == Rate.of(test["sensitivity"]) and c["test"]["npv"] == Rate.of(test["npv"])
            assert c["test"]["sensitivity"].value == (test["sensitivity"] or {}).get("value")
            counts = analysis["backbones"][arch]["thresholds"]["per_class"][c["class"]]["test"]
            assert c["test_prevalence"] == pytest.approx(counts["n_pos"] / counts["n"])


def test_calls_at_every_operating_point_never_contradict_the_numbers_shown(exp, predictor):
    """Whatever the image and operating point: the call is the validated rule on the model's raw score AND
    reads right on the page: Positive exactly when the calibrated probability shown reaches the threshold shown."""
    d = predictor.predict(np.asarray(exp.thumbnails()[_rows(exp, "test")[0]]))
    rng = np.random.default_rng(0)
    seen = set()
    for arch, b in d.backbones.items():
        temp = exp.analysis().backbone(arch).temperature
        assert temp is not None and temp != pytest.approx(1.0)  # calibration really moves the numbers here
        for _ in range(60):
            raw = rng.dirichlet(np.full(exp.labels.num_classes, 0.7))
            fake = inference.BackboneResult(arch, b.logits, raw, apply_temperature(raw, temp, exp.labels.task),
                                            b.features, int(np.argmax(raw)), [], {})
            for point in POINTS:
                calls = predictor.calls(fake, point)
                table = calls_view.calls_table(calls)
                for j, c in enumerate(calls):
                    if c["raw_threshold"] is None:
                        continue
                    assert c["positive"] == (raw[j] >= c["raw_threshold"]) == (c["prob"] >= c["threshold"])
                    gap = table.loc[j, calls_view.prob_column()] - table.loc[j, calls_view.threshold_column()]  # band
                    assert table.loc[j, "Call"] == ("indeterminate" if abs(gap) < rel.BAND else
                                                    "Positive" if gap >= 0 else "Negative")
                    seen.add(c["positive"])
                if calls_view.contradicts(calls, fake.top, exp.labels.task):
                    assert "most likely class" in calls_view.screening_sentence(calls, fake.top, exp.labels.task, point)
    assert seen == {True, False}


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
    # one verdict for the image, from the fitted detector over both backbones' features
    assert d.verdict.checked and d.verdict.status == "in-distribution" and not d.ood
    assert diagnose_view.ood_message(d) is None and "looks like the training images" in diagnose_view.verdict_caption(d)
    # the similar-cases caption states the rule the verdict applied (the fitted detector's rate, not a fixed 99 %)
    caption = diagnose_view.similar_caption(d.backbones[exp.backbones[0]], d.verdict)
    rate = f"farthest {100 * predictor.ood_detector.alpha:.0f} % of the validation images"
    assert d.verdict.rule in caption and rate in caption and "99 %" not in caption
    for fake in (np.full((64, 64), 255, np.uint8), (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)):
        d = predictor.predict(fake, "photo.png")
        assert d.ood and d.verdict.is_ood and all(b.ood for b in d.backbones.values())  # never disagreeing
        assert d.verdict.gate is not None and not d.verdict.gate.passed  # not a radiograph at all
        msg = diagnose_view.ood_message(d)
        assert "unlike the images the models were trained on" in msg and "withheld" in msg
        assert diagnose_view.verdict_caption(d) is None


def test_session_record_follows_the_contract(exp, predictor):
    d = predictor.predict(np.asarray(exp.thumbnails()[3]), "x.png")
    rec = json.loads(json.dumps(d.session_record()))
    assert rec["name"] == "x.png" and rec["experiment"] == exp.name and set(rec["backbones"]) == set(exp.backbones)
    for arch, b in rec["backbones"].items():
        assert set(b) == {"probs", "coords", "neighbors", "distances", "som_node", "som_qe", "som_qe_pct", "ood"}
        assert b["ood"] == rec["verdict"]["is_ood"]
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
    calls = calls_view.calls_at(predictor, d, "high_sensitivity")
    case = report_view.CaseReport(d, list(exp.labels.names), exp.labels.task, {"tinycnn": "Tiny"},
                                  {"tinycnn": "weights random"}, "cam", calls=calls, point="high_sensitivity")
    png = report_view.case_report_png(case, film, heats)
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.mode == "RGB" and img.width > 1000
    arr = np.asarray(img)
    assert ((arr[..., 0] > 150) & (arr[..., 1] < 40) & (arr[..., 2] < 60)).sum() > 500  # the red notice box


def test_prediction_carries_the_lung_fields_and_each_maps_share(exp, predictor, monkeypatch):
    import dataclasses

    from covidviz.anatomy import LungFields
    from covidviz.cam import lungshare

    film = read_image(exp.images()["path"].iloc[_rows(exp, "test")[0]])
    d = predictor.predict(film, "lungs.png", methods=("cam", "eigencam"))
    assert isinstance(d.lungs, LungFields) and d.lungs.mask.shape == film.shape and d.lungs.ok
    assert d.lung_mask.shape == d.pixels.shape and d.lung_mask.any()
    assert np.array_equal(d.lung_mask, lungshare.model_mask(d.lungs.mask, exp.preprocessing))
    for b in d.backbones.values():  # the first method's top-class map, against the lungs on the model input
        want = lungshare.lung_weight(b.cams["cam"].raw[0], d.lung_mask)
        assert b.lung_weight.share_inside == pytest.approx(want.share_inside) and 0 <= want.share_inside <= 1
        assert b.lung_weight.lung_area_share == pytest.approx(d.lung_mask.mean())
    # the input gate's fields are used when it found them; unreliable ones give no share
    weak = LungFields(d.lungs.mask, d.lungs.left, d.lungs.right, 0.1, ("only one lung field found",))
    real = predictor.verdict
    monkeypatch.setattr(predictor, "verdict", lambda *a, **k: dataclasses.replace(
        real(*a, **k), gate=SimpleNamespace(lungs=weak, passed=True, summary="", to_json=dict, view=None)))
    d2 = predictor.predict(film, "lungs.png")
    assert d2.lungs is weak and d2.lung_mask is None
    assert all(b.lung_weight is None for b in d2.backbones.values())
    # good fields on what the view check calls a CT slice: no outline, no share, and the reason said
    monkeypatch.setattr(predictor, "verdict", lambda *a, **k: dataclasses.replace(
        real(*a, **k), gate=SimpleNamespace(lungs=d.lungs, passed=False, summary="", to_json=dict, view="ct")))
    d3 = predictor.predict(film, "ct.png")
    assert d3.lungs.ok and d3.view == "ct" and d3.lung_mask is None
    assert all(b.lung_weight is None for b in d3.backbones.values())
    from covidviz.views import diagnose as view
    assert "the view check found a CT slice" in view.lungs_caption(d3.lungs, d3.lung_mask, True, d3.view)
    assert "not measured: the view check found a CT slice" in view.lung_text(None, d3.lungs, d3.view)
    assert view.lungs_problem(d.lungs, "frontal") is None and view.lungs_problem(d.lungs) is None


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
    at.file_uploader(key=key("diagnose_upload")).set_value((name, data, "application/octet-stream")).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def _results(at) -> bool:
    """The results are there: the reading's film and the sections under it, in the reader's order."""
    return ([e.label for e in at.expander] == list(diagnose_view.SECTIONS.values())
            and any(m.value == "**Film**" for m in at.markdown))


def _reading(at) -> list[str]:
    """The reading at the top: per backbone its top class, probability, call and what the model knows."""
    return [m.value for m in at.markdown if "test AUC" in m.value and "sens " in m.value]


def test_page_png_upload_shows_everything(page, exp):
    at = _upload(page, "chest.png", _png(np.asarray(exp.thumbnails()[_rows(exp, "test")[1]])))
    assert _results(at) and not at.subheader[:-1]  # sections the reader opens, no long page of subheaders
    assert at.title[0].value == f"Diagnose: {exp.name}"
    rec = at.session_state["upload"]
    assert rec["name"] == "chest.png" and set(rec["backbones"]) == set(exp.backbones)
    assert len(at.table) >= 2 and len(at.get("plotly_chart")) == 2
    assert len(at.get("download_button")) == 3  # two overlays + the case report
    assert not at.status  # the busy state at the top was replaced by the results
    assert sum(m.value.startswith("Most likely: **") for m in at.markdown) == 2  # one headline per backbone
    reading = _reading(at)  # at the top: per backbone its top class, probability, call, test AUC and rates
    assert len(reading) == 2 and all(re.match(r"\*\*[\w-]+\*\* \d\.\d\d · :\w+\[\*\*", r) for r in reading), reading
    _calls_read_right(at, exp.labels.names)
    captions = [m.value for m in at.markdown]
    grids = {f" · {describe_grid(exp.record(a).cam_grid, exp.preprocessing.image_size)}" for a in exp.backbones}
    assert sum("CAM (class activation map) for " in c and any(c.endswith(g) for g in grids)
               for c in captions) == 2, captions  # each map says its true resolution
    assert not [c for c in captions if "Windowed: not needed" in c]  # no duplicate of the original
    # Grad-CAM equals CAM on the last block: offered only on an earlier one
    assert "gradcam" not in at.selectbox(key=key("diagnose_method::block4")).options
    at.selectbox(key=key("diagnose_layer")).set_value("block3").run()
    at.selectbox(key=key("diagnose_target")).set_value("Pneumonia")
    at.selectbox(key=key("diagnose_method::block3")).set_value("gradcam")
    at.radio(key=key("diagnose_scale")).set_value("Fixed (comparable between images)").run()
    assert not at.exception and not at.error
    captions = [m.value for m in at.markdown]
    assert sum("· Grad-CAM for Pneumonia · " in c for c in captions) == 2, captions
    # the reading's maps too (naming the class when it is not the one whose call is shown under the map)
    assert sum(c.endswith(("· :grey[Grad-CAM for Pneumonia]", "· :grey[Grad-CAM]")) for c in captions) == 2


def test_page_lung_outline_toggle_and_evidence_lines(page, exp, monkeypatch):
    from covidviz.cam import lungshare

    drawn = []
    real = lungshare.draw_outline
    monkeypatch.setattr(lungshare, "draw_outline", lambda *a, **k: drawn.append(1) or real(*a, **k))
    at = _upload(page, "chest.png", _png(np.asarray(exp.thumbnails()[_rows(exp, "test")[1]])))
    lines = [m.value for m in at.markdown if m.value.startswith(diagnose_view.LUNG_PREFIX)]
    no_map = sum("No evidence for" in i.value for i in at.info)
    assert len(lines) + no_map == len(exp.backbones) and lines, lines
    assert all("of this map's weight lies inside the lung fields (the lungs are " in line for line in lines)
    toggle = at.toggle(key=key("diagnose_lungs"))
    assert toggle.label == diagnose_view.LUNG_TOGGLE and toggle.value is True
    captions = [c.value for c in at.caption]
    assert any(c.startswith("Film with the lung fields found on it outlined") for c in captions), captions
    assert len(drawn) >= 1 + len(exp.backbones)  # the film and every map
    drawn.clear()
    toggle.set_value(False).run()
    assert not at.exception and not at.error and not drawn  # off: no outline anywhere (page or report)
    captions = [c.value for c in at.caption]
    assert any(c.startswith("Film (lung outline off)") for c in captions), captions
    assert [m.value for m in at.markdown if m.value.startswith(diagnose_view.LUNG_PREFIX)] == lines  # shares stay


def _printed(table):
    """The table as printed (the Styler's display values: numbers with the digits the page shows)."""
    import pyarrow as pa

    return pa.ipc.open_stream(table.proto.arrow_data.styler.display_values).read_pandas()


def _calls_read_right(at, names) -> None:
    """Every calls table on the page (one per backbone) has one score column and a call that agrees with it,
    as printed; every class has its row (no height cut); only a call near its threshold reads indeterminate."""
    import pandas as pd

    tables = [t for t in at.table if "Call" in t.value.columns]
    assert len(tables) == 2
    for table in tables:
        t = table.value
        P, T = calls_view.prob_column(), calls_view.threshold_column()
        assert list(t.columns)[:4] == ["Class", P, T, "Call"]  # both scores on the calibrated scale, and named so
        assert list(t["Class"]) == list(names)  # every class, in order
        assert set(t["Call"]) <= set(rel.READINGS)
        near = (t[P] - t[T]).abs() < rel.BAND
        assert ((t["Call"] == "indeterminate") <= near).all()
        shown = _printed(table)
        p, th = (pd.to_numeric(shown[c], errors="coerce") for c in (P, T))  # "—": no threshold
        assert (p[t["Call"] == "Positive"] >= th[t["Call"] == "Positive"]).all()
        assert (p[t["Call"] == "Negative"] < th[t["Call"] == "Negative"]).all()


def _rates(at):
    """The rates tables (one per backbone) as one frame."""
    import pandas as pd

    return pd.concat([t.value for t in at.table if "PPV" in t.value.columns], ignore_index=True)


def test_page_screening_point_and_prevalence(page, exp):
    at = _upload(page, "chest.png", _png(np.asarray(exp.thumbnails()[_rows(exp, "test")[2]])))
    cls = exp.labels.names[0]
    assert at.selectbox(key=key("diagnose_point")).value == "youden"
    rates = _rates(at)
    assert list(rates.columns) == ["Class", "Prevalence", "Sensitivity", "Specificity", "PPV", "NPV"]
    assert len(rates) == 2 * exp.labels.num_classes and rates["Prevalence"].str.endswith("(test)").all()
    test_pct = at.number_input(key=key(f"diagnose_prevalence::{cls}")).value
    counts = exp.analysis().backbone(exp.backbones[0]).class_counts(cls)["test"]
    assert test_pct == pytest.approx(round(100 * counts["n_pos"] / counts["n"], 1))
    at.selectbox(key=key("diagnose_point")).set_value("high_specificity").run()
    at.number_input(key=key(f"diagnose_prevalence::{cls}")).set_value(2.0).run()
    assert not at.exception and not at.error
    _calls_read_right(at, exp.labels.names)
    rates = _rates(at)
    assert (rates.loc[rates["Class"] == cls, "Prevalence"] == "2.0% (yours)").all()
    assert rates.loc[rates["Class"] != cls, "Prevalence"].str.endswith("(test)").all()
    assert any(m.value == f"**{calls_view.rates_heading('high_specificity')}**" for m in at.markdown)


def test_switching_experiment_resets_every_diagnose_widget(tiny_experiment, tmp_path, monkeypatch):
    """Widget keys are scoped per experiment: a value set on one never shows up on another."""
    from streamlit.testing.v1 import AppTest

    from covidviz import ui

    root = tmp_path / "runs"
    for folder in ("tiny", "other"):
        shutil.copytree(tiny_experiment, root / folder)
    monkeypatch.setenv(ui.RUNS_ENV, str(root))
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    at.sidebar.selectbox[0].select("tiny").run()
    test_source = "Pick a test image of this experiment"
    at.radio(key=key("diagnose_source")).set_value(test_source).run()
    cls = at.selectbox(key=key("diagnose_prev_class")).value
    default_pct = at.number_input(key=key(f"diagnose_prevalence::{cls}")).value
    at.selectbox(key=key("diagnose_point")).set_value("high_sensitivity").run()
    at.number_input(key=key(f"diagnose_prevalence::{cls}")).set_value(1.5).run()
    at.slider(key=key("diagnose_alpha")).set_value(0.9).run()
    assert not at.exception and at.selectbox(key=key("diagnose_point")).value == "high_sensitivity"

    at.sidebar.selectbox[0].select("other").run()
    assert not at.exception
    assert at.radio(key=key("diagnose_source", "other")).value == "Upload a file"  # back at its default
    first = ["diagnose_source", "diagnose_point", f"diagnose_prevalence::{cls}", "diagnose_alpha"]
    assert not [k for k in first if key(k) in at.session_state]  # nothing of the first experiment's is kept
    at.radio(key=key("diagnose_source", "other")).set_value(test_source).run()
    assert at.selectbox(key=key("diagnose_point", "other")).value == "youden"
    assert at.number_input(key=key(f"diagnose_prevalence::{cls}", "other")).value == default_pct
    assert at.slider(key=key("diagnose_alpha", "other")).value == pytest.approx(OVERLAY_ALPHA)
    assert "(yours)" not in " ".join(_rates(at)["Prevalence"])


def test_page_dicom_hides_patient_fields_and_offers_window(page):
    ramp = np.tile(np.linspace(0, 4000, 64), (64, 1))
    at = _upload(page, "film.dcm", make_dicom(ramp, photometric="MONOCHROME1", bits=12, window=(2000, 3000)))
    assert "Doe^Jane" not in str(at) and "TEST123" not in str(at)
    assert any("identifying field" in c.value for c in at.caption)
    at.toggle(key=key("diagnose_window_on")).set_value(True).run()
    at.slider(key=key("diagnose_width")).set_value(500.0).run()
    assert not at.exception and not at.error and _results(at)
    at.toggle(key=key("diagnose_show_patient")).set_value(True).run()
    assert "Doe^Jane" in str(at.json[0].value)


def test_page_flat_16bit_png_with_window_control(page):
    at = _upload(page, "flat16.png", _png(np.full((64, 64), 1234, np.uint16)))
    at.toggle(key=key("diagnose_window_on")).set_value(True).run()
    assert not at.exception and not at.error and _results(at)


def test_page_pick_a_test_image(page, exp):
    at = page
    at.radio(key=key("diagnose_source")).set_value("Pick a test image of this experiment").run()
    at.multiselect(key=key("diagnose_filter_label")).set_value(["Normal"]).run()
    assert not at.exception
    options = at.selectbox(key=key("diagnose_test_row")).options
    assert options and all("label Normal" in o for o in options)
    assert _results(at)
    assert at.session_state["upload"]["name"].startswith("test image ")


def test_page_marks_an_image_unlike_the_training_xrays(page):
    rgb = np.zeros((96, 128, 3), np.uint8)
    rgb[..., 0] = np.linspace(0, 255, 128)[None, :].astype(np.uint8)  # a colour gradient "photo"
    rgb[..., 1] = 200
    at = _upload(page, "holiday.jpg", _png(rgb))
    warnings = [w.value for w in at.warning]
    assert any("Colour image (RGB)" in w for w in warnings)
    verdicts = [w.value for w in at.warning if "unlike the images the models were trained on" in w.value]
    assert len(verdicts) == 1 and "in colour" in verdicts[0]  # ONE verdict, saying why
    assert _results(at)
    assert any("Calls withheld" in i.value for i in at.info) and not [t for t in at.table if "Call" in t.value.columns]
    assert all(b["ood"] for b in at.session_state["upload"]["backbones"].values())
    # withheld means withheld: no map, similar image, what-if or placement, and no class named anywhere
    shown_text = " ".join([m.value for m in at.markdown] + [c.value for c in at.caption] + [i.value for i in at.info]
                          + [img.caption for el in at.get("image") for img in el.proto.imgs])
    assert not [n for n in ("COVID-19", "Normal", "Pneumonia") if n in shown_text], shown_text
    assert not at.get("plotly_chart") and len(at.get("download_button")) == 1  # no map (only the report's button)
    assert sum(diagnose_view.WITHHELD_SECTION in i.value for i in at.info) == 4  # maps, what-ifs, similar, placement
    at.toggle(key=key("diagnose_show_anyway::holiday.jpg")).set_value(True).run()  # the explicit "show anyway"
    assert not at.exception
    assert len([t for t in at.table if "Call" in t.value.columns]) == 2
    assert any("Shown at your request" in m.value for m in at.markdown)
    verdict = next(w.value for w in at.warning if "unlike the images" in w.value)
    assert "are withheld" not in verdict and "shown only at your request" in verdict  # not "withheld", then shown
    assert sum(diagnose_view.SHOWN_LABEL in m.value for m in at.markdown) == 2  # every map marked, both tables grey
    assert all(":gray[" in r for r in _reading(at))


def test_multilabel_predictions_use_sigmoids_and_per_class_temperatures():
    from covidviz.data.labels import MULTILABEL, LabelSpace
    from covidviz.data.preprocess import Preprocessing
    from covidviz.models import Classifier

    class StandIn:  # the little of runs.Experiment a Predictor reads; no analysis artefacts
        name, backbones, path = "ml", ["tinycnn"], Path("ml")
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
    assert b.neighbors == [] and b.som_node is None
    # no stored analysis: the verdict is the input gate's alone, and says so (random noise fails the gate)
    assert not d.verdict.checked and b.ood == d.verdict.is_ood
    assert any("No feature-space check" in r for r in d.verdict.reasons)
    rec = d.session_record()["backbones"]["tinycnn"]
    assert rec["coords"] == {} and rec["som_node"] is None


def test_page_says_so_when_the_models_cannot_be_loaded(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from covidviz import ui
    from tests.app_fixtures import make_fake_experiment

    make_fake_experiment(tmp_path / "runs", "fake", n=40)  # head-only weights, not analysed
    monkeypatch.setenv(ui.RUNS_ENV, str(tmp_path / "runs"))
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    at.file_uploader(key=key("diagnose_upload", "fake")).set_value(("x.png", _png(np.full((64, 64), 90, np.uint8)),
                                                                    "image/png"))
    at.run()
    assert not at.exception
    assert any("could not be loaded" in e.value for e in at.error)


def test_page_what_if_panel_and_a_box_of_ones_own(page, exp):
    at = _upload(page, "chest.png", _png(np.asarray(exp.thumbnails()[_rows(exp, "test")[0]])))
    assert not [m for m in at.markdown if "Hottest 10 %" in m.value]  # runs on request only
    at.button(key=key("diagnose_whatif_run")).click().run()
    assert not at.exception, [e.value for e in at.exception]
    rows = [m.value for m in at.markdown if "% of the image)**" in m.value or "hidden (lung fields)" in m.value]
    assert any(r.startswith("**Hottest 10 % of the heat map hidden") for r in rows), rows
    assert any("random regions of the same size" in r for r in rows)  # each condition's random band
    assert any(r.startswith("**Centre hidden (lung fields)") for r in rows)
    assert all(r.count(" → ") >= len(exp.backbones) for r in rows)  # both backbones, before -> after (+ log-odds)
    box = [m.value for m in at.markdown if "with the box hidden" in m.value]
    assert len(box) == 1
    at.slider(key=key("diagnose_box_x")).set_value((0.0, 0.5))
    at.slider(key=key("diagnose_box_y")).set_value((0.0, 1.0)).run()  # the left half hidden
    box2 = [m.value for m in at.markdown if "with the box hidden" in m.value]
    assert len(box2) == 1 and box2 != box
    at.slider(key=key("diagnose_box_x")).set_value((0.0, 1.0)).run()  # everything hidden: said, not a crash
    assert not at.exception and any("outside the box" in i.value for i in at.info)


def test_page_picks_an_image_of_an_external_set(tiny_experiment, tmp_path_factory, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from covidviz import ui
    from tests.external_fixtures import SITE, tiny_with_external

    folder = tiny_with_external(tiny_experiment, tmp_path_factory)
    monkeypatch.setenv(ui.RUNS_ENV, str(folder.parent))
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    source = at.radio(key=key("diagnose_source", folder.name))
    assert "Pick an image of an external test set" in source.options
    source.set_value("Pick an image of an external test set").run()
    assert at.selectbox(key=key("diagnose_external_site", folder.name)).value == SITE
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["upload"]["name"].startswith(f"{SITE} image ")  # predicted like a test image
    assert _results(at)


def test_maps_explain_the_class_shown_when_calibration_reorders_the_classes(exp, predictor, monkeypatch):
    """Per-class calibration (multi-label temperatures) can put a class other than the top raw logit on
    top: the maps (and the lung share read from them) must be of the class the page names."""
    film = read_image(exp.images()["path"].iloc[_rows(exp, "test")[0]])
    real = predictor.probabilities

    def reordered(arch, logits):
        raw, probs = real(arch, logits)
        worst = int(np.argmin(logits))  # the lowest raw logit becomes the most probable class
        probs = np.full_like(probs, 0.1)
        probs[worst] = 0.9
        return raw, probs

    monkeypatch.setattr(predictor, "probabilities", reordered)
    d = predictor.predict(film, "reordered.png", methods=("cam", "gradcam++"))
    for b in d.backbones.values():
        assert b.top == int(np.argmin(b.logits))
        assert all(int(c.class_idx[0]) == b.top for c in b.cams.values())
