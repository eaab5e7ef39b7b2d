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
from covidviz.ui.batch_cache import BATCH_CACHE
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
ARCHS = ["densenet121", "tinycnn"]
DN, TINY = "DenseNet121", "Tiny CNN (test model)"


def fake_predictor(thresholds=(0.5, 0.5, 0.5), aucs=None):
    """A stand-in ``Predictor``: no model, no temperature (calibrated = raw), the given thresholds, and
    per class a test AUC with its CI (``aucs``: class -> (auc, low, high); None: not analysed)."""
    def op(arch, cls, point):
        t = thresholds[NAMES.index(cls)]
        return None if t is None else SimpleNamespace(threshold=t)

    def calls(b, point):
        out = []
        for j, cls in enumerate(NAMES):
            t = thresholds[j]
            out.append({"class": cls, "prob": float(b.probs[j]), "raw_prob": float(b.raw_probs[j]), "threshold": t,
                        "raw_threshold": t, "positive": None if t is None else bool(b.raw_probs[j] >= t), "test": {}})
        return out

    analysis = None
    if aucs is not None:
        analysis = SimpleNamespace(backbone=lambda arch: SimpleNamespace(
            metrics=lambda cls: SimpleNamespace(auc=aucs[cls][0], ci_low=aucs[cls][1], ci_high=aucs[cls][2])))
    exp = SimpleNamespace(name="fake-exp", info=SimpleNamespace(completed="2026-12-05T05:00:00", created=None))
    return SimpleNamespace(archs=ARCHS, models={a: None for a in ARCHS}, names=NAMES, task="multiclass",
                           temperature=lambda arch: None, operating_point=op, calls=calls, analysis=analysis, exp=exp)


def scored(scorer, name: str, probs: dict, ood=False, reason: str = "") -> batch.ScoredImage:
    """A hand-made row: ``probs``: arch -> its three probabilities."""
    backbones = {}
    for arch in scorer.archs:
        p = np.asarray(probs[arch], float)
        thr = scorer.thresholds(arch)
        backbones[arch] = batch.BackboneScore(p, p, int(np.argmax(p)), [None if t is None else bool(p[j] >= t)
                                                                        for j, t in enumerate(thr)],
                                              list(thr), int(np.argmax(p)), np.ones((4, 4), np.float32))
    return batch.ScoredImage(name, np.full((32, 32), 100, np.uint8), backbones, ood, reason)


def fake_run(n: int = 3, thresholds=(0.5, 0.5, 0.5), aucs=None, findings=None) -> view.BatchRun:
    """A ``BatchRun`` of ``n`` hand-made rows over two backbones, named out of order (``img-10`` before
    ``img-2``, a ZIP member), every third one flagged, one not checked; one bad file."""
    scorer = batch.BatchPredictor(fake_predictor(thresholds, aucs), ood_fn=lambda *a: (False, ""))
    names = ["img-10.png", "up.zip:ward/img-2.png", "img-0.png"] + [f"img-{i}.png" for i in range(3, n)]
    rows = []
    for i in range(n):
        p = {arch: np.roll(np.array([0.7, 0.2, 0.1]), i + k) for k, arch in enumerate(ARCHS)}
        ood = [False, True, None][i % 3]
        rows.append(scored(scorer, names[i], p, ood, "far from the training images" if ood else ""))
    return view.BatchRun(scorer, rows, [batch.BadFile("up.zip:ward/broken.png", "up.zip:ward/broken.png is not a "
                                                      "readable image")], ignored=2, findings=findings or {})


def test_table_sorted_by_short_name_with_the_badge_next_and_flagged_rows_withheld():
    run = fake_run()
    t = view.display_table(run)
    assert list(t.columns) == [view.FILE_COLUMN, view.VERDICT_COLUMN,
                               f"{DN} · most likely", f"{DN} · call", f"{DN} · on the lungs",
                               f"{TINY} · most likely", f"{TINY} · call", f"{TINY} · on the lungs"]
    # sorted by name, numbers by value; a ZIP member by its own name (the full one is in the CSV)
    assert list(t[view.FILE_COLUMN]) == ["img-0.png", "img-2.png", "img-10.png"]
    assert [r.name for r in run.rows] == ["img-0.png", "up.zip:ward/img-2.png", "img-10.png"]
    assert list(t[view.VERDICT_COLUMN]) == ["? not checked", "⚠ flagged", "✓ like training"]
    # a flagged row names no class and no call (withheld), the others read as on Diagnose
    flagged = t.iloc[1]
    assert flagged[f"{DN} · most likely"] == view.WITHHELD and flagged[f"{DN} · call"] == "" == flagged[f"{DN} · on the lungs"]
    assert t.loc[2, f"{DN} · most likely"] == "COVID-19 0.70" and t.loc[2, f"{DN} · call"] == "Positive"
    assert t.loc[0, f"{DN} · most likely"] == "Pneumonia 0.70" and t.loc[0, f"{TINY} · most likely"] == "COVID-19 0.70"
    assert t.loc[2, f"{DN} · on the lungs"] == view.NO_LUNGS  # no lung fields: no share, not 0
    # no threshold stored: no call
    assert set(view.display_table(fake_run(thresholds=(None, None, None)))[f"{DN} · call"]) <= {"—", ""}


