"""The Batch page (``app_pages/batch.py``) through AppTest on the trained tiny experiment, and its data
shaping (``covidviz/views/batch.py``) on hand-made scored rows."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from covidviz import batch, runs
from covidviz.data.imageio import read_image
from covidviz.ui.state import scoped
from covidviz.views import batch as view

REPO = Path(__file__).resolve().parents[1]
PAGE = str(REPO / "app_pages" / "batch.py")
APP = str(REPO / "app.py")

pytestmark = pytest.mark.usefixtures("app_like_server")


def key(name: str, folder: str = "tiny") -> str:
    return scoped(SimpleNamespace(path=Path(folder)), name)


def png(gray: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, format="PNG")
    return buf.getvalue()


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


# ---------------------------------------------------------------- views (no model)

NAMES = ["COVID-19", "Normal", "Pneumonia"]


def fake_run(n: int = 3, thresholds=(0.5, 0.5, 0.5)) -> view.BatchRun:
    """A ``BatchRun`` of ``n`` hand-made rows over two backbones (a fake predictor: no model is run)."""
    predictor = SimpleNamespace(
        archs=["densenet121", "tinycnn"], models={"densenet121": None, "tinycnn": None}, names=NAMES, task="multiclass",
        temperature=lambda arch: None,
        operating_point=lambda arch, cls, point: None if thresholds[NAMES.index(cls)] is None
        else SimpleNamespace(threshold=thresholds[NAMES.index(cls)]))
    scorer = batch.BatchPredictor(predictor, ood_fn=lambda *a: (False, ""))
    rows = []
    for i in range(n):
        backbones = {}
        for k, arch in enumerate(scorer.archs):
            p = np.roll(np.array([0.7, 0.2, 0.1]), i + k)
            thr = scorer._thresholds[arch]
            backbones[arch] = batch.BackboneScore(p, p, int(np.argmax(p)), [None if t is None else bool(p[j] >= t)
                                                                            for j, t in enumerate(thr)],
                                                  list(thr), int(np.argmax(p)), np.ones((4, 4), np.float32))
        ood = [False, True, None][i % 3]
        rows.append(batch.ScoredImage(f"img-{i}.png" if i != 2 else "img-0.png", np.full((32, 32), 100, np.uint8),
                                      backbones, ood, "far from the training images" if ood else ""))
    return view.BatchRun(scorer, rows, [batch.BadFile("broken.png", "broken.png is not a readable image")], ignored=2)


def test_display_table_has_one_row_per_file_and_every_backbone():
    run = fake_run()
    t = view.display_table(run)
    assert list(t[view.FILE_COLUMN]) == ["img-0.png", "img-1.png", "img-0.png"]
    dn, tiny = "DenseNet121", "Tiny CNN (test model)"
    assert list(t.columns) == [view.FILE_COLUMN,
                               f"{dn}: most likely", *(f"{dn}: P({c})" for c in NAMES), f"{dn}: positive calls",
                               f"{dn}: on the lungs",
                               f"{tiny}: most likely", *(f"{tiny}: P({c})" for c in NAMES), f"{tiny}: positive calls",
                               f"{tiny}: on the lungs", view.LUNG_AREA_COLUMN, view.OOD_COLUMN, view.REASON_COLUMN]
    assert view.lung_columns(run) == [f"{dn}: on the lungs", f"{tiny}: on the lungs", view.LUNG_AREA_COLUMN]
    assert view.probability_columns(run) == [c for c in t.columns if ": P(" in c]
    assert list(t[f"{dn}: most likely"]) == ["COVID-19", "Normal", "Pneumonia"]
    assert list(t[f"{tiny}: most likely"]) == ["Normal", "Pneumonia", "COVID-19"]
    assert t.loc[0, f"{dn}: P(COVID-19)"] == pytest.approx(0.7)
    assert list(t[f"{dn}: positive calls"]) == ["COVID-19", "Normal", "Pneumonia"]
    assert list(t[view.OOD_COLUMN]) == ["No", "Yes", "Not checked"]
    assert t.loc[1, view.REASON_COLUMN] == "far from the training images"
    # no class reaches a threshold: "none"; no threshold stored at all: "—"
    assert set(view.display_table(fake_run(thresholds=(0.99, 0.99, 0.99)))[f"{dn}: positive calls"]) == {view.CALL_NONE}
    assert set(view.display_table(fake_run(thresholds=(None, None, None)))[f"{dn}: positive calls"]) == {"—"}


def test_csv_has_the_command_line_columns():
    run = fake_run()
    rows = list(csv.DictReader(io.StringIO(view.csv_bytes(run).decode("utf-8"))))
    assert list(rows[0]) == run.scorer.columns()
    assert [r["file"] for r in rows] == ["img-0.png", "img-1.png", "img-0.png"]
    assert float(rows[0]["densenet121::p::COVID-19"]) == pytest.approx(0.7)
    assert [r["ood"] for r in rows] == ["False", "True", ""]
    assert rows[0]["densenet121::call::COVID-19"] == "True" and rows[0]["densenet121::call::Normal"] == "False"


def test_lung_columns_in_the_table_the_csv_and_the_summary():
    from covidviz.cam.lungshare import BELOW, LungWeight

    run = fake_run()
    run.rows[1].lung_area, run.rows[1].lung_quality = 0.4, 0.9
    run.rows[1].backbones["densenet121"].lung_weight = LungWeight(0.2, 0.4, BELOW, {BELOW: 0.5})
    run.rows[1].backbones["tinycnn"].lung_weight = LungWeight(0.7, 0.4, BELOW, {BELOW: 0.1})
    t = view.display_table(run)
    assert t.loc[1, "DenseNet121: on the lungs"] == pytest.approx(20.0) and t.loc[1, view.LUNG_AREA_COLUMN] == 40.0
    assert t[view.LUNG_AREA_COLUMN].isna().tolist() == [True, False, True]  # no reliable lungs: empty, not 0
    rows = list(csv.DictReader(io.StringIO(view.csv_bytes(run).decode("utf-8"))))
    assert rows[1]["densenet121::lung_share"] == "0.2" and rows[1]["densenet121::lung_outside"] == BELOW
    assert rows[1]["tinycnn::lung_share"] == "0.7" and rows[1]["tinycnn::lung_outside"] == ""  # mostly inside
    assert rows[1]["lung_area"] == "0.4" and rows[1]["lung_quality"] == "0.9" and rows[0]["lung_area"] == ""
    assert "**1** with a heat map lying mostly outside the lungs" in view.summary(run)
    assert "outside the lungs" not in view.summary(fake_run())


def test_bad_files_summary_and_sheet_choice():
    run = fake_run()
    bad = view.bad_table(run)
    assert list(bad.columns) == [view.FILE_COLUMN, "Problem"] and bad.iloc[0, 0] == "broken.png"
    s = view.summary(run)
    assert "**3** file(s) scored with DenseNet121 and Tiny CNN (test model)" in s
    assert "**1** could not be used" in s and "**1** unlike the training X-rays" in s and "2 non-image" in s
    assert view.file_labels(run) == ["img-0.png", "img-1.png", "img-0.png (2)"]
    assert view.default_sheet(run) == [0, 1, 2] and view.default_sheet(fake_run(10)) == list(range(view.SHEET_DEFAULT))
    assert view.sheet_png(run, []) is None
    sheet = Image.open(io.BytesIO(view.sheet_png(run, [2, 0])))
    assert sheet.size[0] > sheet.size[1] > 160
    assert len(view.sheet_rows(fake_run(40), list(range(40)))) == view.SHEET_MAX
    assert view.file_name("demo", "predictions", "csv") == "covidviz-batch-demo-predictions.csv"


def test_limits_are_stated_and_enforced():
    text = view.limits_text(50)
    assert f"at most {view.MAX_IMAGES} images" in text and "50 MB per uploaded file" in text
    assert "200 MB of uploads" in text and "1 GB uncompressed per ZIP" in text and view.CLI_COMMAND in text
    assert "per uploaded file" not in view.limits_text(None)
    assert view.upload_problem([10] * view.MAX_IMAGES) is None
    assert f"at most {view.MAX_IMAGES} images" in view.upload_problem([10] * (view.MAX_IMAGES + 1))
    assert "at most 200 MB" in view.upload_problem([view.MAX_UPLOAD_BYTES // 2, view.MAX_UPLOAD_BYTES // 2 + 1])
    inputs = batch.Inputs(sources=[batch.Source(f"f{i}.png", lambda: b"") for i in range(5)])
    view.cap_sources(inputs, 3)
    assert [s.name for s in inputs.sources] == ["f0.png", "f1.png", "f2.png"]
    assert len(inputs.bad) == 1 and "2 image(s) not scored, from f3.png on" in inputs.bad[0].message
    assert view.ZIP_LIMITS["max_members"] == view.MAX_IMAGES
    assert view.upload_key("a", 1, [("id", "x.png", 3)]) != view.upload_key("a", 1, [("id2", "x.png", 3)])


# ---------------------------------------------------------------- the page (AppTest)

@pytest.fixture(scope="module")
def exp(tiny_experiment):
    return runs.read_experiment(tiny_experiment)


@pytest.fixture(scope="module")
def uploads(exp):
    """Two training films as PNGs, a corrupt 'PNG', and a ZIP with two more films, a text file and litter."""
    images = exp.images()
    train = images.index[images["split"] == "train"][:4]
    films = [png(read_image(images.loc[i, "path"])) for i in train]
    archive = make_zip({"set/a.png": films[2], "set/b.png": films[3], "set/notes.txt": b"readme",
                        "__MACOSX/set/._a.png": b"junk"})
    return [("one.png", films[0], "image/png"), ("two.png", films[1], "image/png"),
            ("broken.png", b"\x89PNG not really an image" * 4, "image/png"), ("films.zip", archive, "application/zip")]


@pytest.fixture
def page(tiny_experiment, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from covidviz import ui

    monkeypatch.setenv(ui.RUNS_ENV, str(tiny_experiment.parent))
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_page_before_an_upload_states_the_limits(page, exp):
    assert page.title[0].value == f"Batch: {exp.name}"
    up = page.file_uploader(key=key("batch_upload"))
    assert up.accept_multiple_files
    assert any(f"at most {view.MAX_IMAGES} images" in c.value for c in page.caption)
    assert any(view.UPLOAD_PROMPT in i.value for i in page.info)
    assert not page.dataframe and not page.get("download_button")


def test_page_scores_files_and_zips_lists_bad_files_and_draws_the_sheet(page, exp, uploads, monkeypatch):
    calls = []
    real_run = batch.BatchPredictor.run
    monkeypatch.setattr(batch.BatchPredictor, "run", lambda self, *a, **k: calls.append(1) or real_run(self, *a, **k))
    at = page.file_uploader(key=key("batch_upload")).set_value(uploads).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert [s.value for s in at.subheader] == ["Predictions", "Files that could not be used", "Heat-map contact sheet"]
    table, bad = at.dataframe[0].value, at.dataframe[1].value
    assert list(table[view.FILE_COLUMN]) == ["one.png", "two.png", "films.zip:set/a.png", "films.zip:set/b.png"]
    for arch in exp.backbones:
        probs = table[[view.prob_column(arch, c) for c in exp.labels.names]].to_numpy()
        assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
        assert set(table[view.top_column(arch)]) <= set(exp.labels.names)
    assert set(table[view.OOD_COLUMN]) <= set(view.OOD_LABELS.values())
    assert table[[view.lung_column(a) for a in exp.backbones]].stack().dropna().between(0, 100).all()
    assert list(bad[view.FILE_COLUMN]) == ["broken.png"] and "broken.png" in bad["Problem"][0]
    assert any("**4** file(s) scored" in m.value and "**1** could not be used" in m.value for m in at.markdown)
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == ["Download the table (CSV)", "Download the contact sheet (PNG)"]
    assert len(at.get("image")) == 1
    assert at.multiselect(key=key("batch_sheet")).value == [0, 1, 2, 3]
    assert not at.get("progress")  # the bar is gone once the batch is scored
    assert len(calls) == 1

    # picking rows for the sheet redraws it without scoring again
    at.multiselect(key=key("batch_sheet")).set_value([3]).run()
    assert not at.exception and len(calls) == 1
    assert len(at.get("image")) == 1
    at.multiselect(key=key("batch_sheet")).set_value([]).run()
    assert not at.get("image") and [b.proto.label for b in at.get("download_button")] == ["Download the table (CSV)"]
    assert len(calls) == 1


def test_page_refuses_too_many_files_before_reading_them(page, monkeypatch):
    monkeypatch.setattr(view, "MAX_IMAGES", 2)
    files = [(f"f{i}.png", b"x", "image/png") for i in range(3)]
    at = page.file_uploader(key=key("batch_upload")).set_value(files).run()
    assert not at.exception
    assert "3 files uploaded: the page scores at most 2 images" in at.error[0].value
    assert not at.dataframe


def test_page_says_so_when_the_models_cannot_be_loaded(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from covidviz import ui
    from tests.app_fixtures import make_fake_experiment

    make_fake_experiment(tmp_path / "runs", "fake")  # weights that do not fit a real DenseNet121
    monkeypatch.setenv(ui.RUNS_ENV, str(tmp_path / "runs"))
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    at.file_uploader(key=key("batch_upload", "fake")).set_value(("x.png", png(np.zeros((8, 8), np.uint8)), "image/png")).run()
    assert not at.exception, [e.value for e in at.exception]
    assert "could not be scored with experiment 'fake'" in at.error[0].value


def test_the_router_lists_the_batch_page(tiny_experiment, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from covidviz import ui

    monkeypatch.setenv(ui.RUNS_ENV, str(tiny_experiment.parent))
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("app_pages/batch.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value.startswith("Batch: ")
