"""Batch prediction (covidviz.batch) and its command line (covidviz.predict) on the trained tiny experiment."""

from __future__ import annotations

import csv
import io
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from covidviz import batch, inference, runs
from covidviz import predict as predict_cli
from covidviz.data.imageio import ImageDecodeError, decode_upload, read_image
from covidviz.ood import LEGACY, LEGACY_PERCENTILE
from tests.dicom_factory import make_dicom


@pytest.fixture(scope="module")
def predictor(tiny_experiment):
    return inference.Predictor(runs.read_experiment(tiny_experiment))


def film(seed: int, shape=(80, 96)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h, w = shape
    y, x = np.mgrid[0:h, 0:w]
    lungs = sum(np.exp(-(((x / w - cx) / 0.14) ** 2 + ((y / h - 0.5) / 0.3) ** 2)) for cx in (0.32, 0.68))
    return np.clip(200 - 120 * lungs + rng.normal(0, 12 + 4 * seed, shape), 0, 255).astype(np.uint8)


def png_bytes(gray: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def films(tiny_experiment):
    """Seven films: four of the experiment's own training images (in distribution) and three others."""
    exp = runs.read_experiment(tiny_experiment)
    images = exp.images()
    train = images.index[images["split"] == "train"][:4]
    own = [(f"train-{i}.png", read_image(images.loc[i, "path"])) for i in train]
    return own + [(f"film-{s}.png", film(s, (64 + 8 * s, 72))) for s in range(3)]


@pytest.fixture
def folder(tmp_path, films):
    """Good PNGs (one in a subfolder), a DICOM without suffix, four bad files and some litter."""
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    for k, (name, gray) in enumerate(films[:4]):
        ((d / "sub") if k == 0 else d).joinpath(name).write_bytes(png_bytes(gray))
    (d / "scan").write_bytes(make_dicom(films[4][1].astype(np.uint16) * 16, bits=12))
    (d / "garbage.png").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (d / "empty.png").write_bytes(b"")
    (d / "notes.png").write_text("not an x-ray, just a text file renamed .png\n")
    (d / "truncated.jpg").write_bytes(png_bytes(films[5][1])[:60])
    (d / "README.txt").write_text("ignored: not an image suffix")
    (d / ".DS_Store").write_bytes(b"\0\1")
    return d


GOOD_IN_FOLDER, BAD_IN_FOLDER = 5, 4


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


# ---------------------------------------------------------------- the batch path equals the one-image path

def test_batch_scores_equal_predictor(predictor, films):
    scorer = batch.BatchPredictor(predictor, batch_size=3, keep_features=True)  # batches of 3, 3 and 1
    sources = [batch.Source(name, (lambda g=gray: png_bytes(g))) for name, gray in films]
    result = scorer.run(sources)
    assert not result.bad and [r.name for r in result.rows] == [n for n, _ in films]
    flags = []
    for (name, gray), row in zip(films, result.rows):
        one = predictor.predict(gray, name)
        assert np.array_equal(row.pixels, one.pixels)
        for arch, b in one.backbones.items():
            got = row.backbones[arch]
            np.testing.assert_allclose(got.probs, b.probs, rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(got.raw_probs, b.raw_probs, rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(got.features, b.features, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(got.cam, b.cams["cam"].low_res[0], rtol=1e-4, atol=1e-5)
            assert got.top == b.top == got.cam_class
            assert got.calls == [c["positive"] for c in b.calls]
            assert got.thresholds == [c.get("raw_threshold", c["threshold"]) for c in b.calls]  # chosen on raw probs
            if b.lung_weight is None:  # the same lung share as on the Diagnose page
                assert got.lung_weight is None
            else:
                assert got.lung_weight.share_inside == pytest.approx(b.lung_weight.share_inside, abs=1e-4)
                assert got.lung_weight.where_outside == b.lung_weight.where_outside
        assert row.lung_quality == pytest.approx(one.lungs.quality)
        assert row.lung_area == (None if one.lung_mask is None else pytest.approx(one.lung_mask.mean()))
        # the default OOD rule is the Predictor's one verdict
        assert row.ood is one.verdict.flag and row.ood_reason == one.verdict.reason
        assert row.verdict.status == one.verdict.status and row.verdict.checked
        flags.append(row.ood)
    assert all(t is not None for t in scorer._thresholds["densenet121"])  # calls were really made
    assert flags[-1] is True and not any(flags[:4])  # noise films are far, training images are not
    table = batch.export.table(scorer, result.rows)
    assert list(table.columns) == batch.export.columns(scorer) and len(table) == len(films)
    assert table["ood"].tolist() == flags
    assert table["error"].isna().all() and set(table["experiment"]) == {predictor.exp.name}
    lung = [f"{a}::lung_share" for a in scorer.archs]
    assert table.loc[:3, lung + ["lung_area"]].notna().all().all()  # the training phantoms' lungs are found
    assert table[lung].stack().dropna().between(0, 1).all() and table.loc[:3, "lung_quality"].ge(0.5).all()
    off = table["densenet121::lung_share"] < 0.5  # where most weight is outside, the place is named
    assert table.loc[off, "densenet121::lung_outside"].notna().all()
    assert table.loc[~off, "densenet121::lung_outside"].isna().all()
    assert (table[[f"densenet121::p::{c}" for c in scorer.names]].sum(axis=1) - 1).abs().max() < 1e-5


def test_ood_seam_is_called_with_features(predictor, films):
    seen = []

    def ood_fn(gray, features, info=None):
        seen.append((gray.shape, {a: f.shape for a, f in features.items()}))
        return gray.shape[0] > 70, "tall" if gray.shape[0] > 70 else ""

    rows = batch.BatchPredictor(predictor, batch_size=4, ood_fn=ood_fn).score(films[4:])
    assert [r.ood for r in rows] == [g.shape[0] > 70 for _, g in films[4:]]
    assert seen[0][0] == films[4][1].shape  # the decoded film, not the model input
    assert seen[0][1] == {"tinycnn": (128,), "densenet121": (1024,)}
    assert rows[-1].ood_reason == "tall"


def test_one_lock_hold_and_one_forward_per_batch(predictor, films, monkeypatch):
    from covidviz import inference

    calls = []
    real = inference.compute_cams  # the batch path's one forward (inference.forward_with_features)

    def counting(model, x, *args, **kwargs):
        assert inference.model_lock(model)._is_owned()  # taken by the batch path around the pass
        calls.append(x.shape[0])
        return real(model, x, *args, **kwargs)

    monkeypatch.setattr(inference, "compute_cams", counting)
    batch.BatchPredictor(predictor, batch_size=4, ood_fn=lambda g, f, i=None: (False, "")).run(
        [batch.Source(n, (lambda g=g: png_bytes(g))) for n, g in films])
    assert calls == [4, 4, 3, 3]  # per batch, one pass per backbone


def _verdict_files() -> list[tuple[str, bytes]]:
    """A colour photo, noise, a phantom film, a screenshot and a CT slice, as a user would upload them."""
    from covidviz.data.synthetic import render_phantom
    from covidviz.ood import samples

    ds = pydicom.dcmread(io.BytesIO(make_dicom(film(2).astype(np.uint16) * 16, bits=12)))
    ds.Modality = "CT"
    buf = io.BytesIO()
    ds.save_as(buf)
    noise = np.random.default_rng(3).integers(0, 256, (90, 80), dtype=np.uint8)
    return [("holiday.jpg", samples.upload_bytes("photo", 5)), ("noise.png", png_bytes(noise)),
            ("phantom.png", png_bytes(render_phantom(101, (), size=256)[0])),
            ("screen.png", samples.upload_bytes("screenshot", 3)), ("slice.dcm", buf.getvalue())]


@pytest.fixture(scope="module", params=["fitted", "legacy", "gate only"])
def any_detector(request, tiny_experiment, tmp_path_factory):
    """A Predictor of the tiny experiment with each detector kind: its fitted ``ood.npz``; analysed before
    that existed (no ``ood.npz``: the legacy rule on its maps and SOM); nothing stored (the gate alone)."""
    path = tiny_experiment
    if request.param != "fitted":
        path = shutil.copytree(tiny_experiment, tmp_path_factory.mktemp("kinds") / "exp")
        exp = runs.read_experiment(path)
        doomed = [exp.artifact_path(runs.OOD), exp.artifact_path(runs.OOD_INFO)]
        if request.param == "gate only":
            doomed += [exp.artifact_path(n, a) for a in exp.backbones for n in (runs.PROJECTIONS, runs.SOM)]
        for f in doomed:
            f.unlink()
    return request.param, inference.Predictor(runs.read_experiment(path))


NUMBER = re.compile(r"\d+(?:\.\d+)?")


def same_sentences(got: list[str], want: list[str]) -> None:
    """The same sentences, their numbers equal up to the float noise between a batched and a one-image
    forward pass (a distance of 1813.855 may print as .85 or .86)."""
    assert [NUMBER.sub("#", s) for s in got] == [NUMBER.sub("#", s) for s in want]
    numbers = [[float(x) for s in side for x in NUMBER.findall(s)] for side in (got, want)]
    assert numbers[0] == pytest.approx(numbers[1], rel=1e-4, abs=0.011)


def test_batch_gives_the_diagnose_verdict_for_every_detector_kind(any_detector):
    kind, predictor = any_detector
    files = _verdict_files()
    result = batch.BatchPredictor(predictor, batch_size=2).run([batch.Source(n, (lambda d=d: d)) for n, d in files])
    assert not result.bad and [r.name for r in result.rows] == [n for n, _ in files]
    for (name, data), row in zip(files, result.rows):
        decoded = decode_upload(data, name)
        one = predictor.predict(decoded.gray, name, image=decoded).verdict  # what the Diagnose page shows
        got = row.verdict
        assert (got.status, got.checked, got.gate) == (one.status, one.checked, one.gate), name
        assert (got.detector, got.false_alarm_rate, got.percentile is None) == (
            one.detector, one.false_alarm_rate, one.percentile is None)
        if one.score is not None:
            assert got.score == pytest.approx(one.score, rel=1e-4, abs=1e-5)
        same_sentences(got.reasons, one.reasons)
        assert row.ood == one.flag
        same_sentences([row.ood_reason], [one.reason])
    rows = {r.name: r for r in result.rows}
    # the gate reads the decoder's colour statistics and DICOM modality in a batch too
    assert rows["holiday.jpg"].ood and "in colour" in rows["holiday.jpg"].ood_reason
    assert rows["slice.dcm"].ood and "modality is CT" in rows["slice.dcm"].ood_reason
    assert rows["screen.png"].ood and rows["phantom.png"].verdict.gate.passed
    phantom = rows["phantom.png"].verdict
    if kind == "fitted":
        assert phantom.checked and phantom.detector == predictor.ood_detector.detector
    elif kind == "legacy":
        assert phantom.checked and phantom.detector == LEGACY and phantom.false_alarm_rate == pytest.approx(
            1 - LEGACY_PERCENTILE / 100)
    else:
        assert phantom.flag is None and rows["phantom.png"].ood is None and "No feature-space check" in phantom.reason


# ---------------------------------------------------------------- inputs and bad files

def test_folder_bad_files_are_listed_and_the_rest_scored(predictor, folder, tmp_path, films):
    big = make_zip({f"x{i}.png": png_bytes(films[i][1]) for i in range(3)})
    (tmp_path / "big.zip").write_bytes(big)
    with batch.collect_inputs([folder, tmp_path / "big.zip", tmp_path / "missing.png"], max_members=2) as inputs:
        assert inputs.ignored == 1  # README.txt; .DS_Store is litter
        result = batch.BatchPredictor(predictor, batch_size=4).run(inputs)
    assert len(result.rows) == GOOD_IN_FOLDER
    assert {Path(r.name).name for r in result.rows} == {n for n, _ in films[:4]} | {"scan"}
    bad = {Path(b.name).name: b.message for b in result.bad}
    assert set(bad) == {"big.zip", "missing.png", "garbage.png", "empty.png", "notes.png", "truncated.jpg"}
    assert "over the limit of 2 files" in bad["big.zip"]
    assert "no such file" in bad["missing.png"]
    assert "empty" in bad["empty.png"]
    assert "not a readable image" in bad["notes.png"] and "not a readable image" in bad["garbage.png"]
    assert all(m for m in bad.values())


def test_zip_round_trip_equals_files(predictor, films, tmp_path):
    members = {f"set/{name}": png_bytes(gray) for name, gray in films[:3]}
    members.update({"__MACOSX/set/._a.png": b"junk", "set/notes.txt": b"ignored", "inner.zip": make_zip({"a.png": b"x"}),
                    "set/bad.png": b"\x89PNG broken", "LICENSE": b"no suffix, not a DICOM: ignored",
                    "set/scan": make_dicom(films[4][1].astype(np.uint16) * 16, bits=12)})
    data = make_zip(members)
    (tmp_path / "cases.zip").write_bytes(data)
    scorer = batch.BatchPredictor(predictor, batch_size=8)
    with batch.collect_inputs([tmp_path / "cases.zip"]) as inputs:
        assert inputs.ignored == 2
        from_zip = scorer.run(inputs)
    names = [f"set/{n}" for n, _ in films[:3]] + ["set/scan"]
    assert [r.name for r in from_zip.rows] == [f"{tmp_path / 'cases.zip'}:{n}" for n in names]
    assert sorted(b.name.split(":")[-1] for b in from_zip.bad) == ["inner.zip", "set/bad.png"]
    direct = scorer.score([(n, decode_upload(png_bytes(g), n).gray) for n, g in films[:3]])
    for a, b in zip(from_zip.rows, direct):
        for arch in scorer.archs:
            np.testing.assert_allclose(a.backbones[arch].probs, b.backbones[arch].probs, rtol=1e-5, atol=1e-7)
    # the same archive uploaded as bytes (the app's path)
    uploaded = scorer.run(batch.sources_from_bytes([("cases.zip", data)]))
    assert [r.name for r in uploaded.rows] == [f"cases.zip:{n}" for n in names]


def test_zip_limits_and_lying_sizes(films):
    data = make_zip({f"x{i}.png": png_bytes(films[i][1]) for i in range(3)})
    sizes = [i.file_size for i in zipfile.ZipFile(io.BytesIO(data)).infolist()]
    total = sum(sizes)
    refused = batch.open_zip(data, "up.zip", max_bytes=total - 1)
    assert not refused.sources and "over the limit" in refused.bad[0].message and "MiB" in refused.bad[0].message
    one_big = batch.open_zip(data, "up.zip", max_member_bytes=min(sizes))
    assert len(one_big.sources) + len(one_big.bad) == 3 and any("limit per file" in b.message for b in one_big.bad)
    assert "not a readable ZIP" in batch.open_zip(b"PK\x03\x04 not really", "fake.zip").bad[0].message
    # a member that inflates past its declared size is cut off at the declared size + 1 byte and refused
    ok = batch.open_zip(data, "up.zip")
    info = ok._archives[0].infolist()[0]
    info.file_size = 100
    with pytest.raises(ImageDecodeError, match="up.zip:x0.png"):
        ok.sources[0].read()
    ok.close()


def test_collect_inputs_on_an_empty_folder(tmp_path):
    (tmp_path / "e").mkdir()
    inputs = batch.collect_inputs([tmp_path / "e"])
    assert not inputs.sources and "holds no image files" in inputs.bad[0].message


# ---------------------------------------------------------------- contact sheet

def test_contact_sheet(predictor, films):
    scorer = batch.BatchPredictor(predictor, batch_size=8)
    rows = scorer.score(films[:5])
    png = batch.contact_sheet_png(rows, scorer.names, columns=2, tile=64)
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.mode == "RGB"
    tile_w, n_archs = 64 * 3, 2
    assert img.width == 2 * (tile_w + 6) + 6
    assert img.height == 3 * (64 + 15 * (1 + n_archs) + 4 + 6) + 6
    arr = np.asarray(img)
    # the overlay half of the first tile is coloured (a heat map), the film is gray
    film_part, heat_part = arr[6:70, 6:70], arr[6:70, 70:134]
    assert np.ptp(film_part.astype(int), axis=2).max() == 0
    assert np.ptp(heat_part.astype(int), axis=2).max() > 30
    heat = batch.cam_heat(rows[0].backbones["densenet121"], 32)
    assert heat.shape == (32, 32) and heat.min() >= 0 and heat.max() <= 1
    # a flagged row is withheld as on Diagnose: grey panels, no heat map, no class named
    rows[0].ood = True
    arr = np.asarray(Image.open(io.BytesIO(batch.contact_sheet_png(rows[:1], scorer.names, tile=64, labels=["x.png"]))))
    panel = arr[6:70, 70:134].reshape(-1, 3)
    assert np.ptp(panel.astype(int), axis=1).max() == 0  # gray: no colour map
    assert (panel == batch.sheet.WITHHELD_GREY).all(axis=1).mean() > 0.9


# ---------------------------------------------------------------- command line

def test_cli_rows_stderr_and_heatmaps(tiny_experiment, folder, tmp_path, films, capsys):
    (tmp_path / "more.zip").write_bytes(make_zip({f"z/{n}": png_bytes(g) for n, g in films[5:]}))
    out, heat = tmp_path / "res" / "preds.csv", tmp_path / "heat"
    rc = predict_cli.main([str(tiny_experiment), str(folder), str(tmp_path / "more.zip"), str(tmp_path / "nope.dcm"),
                           "--out", str(out), "--heatmaps", str(heat), "--batch-size", "3", "--quiet"])
    assert rc == 0
    captured = capsys.readouterr()
    with open(out, newline="") as fh:
        every = list(csv.DictReader(fh))
    rows = [r for r in every if r["error"] == ""]
    errors = {Path(r["file"]).name: r["error"] for r in every if r["error"]}
    assert len(rows) == GOOD_IN_FOLDER + 2
    # every unreadable file is a row with its message (and one line on stderr), nothing else filled in
    assert set(errors) == {"nope.dcm", "garbage.png", "empty.png", "notes.png", "truncated.jpg"}
    assert "no such file" in errors["nope.dcm"] and "not a readable image" in errors["notes.png"]
    assert all(r["densenet121::top"] == "" and r["ood"] == "" for r in every if r["error"])
    assert {Path(r["file"].split(":")[-1]).name for r in rows} == {n for n, _ in films[:4]} | {"scan"} | {n for n, _ in films[5:]}
    skipped = [line for line in captured.err.splitlines() if line.startswith("covidviz.predict: skipped")]
    assert len(skipped) == BAD_IN_FOLDER + 1, captured.err
    assert sum("nope.dcm" in line for line in skipped) == 1 and sum("notes.png" in line for line in skipped) == 1
    assert f"scored {GOOD_IN_FOLDER + 2} file(s), {BAD_IN_FOLDER + 1} unreadable" in captured.out
    exp = runs.read_experiment(tiny_experiment)
    predictor = inference.Predictor(exp)
    scorer = batch.BatchPredictor(predictor)
    assert list(every[0]) == batch.export.columns(scorer)
    # the identity of the model and its thresholds on every row
    assert {(r["experiment"], r["backbones"], r["operating_point"]) for r in every} == {
        (exp.name, " ".join(exp.backbones), "youden")}
    assert {r["trained"] for r in every} == {exp.info.completed or exp.info.created} and every[0]["trained"]
    names = exp.labels.names
    for arch in exp.backbones:
        for j, c in enumerate(names):
            raw = scorer.thresholds(arch)[j]
            assert {r[f"{arch}::raw_threshold::{c}"] for r in rows} == {str(round(raw, 6))}
    assert all(r["densenet121::top"] in names and r["tinycnn::top"] in names for r in rows)
    assert all(abs(sum(float(r[f"tinycnn::p::{c}"]) for c in names) - 1) < 1e-4 for r in rows)
    for r in rows:  # the call is p >= the threshold on the same calibrated scale, as on Diagnose
        for arch in exp.backbones:
            for c in names:
                p, t = float(r[f"{arch}::p::{c}"]), float(r[f"{arch}::threshold::{c}"])
                if abs(p - t) > 1e-5:
                    assert r[f"{arch}::call::{c}"] == str(p >= t), (r["file"], arch, c, p, t)
    assert {r["ood"] for r in rows} <= {"True", "False"}
    assert {r["ood_kind"] for r in rows} <= set(batch.export.OOD_KINDS)
    for r in rows:  # the lung columns: a share in [0, 1] per backbone and the lungs' share of the film, or empty
        for col in ("densenet121::lung_share", "tinycnn::lung_share", "lung_area"):
            assert r[col] == "" or 0.0 <= float(r[col]) <= 1.0
    assert sum(r["densenet121::lung_share"] != "" for r in rows) >= 4 and all(r["lung_quality"] != "" for r in rows)
    sheets = sorted(heat.glob("contact-*.png"))
    assert len(sheets) == 1 and Image.open(sheets[0]).width > 0
    assert not list(out.parent.glob(".*partial"))
    # pandas reads it as it is
    import pandas as pd

    frame = pd.read_csv(out)
    assert len(frame) == len(every) and frame["error"].notna().sum() == len(errors)


def test_cli_exit_codes(tiny_experiment, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    assert predict_cli.main([str(tmp_path / "no-such-exp"), str(bad), "--out", str(tmp_path / "a.csv")]) == 2
    assert "cannot use experiment" in capsys.readouterr().err
    assert predict_cli.main([str(tiny_experiment), str(bad), "--out", str(tmp_path / "b.csv"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "skipped" in err and "no file could be scored" in err
    lines = (tmp_path / "b.csv").read_text().splitlines()
    assert lines[0].startswith("experiment,trained,backbones,operating_point,file,error,")
    assert len(lines) == 2 and "bad.png" in lines[1] and "not a readable image" in lines[1]  # the bad file's row
    assert predict_cli.main([str(tiny_experiment)]) == 2  # no inputs: usage error
    assert predict_cli.main([str(tiny_experiment), str(bad), "--batch-size", "0"]) == 2
