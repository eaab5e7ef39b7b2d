"""Out-of-distribution verdict: the input gate, the feature-space detector, its cut-off and storage."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pydicom
import pytest
from PIL import Image

from covidviz import runs
from covidviz.data.imageio import decode_upload
from covidviz.data.synthetic import render_phantom
from covidviz.ood import (
    LEGACY,
    LEGACY_PERCENTILE,
    GateOnly,
    LegacyDetector,
    OodDetector,
    OodVerdict,
    check_image,
    load_detector,
    samples,
)
from covidviz.ood.detector import DETECTORS, BackboneScorer, conformal_cutoff, fit_ood
from covidviz.ood.features import extract_features
from covidviz.runs.records import OodInfo
from tests.dicom_factory import make_dicom


def _png(arr) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------- the gate

@pytest.mark.parametrize("kind", ["photo", "screenshot", "document"])
def test_gate_rejects_photos_screenshots_and_documents(kind):
    for seed in range(4):
        decoded = decode_upload(samples.upload_bytes(kind, seed), f"{kind}.{samples.FORMATS[kind].lower()}")
        result = check_image(decoded)
        assert not result.passed, (kind, seed, result.stats)
        assert result.reasons and result.summary.startswith("It does not look like a grayscale radiograph")


def test_gate_reasons_say_what_is_wrong():
    photo = check_image(decode_upload(samples.upload_bytes("photo", 1), "cat.jpg"))
    assert any("colour" in r for r in photo.reasons)
    text = np.full((400, 600), 250, np.uint8)
    text[40:360:20, 30:570] = 10  # lines of "text" on white: few grey levels, one flat shade
    reasons = " ".join(check_image(text).reasons)
    assert "grey levels" in reasons and "flat shade" in reasons
    strip = render_phantom(3, (), size=64)[0].repeat(4, axis=1)[:20]  # 20 x 256: a strip
    assert any("strip" in r for r in check_image(strip).reasons)
    rgb = samples.colour_photo(2)  # an RGB array (not decoded) is checked for colour too
    assert not check_image(rgb).passed


def test_gate_accepts_phantoms_and_dicom_films():
    for seed in range(8):
        film, _ = render_phantom(seed, ("COVID-19",) if seed % 2 else (), size=256, difficulty=seed / 7,
                                 marker=seed % 3 == 0)
        result = check_image(decode_upload(_png(film), "phantom.png"))
        assert result.passed, (seed, result.reasons, result.stats)
        assert check_image(film).passed  # a plain gray array works as well
    film = render_phantom(11, (), size=128)[0].astype(np.float64)
    for data in (make_dicom(4000 - film * 12, photometric="MONOCHROME1", bits=12, window=(2500, 3000)),
                 make_dicom(film * 16, bits=12)):
        result = check_image(decode_upload(data, "film.dcm"))
        assert result.passed, result.reasons
    ds = pydicom.dcmread(io.BytesIO(make_dicom(film * 16, bits=12)))
    ds.Modality = "CT"  # the factory writes DX; a CT slice is no radiograph, whatever its pixels
    buf = io.BytesIO()
    ds.save_as(buf)
    assert any("modality is CT" in r for r in check_image(decode_upload(buf.getvalue(), "slice.dcm")).reasons)


def test_gate_ends_with_the_view_check_and_says_the_kind():
    from covidviz.ood.gate import GateResult

    assert GateResult(True).view is None and GateResult(True).lungs is None  # older callers still build it
    film = render_phantom(3, (), size=256)[0]
    ok = check_image(film)
    assert ok.passed and ok.view == "frontal" and ok.lungs is not None and ok.to_json()["view"] == "frontal"
    ct = check_image(decode_upload(samples.upload_bytes("ct", 4), "slice.png"))
    assert not ct.passed and ct.view == "ct" and ct.reasons == [ct.summary]
    assert ct.summary.startswith("It looks like a CT slice (") and "mid-grey" in ct.summary
    ds = pydicom.dcmread(io.BytesIO(make_dicom(film.astype(np.float64) * 16, bits=12)))
    ds.ViewPosition = "LL"
    buf = io.BytesIO()
    ds.save_as(buf)
    lat = check_image(decode_upload(buf.getvalue(), "lateral.dcm"))
    assert lat.view == "lateral" and lat.summary.startswith("It looks like a lateral view (the DICOM file says")
    # a colour photo fails the cheap checks: not a chest radiograph, without segmenting
    photo = check_image(decode_upload(samples.upload_bytes("photo", 2), "cat.jpg"))
    assert photo.view == "not a chest radiograph" and photo.lungs is None and photo.lung_quality is None


@pytest.mark.needs_data
def test_gate_accepts_real_xrays(shared_data):
    paths = []
    for source in ("hannover", "ieee8023", "kermany", "nih"):
        paths += sorted((shared_data / "covid3" / "images" / source).glob("*.png"))[:12]
    paths += sorted((shared_data / "nih14" / "images").glob("*.png"))[:24]
    failed = {p.name: check_image(decode_upload(p.read_bytes(), p.name)).reasons for p in paths}
    failed = {k: v for k, v in failed.items() if v}
    assert len(paths) >= 60 and not failed


# ---------------------------------------------------------------- the cut-off

def test_conformal_cutoff_gives_the_stated_false_alarm_rate():
    rng = np.random.default_rng(0)
    val, fresh = rng.standard_normal(400), rng.standard_normal(20_000)
    cut = conformal_cutoff(val, 0.05)
    assert 0.04 <= (val > cut).mean() <= 0.05
    assert 0.03 <= (fresh > cut).mean() <= 0.07
    assert conformal_cutoff(val[:10], 0.05) == val[:10].max()  # too few for 5 %: the largest


def test_detector_cutoff_on_validation_features():
    """Gaussian 'features': the combined score flags about 5 % of new in-distribution images and
    nearly every shifted one, for every detector."""
    rng = np.random.default_rng(1)
    d, n = 64, 600
    basis = rng.standard_normal((8, d))

    def feats(m, shift=0.0):
        return (rng.standard_normal((m, 8)) @ basis + 0.3 * rng.standard_normal((m, d)) + shift).astype(np.float32)

    train, val, test, shifted = feats(n), feats(400), feats(4000), feats(300, shift=3.0)
    w, b = rng.standard_normal((3, d)) * 0.1, np.zeros(3)
    sc = BackboneScorer.fit(train, w, b, "multiclass")
    own = sc.scores(train[:300], leave_one_out=True)
    norms = {k: {"a": (float(np.median(v)), float(np.subtract(*np.percentile(v, [75, 25]))))} for k, v in own.items()}
    val_raw = sc.scores(val)
    val_z = {k: ((val_raw[k] - norms[k]["a"][0]) / norms[k]["a"][1])[:, None] for k in DETECTORS}
    det = OodDetector({"a": sc}, norms, val_z, detector="knn", alpha=0.05)
    for name in ("mahalanobis", "knn"):
        cut = det.cutoff(name)
        assert (det.combined({"a": val}, name) > cut).mean() <= 0.05
        assert 0.02 <= (det.combined({"a": test}, name) > cut).mean() <= 0.08
        assert (det.combined({"a": shifted}, name) > cut).mean() >= 0.9


# ---------------------------------------------------------------- stored in an experiment

def test_analysis_stores_a_detector_that_round_trips(tiny_experiment):
    exp = runs.read_experiment(tiny_experiment)
    assert exp.has_artifact(runs.OOD) and exp.has_artifact(runs.OOD_INFO)
    info = OodInfo(exp.load_json(runs.OOD_INFO))
    assert info.archs == exp.backbones and info.detector in DETECTORS and info.false_alarm_rate == 0.05
    assert exp.manifest["analysis"]["ood"]["detector"] == info.detector
    det = OodDetector.from_experiment(exp)
    assert det.available and det.archs == exp.backbones
    split = exp.images()["split"].to_numpy()
    val = np.flatnonzero(split == "val")
    feats = {a: np.asarray(exp.features(a), np.float32) for a in exp.backbones}
    # The stored validation scores are the detector's own scores of the validation features.
    for d in DETECTORS:
        again = det.combined({a: f[val] for a, f in feats.items()}, d)
        assert np.allclose(again, det.val_z[d].mean(axis=1), atol=1e-3)
        assert info.cutoff(d) == pytest.approx(det.cutoff(d))
        assert info.val_false_alarm(d) <= info.false_alarm_rate + 1e-9
    # Refitting gives the same detector (seeded), and the arrays round-trip through the npz.
    refit, record = fit_ood(exp, seed=0)
    reread = OodDetector.from_arrays(exp.load_arrays(runs.OOD), OodInfo(record))
    test = np.flatnonzero(split == "test")
    for d in DETECTORS:
        a = refit.combined({k: f[test] for k, f in feats.items()}, d)
        b = reread.combined({k: f[test] for k, f in feats.items()}, d)
        assert np.allclose(a, b, atol=1e-4)


def test_verdict_on_uploads(tiny_experiment):
    exp = runs.read_experiment(tiny_experiment)
    det = OodDetector.from_experiment(exp)
    photo = decode_upload(samples.upload_bytes("photo", 5), "holiday.jpg")
    film = decode_upload(_png(render_phantom(101, (), size=256)[0]), "film.png")
    feats = extract_features(exp, [photo.gray, film.gray])
    v = det.verdict(photo, {a: f[0] for a, f in feats.items()})
    assert v.is_ood and v.status == "ood" and v.checked and not v.gate.passed
    assert "colour" in v.summary and v.to_json()["gate"]["passed"] is False
    v = det.verdict(film, {a: f[1] for a, f in feats.items()})
    assert v.gate.passed and v.checked and v.score is not None and 0 <= v.percentile <= 100
    assert v.is_ood == (v.score > v.cutoff) and set(v.per_backbone) == set(exp.backbones)
    # A CT-like slice: the gate's view check names the kind, first among the verdict's reasons.
    slice_ = decode_upload(samples.upload_bytes("ct", 6), "slice.png")
    v = det.verdict(slice_, {a: f[1] for a, f in feats.items()})
    assert v.is_ood and v.view == "ct" and v.reasons[0].startswith("It looks like a CT slice (")
    assert v.reasons[0] in v.summary and v.to_json()["gate"]["view"] == "ct"
    # Features far from anything seen in training are flagged by the features alone (no image).
    far = {a: np.full(f.shape[1], 50.0, np.float32) for a, f in feats.items()}
    v = det.verdict(None, far)
    assert v.is_ood and v.gate is None and v.percentile == 100 and "unlike the training images" in v.reasons[0]
    assert "than every validation image" in v.reasons[0]  # not "than 100 % of them"
    # One backbone only: the verdict combines what it is given.
    one = exp.backbones[0]
    v = det.verdict(film, {one: feats[one][1]})
    assert v.checked and list(v.per_backbone) == [one]


def test_experiment_analysed_before_ood_gives_no_verdict(tiny_experiment, tmp_path):
    old = shutil.copytree(tiny_experiment, tmp_path / "old")
    (old / runs.OOD).unlink()
    (old / runs.OOD_INFO).unlink()
    exp = runs.read_experiment(old)  # still a readable experiment
    det = OodDetector.from_experiment(exp)
    assert not det.available
    film = decode_upload(_png(render_phantom(7, (), size=256)[0]), "film.png")
    v = det.verdict(film, {a: np.zeros(8, np.float32) for a in exp.backbones})
    assert v.status == "no verdict" and not v.is_ood and not v.checked and v.score is None
    assert "train.py analyze" in v.summary
    v = det.verdict(decode_upload(samples.upload_bytes("screenshot", 3), "screen.png"), {})
    assert v.is_ood and v.status == "ood" and not v.checked  # the gate still works


# ---------------------------------------------------------------- one interface for every experiment

def test_load_detector_gives_every_experiment_one_interface(tiny_experiment, tmp_path):
    exp = runs.read_experiment(tiny_experiment)
    fitted = load_detector(exp)
    assert isinstance(fitted, OodDetector) and fitted.available
    feats = {a: np.asarray(exp.features(a), np.float32) for a in exp.backbones}
    far = {a: np.full(f.shape[1], 50.0, np.float32) for a, f in feats.items()}

    # Analysed before the fitted detector existed: the legacy rule on the stored maps and SOM.
    old = shutil.copytree(tiny_experiment, tmp_path / "old")
    (old / runs.OOD).unlink()
    (old / runs.OOD_INFO).unlink()
    legacy = load_detector(runs.read_experiment(old))
    assert isinstance(legacy, LegacyDetector) and legacy.available and legacy.archs == exp.backbones
    v = legacy.verdict(None, far)
    assert v.is_ood and v.checked and v.detector == LEGACY and v.flag is True
    assert [r.split(":")[0] for r in v.reasons] == exp.backbones  # each backbone says what fired
    assert f"larger than for {100.0:.1f} % of the training images" in v.reasons[0]
    # A training image whose distances sit below the percentile on every backbone passes.
    train = np.flatnonzero(exp.images()["split"] == "train")
    row = next(r for r in train if all(max(p for p in (pl.nn_pct, pl.som_qe_pct) if p is not None) < LEGACY_PERCENTILE
                                       for pl in (legacy.references[a].place(feats[a][r]) for a in exp.backbones)))
    v = legacy.verdict(None, {a: f[row] for a, f in feats.items()})
    assert v.status == "in-distribution" and v.reason == "" and v.percentile is not None
    rate = f"{100 * (1 - LEGACY_PERCENTILE / 100):.0f} %"
    assert rate in v.summary and f"{LEGACY_PERCENTILE:.0f} %" in v.rule

    # An unreadable ood.npz falls back to the older checks, never an exception.
    (old / runs.OOD).write_bytes(b"not an npz")
    (old / runs.OOD_INFO).write_text("{}")
    assert isinstance(load_detector(runs.read_experiment(old)), LegacyDetector)

    # Nothing stored to compare with: the gate alone, saying so.
    for arch in exp.backbones:
        for name in (runs.PROJECTIONS, runs.SOM):
            runs.read_experiment(old).artifact_path(name, arch).unlink()
    (old / runs.OOD).unlink()
    bare = load_detector(runs.read_experiment(old))
    assert isinstance(bare, GateOnly) and not bare.available
    film = decode_upload(_png(render_phantom(7, (), size=256)[0]), "film.png")
    v = bare.verdict(film, {a: f[0] for a, f in feats.items()})
    assert v.flag is None and "train.py analyze" in v.reason and v.rule is None
    assert bare.verdict(decode_upload(samples.upload_bytes("screenshot", 3), "screen.png"), far).flag is True


def test_verdict_sentences_state_the_verdicts_own_rate():
    """No sentence hard-codes a rate: each one reads the verdict's own ``false_alarm_rate``."""
    fitted = OodVerdict(is_ood=False, reasons=[], score=0.1, percentile=40.0, gate=None, checked=True, cutoff=2.0,
                        false_alarm_rate=0.1, detector="mahalanobis")
    assert "farthest 10 %" in fitted.summary and "farthest 10 %" in fitted.rule and "60 %" in fitted.summary
    legacy = OodVerdict(is_ood=False, reasons=[], score=None, percentile=30.0, gate=None, checked=True,
                        false_alarm_rate=0.02, detector=LEGACY)
    assert "98 %" in legacy.rule and "farthest 2 %" in legacy.summary
    assert (fitted.flag, fitted.reason) == (False, "")
    unchecked = OodVerdict(is_ood=False, reasons=["No feature-space check: why."], score=None, percentile=None,
                           gate=None, checked=False)
    assert (unchecked.flag, unchecked.reason, unchecked.status) == (None, "No feature-space check: why.", "no verdict")