def test_calls_read_as_on_diagnose_indeterminate_not_reliable_and_the_shortcut_badge():
    from covidviz.views import reliability as rel

    # within the band of its threshold: indeterminate; a class whose AUC CI includes 0.5: not reliable
    run = fake_run(thresholds=(0.69, 0.15, 0.5), aucs={"COVID-19": (0.9, 0.85, 0.95), "Normal": (0.6, 0.45, 0.75),
                                                      "Pneumonia": (0.8, 0.7, 0.9)})
    t = view.display_table(run)
    assert t.loc[2, f"{DN} · call"] == rel.INDETERMINATE           # 0.70 against 0.69
    assert t.loc[2, f"{TINY} · call"] == rel.NOT_RELIABLE          # Normal: its CI reaches 0.5
    # one against the rest: another class reading Positive is named
    assert "also" not in t.loc[2, f"{DN} · call"]
    t2 = view.display_table(fake_run(thresholds=(0.05, 0.05, 0.05)))
    assert t2.loc[2, f"{DN} · call"] == "Positive · also Normal, Pneumonia Positive"
    # the audit's badge beside the affected class's call, on that backbone only
    finding = rel.ShortcutFinding("densenet121", "COVID-19", ("lungs_not_needed",), 0.99)
    t3 = view.display_table(fake_run(findings={("densenet121", "COVID-19"): finding}))
    assert t3.loc[2, f"{DN} · call"] == "Positive · ⚠ shortcut"
    assert "shortcut" not in " ".join(t3[f"{TINY} · call"]) and "shortcut" not in t3.loc[0, f"{DN} · call"]
    # a class named as also Positive gets the badge too; what was found is said once, under the table
    normal = rel.ShortcutFinding("densenet121", "Normal", ("borders",))
    t4 = view.display_table(fake_run(thresholds=(0.05, 0.05, 0.05), findings={("densenet121", "Normal"): normal}))
    assert t4.loc[2, f"{DN} · call"] == "Positive · also Normal, Pneumonia Positive · ⚠ shortcut"
    lines = view.shortcut_lines(fake_run(findings={("densenet121", "COVID-19"): finding,
                                                   ("resnet50", "COVID-19"): finding}))
    assert lines == [f"**{DN}**: {rel.shortcut_badge(finding, with_class=True)}"]  # resnet50: not in this batch
    assert view.shortcut_lines(run) == []
    # the contact sheet's lines say the same
    shortcut = fake_run(findings={("densenet121", "COVID-19"): finding})
    assert view.sheet_captions(shortcut, 2) == [f"{DN}: COVID-19 0.70 · Positive · shortcut",
                                                f"{TINY}: Normal 0.70 · Positive"]
    assert view.sheet_captions(run, 2)[0] == f"{DN}: COVID-19 0.70 · {rel.INDETERMINATE}"


def test_styled_table_greys_flagged_rows_colours_calls_and_lets_words_break():
    run = fake_run()
    styler = view.styled_table(run)
    styler._compute()
    css = {k: dict(v) for k, v in styler.ctx.items()}
    cols = list(view.display_table(run).columns)
    verdict, call = cols.index(view.VERDICT_COLUMN), cols.index(f"{DN} · call")
    assert css[(1, cols.index(f"{DN} · most likely"))]["color"] == view.GREY        # flagged: grey
    assert css[(1, verdict)] == dict(p.split(": ") for p in view.OOD_BADGE_STYLE.split("; "))
    assert css[(2, verdict)]["background-color"] == "#e1f2e3"
    assert css[(2, call)]["color"] == view.READING_COLOURS["Positive"]
    html = styler.to_html()
    assert "overflow-wrap: break-word" in html  # a word longer than its cell breaks, never overflows
    # the badge and the lung share stay on one line
    assert f"td.col{verdict} *" in html and f"td.col{cols.index(f'{DN} · on the lungs')} *" in html
    assert f"td.col{call} " not in html


