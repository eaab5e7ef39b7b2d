"""One out-of-distribution verdict for Batch and Diagnose: the same files (a colour photo, noise, a lateral
film, a CT slice, a screenshot, a frontal film) go through what the Diagnose page calls
(``decode_upload`` then ``Predictor.predict(gray, name, image=decoded)``, as ``ui.diagnose_cache`` does)
and through ``BatchPredictor`` (the Batch page and ``train.py predict``), and get the same verdict: the
same flag and the same kind (``batch.ood_kind``), from ONE call of the same detector with the same
arguments. The Batch page shows that kind as its badge.

Lateral films: ``../shared/data/views`` when present (``needs_data``); everywhere a generated stand-in,
a phantom film in a DICOM file whose ``ViewPosition`` says lateral (the view check reads the tag)."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image

from covidviz import batch, inference, runs
from covidviz.anatomy.view import CT, LATERAL, NOT_CHEST
from covidviz.data.imageio import DecodedImage, decode_upload
from covidviz.data.synthetic import render_phantom
from covidviz.ood import samples
from covidviz.ui.state import scoped
from covidviz.views import batch as view
from tests.dicom_factory import make_dicom

PAGE = str(Path(__file__).resolve().parents[1] / "app_pages" / "batch.py")


def png(gray: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, format="PNG")
    return buf.getvalue()


def dicom(gray: np.ndarray, **tags) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(make_dicom(gray.astype(np.uint16) * 16, bits=12)))
    for k, v in tags.items():
        setattr(ds, k, v)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def generated_files() -> list[tuple[str, bytes]]:
    """What a user might drop on either page: a colour photo, noise, a lateral film (stand-in), a CT slice,
    a screenshot and a frontal phantom film (the tiny experiment's own kind of image)."""
    film = render_phantom(7, (), size=256)[0]
    noise = np.random.default_rng(3).integers(0, 256, (300, 260), dtype=np.uint8)
    return [("holiday.jpg", samples.upload_bytes("photo", 5)), ("noise.png", png(noise)),
            ("lateral.dcm", dicom(film, ViewPosition="LL", BodyPartExamined="CHEST")),
            ("slice.dcm", dicom(film, Modality="CT")), ("screen.png", samples.upload_bytes("screenshot", 3)),
            ("frontal.png", png(render_phantom(101, (), size=256)[0]))]


@pytest.fixture(scope="module")
def predictor(tiny_experiment):
    return inference.Predictor(runs.read_experiment(tiny_experiment))


def diagnose_verdict(predictor, name: str, data: bytes):
    """The verdict the Diagnose page shows for an upload (``ui.diagnose_cache``: decode, then predict)."""
    decoded = decode_upload(data, name)
    return predictor.predict(decoded.gray, name, methods=("cam",), image=decoded).verdict


@pytest.fixture
def spy(predictor, monkeypatch):
    """Every call of the experiment's detector: (image, features, info)."""
    seen = []
    real = predictor.ood_detector.verdict

    def recording(image=None, features=None, info=None):
        seen.append((image, features, info))
        return real(image, features, info)

    monkeypatch.setattr(predictor.ood_detector, "verdict", recording)
    return seen


def assert_same_verdicts(predictor, files, spy) -> dict:
    """Feed ``files`` through both paths; assert one detector call each, with the same arguments, and the
    same flag and kind; returns name -> kind."""
    result = batch.BatchPredictor(predictor, batch_size=4).run([batch.Source(n, (lambda d=d: d)) for n, d in files])
    assert not result.bad and [r.name for r in result.rows] == [n for n, _ in files]
    in_batch = list(spy)
    assert len(in_batch) == len(files)  # one verdict per file, from the experiment's one detector
    kinds = {}
    for (name, data), row, (b_image, b_feats, b_info) in zip(files, result.rows, in_batch):
        spy.clear()
        one = diagnose_verdict(predictor, name, data)
        assert len(spy) == 1
        d_image, d_feats, d_info = spy[0]
        # the same function, the same arguments: the decoded upload itself, every backbone's features
        assert isinstance(b_image, DecodedImage) and isinstance(d_image, DecodedImage)
        assert np.array_equal(b_image.gray, d_image.gray) and b_image.info == d_image.info, name
        assert b_info == d_info is None and set(b_feats) == set(d_feats) == set(predictor.archs)
        for arch in predictor.archs:
            np.testing.assert_allclose(b_feats[arch], d_feats[arch], rtol=1e-4, atol=1e-5)
        # the same verdict: flag, kind, gate, view
        assert row.ood == one.flag, (name, row.verdict.reasons, one.reasons)
        assert batch.ood_kind(row.verdict) == batch.ood_kind(one), (name, row.verdict.reasons, one.reasons)
        assert row.verdict.status == one.status and row.verdict.gate.view == one.gate.view, name
        assert row.verdict.gate.summary == one.gate.summary, name
        kinds[name] = batch.ood_kind(one)
    return kinds


def test_batch_and_diagnose_give_the_same_verdict(predictor, spy):
    kinds = assert_same_verdicts(predictor, generated_files(), spy)
    # and what they say: the input gate and its view check, then the detector
    assert kinds["holiday.jpg"] == NOT_CHEST and kinds["screen.png"] == NOT_CHEST
    assert kinds["noise.png"] in (NOT_CHEST, batch.export.UNLIKE_TRAINING, CT)
    assert kinds["lateral.dcm"] == LATERAL and kinds["slice.dcm"] == CT
    assert kinds["frontal.png"] in (batch.export.IN_DISTRIBUTION, batch.export.UNLIKE_TRAINING)
    assert sum(k != batch.export.IN_DISTRIBUTION for k in kinds.values()) >= 5


def test_the_batch_page_badges_say_the_diagnose_verdict(predictor, tiny_experiment, monkeypatch, app_like_server):
    """The Batch page (AppTest) shows each file's Diagnose verdict as its badge, greys the flagged rows and
    withholds their calls; the CSV says the same kind."""
    from streamlit.testing.v1 import AppTest

    from covidviz import ui
    from covidviz.ui.batch_cache import BATCH_CACHE

    files = generated_files()
    want = {name: view.BADGES[batch.ood_kind(diagnose_verdict(predictor, name, data))] for name, data in files}
    monkeypatch.setenv(ui.RUNS_ENV, str(tiny_experiment.parent))
    at = AppTest.from_file(PAGE, default_timeout=180).run()
    exp = SimpleNamespace(path=Path(tiny_experiment.name))
    at.file_uploader(key=scoped(exp, "batch_upload")).set_value([(n, d, "application/octet-stream")
                                                                  for n, d in files]).run()
    assert not at.exception, [e.value for e in at.exception]
    table = at.table[0].value
    assert list(table[view.FILE_COLUMN]) == sorted(want, key=view.natural_key)
    assert dict(zip(table[view.FILE_COLUMN], table[view.VERDICT_COLUMN])) == want
    flagged = table[view.VERDICT_COLUMN].str.startswith("⚠")
    for arch in predictor.archs:
        assert (table.loc[flagged, view.top_column(arch)] == view.WITHHELD).all()
        assert (table.loc[flagged, view.call_column(arch)] == "").all()
    run = at.session_state[BATCH_CACHE]["run"]
    frame = pd.read_csv(io.BytesIO(view.csv_bytes(run)))
    assert {f: view.BADGES[k] for f, k in zip(frame["file"], frame["ood_kind"])} == want
    assert frame.loc[frame["ood"] == True, "densenet121::top"].notna().all()  # noqa: E712 - numbers kept


@pytest.mark.needs_data
def test_real_lateral_films_and_frontal_films_get_the_same_verdict(predictor, spy, shared_data):
    meta = shared_data / "views" / "metadata.csv"
    if not meta.exists():
        pytest.skip("../shared/data/views not found")
    df = pd.read_csv(meta)
    lateral = sorted(df.loc[df["kind"] == "lateral", "path"])[:4]
    assert "lateral/lateral_03.png" in set(df["path"])
    lateral = sorted(set(lateral) | {"lateral/lateral_03.png"})
    covid3 = pd.read_csv(shared_data / "covid3" / "metadata.csv")
    frontal = [shared_data / "covid3" / p for p in covid3["path"][:2]]
    files = [(Path(p).name, (shared_data / "views" / p).read_bytes()) for p in lateral]
    files += [(p.name, p.read_bytes()) for p in frontal]
    files += [("holiday.jpg", samples.upload_bytes("photo", 5))]
    kinds = assert_same_verdicts(predictor, files, spy)
    assert kinds["lateral_03.png"] == LATERAL and kinds["holiday.jpg"] == NOT_CHEST