def test_the_table_is_narrow_enough_for_1280():
    """Every column's longest word fits a 1280 px window's main column (``style.min_table_width``), with
    two backbones, realistic file names and the shortcut badge (words may break anyway: TABLE_STYLES)."""
    from covidviz.views import reliability as rel
    from covidviz.views.style import MAIN_WIDTH, min_table_width

    finding = rel.ShortcutFinding("densenet121", "COVID-19", ("lungs_not_needed",), 0.99)
    run = fake_run(12, thresholds=(0.69, 0.15, 0.5), findings={("densenet121", "COVID-19"): finding})
    for k, r in enumerate(run.rows):
        r.name = f"covid3.zip:hannover/{k:02d}6b5af975.png"
    run = view.BatchRun(run.scorer, run.rows, run.bad, findings=run.findings)
    assert min_table_width(view.display_table(run).set_index(view.FILE_COLUMN)) <= MAIN_WIDTH


def test_short_names_and_natural_order():
    assert view.short_names(["a.zip:x/img.png", "a.zip:y/img.png", "/data/b.png"]) == ["x/img.png", "y/img.png", "b.png"]
    assert view.short_names(["a.zip:img.png", "b.zip:img.png"]) == ["a.zip/img.png", "b.zip/img.png"]
    assert view.short_names(["x.png", "x.png", "x.png"]) == ["x.png", "x.png (2)", "x.png (3)"]
    assert sorted(["img-10", "IMG-9", "img-1"], key=view.natural_key) == ["img-1", "IMG-9", "img-10"]
    # on screen a long name is cut in the middle (the CSV keeps it whole), unless two would read alike
    assert view.shortened("covid-19-pneumonia-15-PA.jpg") == "covid-19-pne…nia-15-PA.jpg"
    assert view.shortened("person1347_virus_2323.png") == "person1347_virus_2323.png"
    run = fake_run()
    run.short = ["covid-19-pneumonia-15-PA.jpg", "b.png", "covid-19-pneumonia-16-PA.jpg"]
    assert view.screen_names(run) == ["covid-19-pne…nia-15-PA.jpg", "b.png", "covid-19-pne…nia-16-PA.jpg"]
    run.short = ["ward-a-film-0001-AAA-chest-pa.png", "b.png", "ward-a-film-0001-BBB-chest-pa.png"]
    assert view.screen_names(run) == run.short


def test_csv_names_the_model_keeps_every_number_and_lists_bad_files():
    import pandas as pd

    run = fake_run()
    frame = pd.read_csv(io.BytesIO(view.csv_bytes(run)))
    assert list(frame.columns) == batch.export.columns(run.scorer)
    assert list(frame.columns[:6]) == ["experiment", "trained", "backbones", "operating_point", "file", "error"]
    assert set(frame["experiment"]) == {"fake-exp"} and set(frame["backbones"]) == {"densenet121 tinycnn"}
    assert set(frame["operating_point"]) == {"youden"} and set(frame["trained"]) == {"2026-12-05T05:00:00"}
    assert set(frame["densenet121::raw_threshold::COVID-19"].dropna()) == {0.5}
    # the scored rows in table order (full names), then the unreadable file with its message
    assert list(frame["file"]) == ["img-0.png", "up.zip:ward/img-2.png", "img-10.png", "up.zip:ward/broken.png"]
    assert frame["error"].isna().tolist() == [True, True, True, False]
    assert "not a readable image" in frame.loc[3, "error"] and frame.loc[3, ["ood", "densenet121::top"]].isna().all()
    # a flagged row keeps its numbers and calls in the CSV (withheld on screen only)
    assert frame.loc[1, "ood"] == True and frame.loc[1, "ood_kind"] == batch.export.FLAGGED  # noqa: E712
    assert frame.loc[1, "densenet121::p::COVID-19"] == pytest.approx(0.1) and frame.loc[1, "densenet121::top"] == "Normal"
    assert frame.loc[2, "densenet121::call::COVID-19"] == True  # noqa: E712
    assert frame.loc[0, "ood_kind"] == batch.export.NOT_CHECKED and frame.loc[2, "ood_kind"] == batch.export.IN_DISTRIBUTION


def test_lung_columns_in_the_table_the_csv_and_the_summary():
    from covidviz.cam.lungshare import BELOW, LungWeight

    run = fake_run()
    k = 2  # img-10.png, in distribution
    run.rows[k].lung_area, run.rows[k].lung_quality = 0.4, 0.9
    run.rows[k].backbones["densenet121"].lung_weight = LungWeight(0.2, 0.4, BELOW, {BELOW: 0.5})
    run.rows[k].backbones["tinycnn"].lung_weight = LungWeight(0.7, 0.4, BELOW, {BELOW: 0.1})
    t = view.display_table(run)
    assert t.loc[k, f"{DN} · on the lungs"] == "20 %" and t.loc[k, f"{TINY} · on the lungs"] == "70 %"
    rows = list(csv.DictReader(io.StringIO(view.csv_bytes(run).decode("utf-8"))))
    assert rows[k]["densenet121::lung_share"] == "0.2" and rows[k]["densenet121::lung_outside"] == BELOW
    assert rows[k]["tinycnn::lung_share"] == "0.7" and rows[k]["tinycnn::lung_outside"] == ""  # mostly inside
    assert rows[k]["lung_area"] == "0.4" and rows[k]["lung_quality"] == "0.9" and rows[0]["lung_area"] == ""
    assert "**1** with a heat map lying mostly outside the lungs" in view.summary(run)
    assert "outside the lungs" not in view.summary(fake_run())


def test_bad_files_summary_and_sheet_choice():
    run = fake_run()
    bad = view.bad_table(run)
    assert list(bad.columns) == [view.FILE_COLUMN, "Problem"] and bad.iloc[0, 0] == "broken.png"
    s = view.summary(run)
    assert "**3** file(s) scored with DenseNet121 and Tiny CNN (test model)" in s
    assert "**1** could not be used" in s and "**1** unlike the training X-rays (greyed, calls withheld)" in s
    assert "2 non-image" in s
    assert view.file_labels(run) == ["img-0.png", "img-2.png", "img-10.png"]
    assert view.flagged_reasons(run) == [("img-2.png", "far from the training images")]
    assert view.default_sheet(run) == [0, 2]  # the flagged row is not preselected
    assert view.default_sheet(fake_run(10)) == [0, 2, 4, 5, 7, 8][:view.SHEET_DEFAULT]
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
    assert not page.table and not page.get("download_button")


def test_page_scores_files_and_zips_lists_bad_files_and_draws_the_sheet(page, exp, uploads, monkeypatch):
    calls = []
    real_run = batch.BatchPredictor.run
    monkeypatch.setattr(batch.BatchPredictor, "run", lambda self, *a, **k: calls.append(1) or real_run(self, *a, **k))
    at = page.file_uploader(key=key("batch_upload")).set_value(uploads).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert [s.value for s in at.subheader] == ["Predictions", "Files that could not be used", "Heat-map contact sheet"]
    table, bad = at.table[0].value, at.table[1].value
    assert not at.dataframe  # st.table: every column shown, nothing scrolls sideways
    # sorted by name, ZIP members by their own name, the verdict's badge right after the name
    assert list(table.columns[:2]) == [view.FILE_COLUMN, view.VERDICT_COLUMN]
    assert list(table[view.FILE_COLUMN]) == ["a.png", "b.png", "one.png", "two.png"]
    assert set(table[view.VERDICT_COLUMN]) <= set(view.BADGES.values())
    for arch in exp.backbones:
        shown = table[view.top_column(arch)]
        assert all(t == view.WITHHELD or t.rsplit(" ", 1)[0] in exp.labels.names for t in shown)
        lungs = [v for v in table[view.lung_column(arch)] if v not in ("", view.NO_LUNGS)]
        assert all(0 <= float(v.rstrip(" %")) <= 100 for v in lungs)
    assert list(bad[view.FILE_COLUMN]) == ["broken.png"] and "broken.png" in bad["Problem"][0]
    assert any("**4** file(s) scored" in m.value and "**1** could not be used" in m.value for m in at.markdown)
    csv_rows = list(csv.DictReader(io.StringIO(view.csv_bytes(at.session_state[BATCH_CACHE]["run"]).decode())))
    assert [r["file"] for r in csv_rows] == ["films.zip:set/a.png", "films.zip:set/b.png", "one.png", "two.png",
                                             "broken.png"]
    assert csv_rows[-1]["error"] and {r["experiment"] for r in csv_rows} == {exp.name}
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == ["Download the table (CSV)", "Download the contact sheet (PNG)"]
    assert len(at.get("image")) == 1
    run = at.session_state[BATCH_CACHE]["run"]
    assert at.multiselect(key=key("batch_sheet")).value == [k for k, r in enumerate(run.rows) if not r.ood]
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
    assert not at.table


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
