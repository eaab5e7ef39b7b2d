"""Page tests of the Streamlit app through ``streamlit.testing.v1.AppTest`` (no browser, no server).

Experiments come from ``tests/app_fixtures.py`` (written with ``runs.ExperimentWriter``, known numbers)
and, where ``train.py`` exists, from the real ``tiny_experiment`` fixture of ``conftest.py``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from covidviz import runs, ui
from covidviz.io import atomic_write_json
from covidviz.views.style import NOTICE, arch_label
from tests.app_fixtures import AUCS, AUCS_MULTILABEL, expected_counts, make_broken_folders, make_fake_experiment

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "app.py")
PAGE = str(REPO / "app_pages" / "overview.py")
TIMEOUT = 60  # first runs import torch/plotly; generous so a slow CI box does not flake


pytestmark = pytest.mark.usefixtures("app_like_server")


def run_app(script: str = APP) -> AppTest:
    at = AppTest.from_file(script, default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def notices(at: AppTest) -> list:
    return [i for i in at.info if NOTICE in i.value]


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def touch_manifest(folder: Path) -> None:
    """Give the manifest a clearly newer mtime (the cache key), even on coarse-timestamp filesystems."""
    path = folder / runs.MANIFEST
    later = path.stat().st_mtime_ns + 2_000_000_000
    os.utime(path, ns=(later, later))


def table_with_rows(at: AppTest, *rows: str) -> pd.DataFrame:
    """The first dataframe on the page whose index has all these rows."""
    for df in at.dataframe:
        if all(r in df.value.index for r in rows):
            return df.value
    raise AssertionError(f"no table with rows {rows}")


def shown_aucs(at: AppTest) -> pd.DataFrame:
    """The Overview's "Test AUC per class" (an ``st.table`` of texts: "0.912", "0.412 — worse than chance",
    "—") as numbers (NaN for "—"); compare with ``AUC``, which allows the 3-decimal rounding."""
    for t in at.table:
        if "Macro average" in t.value.index:
            return t.value.map(lambda v: np.nan if str(v).strip() == "—" else float(str(v).split()[0]))
    raise AssertionError("no table with a 'Macro average' row")


def AUC(value: float):  # noqa: N802 - reads like pytest.approx at the call sites
    return pytest.approx(value, abs=5e-4)


def table_with_columns(at: AppTest, *columns: str) -> pd.DataFrame:
    """The first dataframe on the page that has all these columns."""
    for df in at.dataframe:
        value = df.value
        if all(c in value.columns for c in columns):
            return value
    raise AssertionError(f"no table with columns {columns}; tables: {[list(d.value.columns) for d in at.dataframe]}")


# ---------------------------------------------------------------- no experiment yet

def test_no_experiment_shows_the_command_to_run(runs_root):
    at = run_app()
    codes = [c.value for c in at.code]
    # COVIDVIZ_RUNS points away from <repo>/runs, so the command must say where to write.
    assert f"{ui.DEMO_COMMAND} --out {runs_root}" in codes
    assert f"{ui.REAL_DATA_COMMAND} --out {runs_root}" in codes
    assert any("No experiment yet" in h.value for h in at.header)
    assert len(notices(at)) == 1
    assert not at.sidebar.selectbox  # nothing to pick
    assert not at.get("plotly_chart")


def test_no_experiment_help_with_default_root_is_the_plain_command(monkeypatch):
    monkeypatch.delenv(ui.RUNS_ENV, raising=False)

    def script():
        from covidviz import ui
        ui.no_experiment_help()

    at = AppTest.from_function(script, default_timeout=TIMEOUT).run()
    assert not at.exception
    assert at.code[0].value == "python train.py --demo"
    assert at.code[1].value.startswith("python train.py --data csv:../shared/data/covid3 --arch densenet121 resnet50")
    assert ui.runs_root() == REPO / "runs"


def test_missing_runs_folder_is_not_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv(ui.RUNS_ENV, str(tmp_path / "does-not-exist"))
    at = run_app()
    assert any(ui.DEMO_COMMAND in c.value for c in at.code)
    assert not at.error


# ---------------------------------------------------------------- one experiment

def test_overview_dataset_card_matches_the_images_table(runs_root):
    folder = make_fake_experiment(runs_root, "covid3", n=60)
    at = run_app()
    assert at.title[0].value == "Overview: covid3"
    assert len(notices(at)) == 1  # app.py draws it; the page must not draw it again

    images = pd.read_parquet(folder / runs.IMAGES)
    expected = expected_counts(folder)
    table = table_with_columns(at, "Train", "Validation", "Test", "All")
    assert list(table.index) == ["COVID-19", "Normal", "Pneumonia"]
    for label in table.index:
        for split, col in (("train", "Train"), ("val", "Validation"), ("test", "Test")):
            assert table.loc[label, col] == expected.get((label, split), 0), (label, split)
    assert table["All"].sum() == len(images) == 60
    assert table.loc["COVID-19", "All"] == 10  # 5 of 30 patients, two images each
    assert (table[["Train", "Validation", "Test"]] > 0).all().all()  # fixture sanity: every class in every split

    patients = table_with_columns(at, "Patients", "Images")
    by_split = images.groupby("split")["patient_id"].nunique()
    assert patients.loc["Train", "Patients"] == by_split["train"]
    assert patients.loc["Test", "Patients"] == by_split["test"]
    assert patients["Images"].sum() == 60

    sources = table_with_columns(at, "hospital-A", "hospital-B")
    assert list(sources.index) == ["COVID-19", "Normal", "Pneumonia"]
    assert sources["hospital-B"].sum() == (images["source"] == "hospital-B").sum() == 20
    assert sources.loc["COVID-19", "hospital-A"] == ((images["source"] == "hospital-A")
                                                     & (images["labels"] == "COVID-19")).sum()

    assert metric(at, "Images") == "60"
    assert metric(at, "Patients") == "30"
    assert metric(at, "Image size") == "32 px"
    assert any("Batch size: **16**" in m.value and "Epochs (max): **3**" in m.value for m in at.markdown)

    examples = next(e for e in at.expander if e.label.startswith("Example images"))
    assert [m.value for m in examples.markdown] == [
        f"**{c}** ({expected.get((c, 'test'), 0)} test images)" for c in ["COVID-19", "Normal", "Pneumonia"]]
    assert [len(img.value) for img in examples.image] == [min(8, expected.get((c, "test"), 0))
                                                          for c in ["COVID-19", "Normal", "Pneumonia"]]


def test_overview_model_card_shows_the_test_aucs(runs_root):
    make_fake_experiment(runs_root, "covid3")
    at = run_app()
    aucs = shown_aucs(at)
    for arch, label in (("densenet121", "DenseNet121"), ("resnet50", "ResNet50")):
        for cls, auc in AUCS[arch].items():
            assert aucs.loc[cls, label] == AUC(auc)
        assert aucs.loc["Macro average", label] == AUC(np.mean(list(AUCS[arch].values())))
    record = table_with_rows(at, "Best epoch (kept)", "Training time")
    assert list(record.columns) == ["DenseNet121", "ResNet50"]
    assert list(record.loc["Epochs trained"]) == ["3", "3"]
    assert list(record.loc["Best epoch (kept)"]) == ["2", "3"]
    assert list(record.loc["Stopped early"]) == ["no", "yes"]
    assert list(record.loc["Initial weights"]) == ["Random (no pretraining)"] * 2
    assert list(record.loc["Training time"]) == ["1 min 23 s", "1 min 24 s"]
    # AUC bar chart + one training-curves figure (loss panel, validation-AUC panel with the kept epoch)
    charts = at.get("plotly_chart")
    assert len(charts) == 2
    curves = json.loads(charts[1].proto.spec)
    names = {t.get("name") for t in curves["data"]}
    assert {"DenseNet121, training loss", "ResNet50, validation AUC"} <= names
    assert sum(t.get("marker", {}).get("symbol") == "diamond" for t in curves["data"]) == 2  # one kept epoch each


def test_overview_lists_external_sets_and_names_broken_ones(runs_root):
    from tests.external_fixtures import write_fake_external

    folder = make_fake_experiment(runs_root, "covid3")
    at = run_app()
    assert any("python train.py evaluate runs/EXP --data KIND:PATH --name SITE" in c.value for c in at.caption)
    write_fake_external(folder, "site-b", macro=0.7, drop=0.1)
    (folder / "external" / "broken").mkdir()  # a folder that is not a stored set: a warning, never a crash
    at = run_app()
    # One row per set and backbone (a column pair per backbone scrolled sideways at 1280 px); the set's data above.
    table = table_with_columns(at, "Site", "Backbone")
    assert list(table["Site"]) == ["site-b"] * 2 and list(table["Backbone"]) == ["DenseNet121", "ResNet50"]
    assert table.loc[1, "Macro AUC (95% CI)"] == "0.700 (0.650–0.750)"
    assert table.loc[1, "Drop from internal (95% CI)"] == "+0.100 (+0.000, +0.200)"
    assert any("**site-b**: `folder:/data/site-b` · 20 images scored, 1 left out" in m.value for m in at.markdown)
    assert any("cannot be read" in w.value and "broken" in w.value for w in at.warning)
    assert any("train.py evaluate runs/EXP" in c.value for c in at.caption)


def test_overview_shows_init_warning_and_skipped_images(runs_root):
    make_fake_experiment(runs_root, "covid3", init_warning="ImageNet weights could not be downloaded; random init")
    at = run_app()
    assert any("ImageNet weights could not be downloaded" in w.value and "DenseNet121" in w.value for w in at.warning)
    assert any("**Skipped images:** 2" in m.value for m in at.markdown)
    expander = next(e for e in at.expander if e.label.startswith("Skipped images (2)"))
    skipped = expander.dataframe[0].value
    assert list(skipped["path"]) == ["/nonexistent/broken-a.png", "/nonexistent/broken-b.dcm"]
    assert "DICOM without pixel data" in list(skipped["reason"])


def test_multilabel_counts_positives_and_no_finding(runs_root):
    folder = make_fake_experiment(runs_root, "nih", n=48, multilabel=True)
    at = run_app()
    expected = expected_counts(folder)
    table = table_with_columns(at, "Train", "Validation", "Test", "All")
    assert list(table.index) == ["Effusion", "Pneumonia", "Cardiomegaly", "No finding", "Images"]
    for label in ["Effusion", "Pneumonia", "Cardiomegaly", "No finding"]:
        assert table.loc[label, "Train"] == expected.get((label, "train"), 0)
    assert table.loc["No finding", "All"] == 12  # every 4th image
    assert table.loc["Images", "All"] == 48
    per_split = pd.read_parquet(folder / runs.IMAGES)["split"].value_counts()
    assert [table.loc["Images", c] for c in ("Train", "Validation", "Test")] == [per_split[s] for s in ("train", "val", "test")]
    # positives outnumber images: the Images row is not the column sum
    assert table.loc[["Effusion", "Pneumonia", "Cardiomegaly", "No finding"], "All"].sum() > 48
    aucs = shown_aucs(at)
    assert aucs.loc["Effusion", "DenseNet121"] == AUC(AUCS_MULTILABEL["densenet121"]["Effusion"])
    assert np.isnan(aucs.loc["Cardiomegaly", "DenseNet121"])  # undefined AUC stays blank, not 0
    assert any("Multi-label" in m.value for m in at.markdown)


def test_patient_leakage_is_flagged(runs_root):
    folder = make_fake_experiment(runs_root, "leaky")
    images = pd.read_parquet(folder / runs.IMAGES)
    images.loc[images["split"] == "test", "patient_id"] = images.loc[0, "patient_id"]  # a train patient
    images.to_parquet(folder / runs.IMAGES, index=False)
    at = run_app()
    assert any("more than one split" in e.value for e in at.error)


def test_source_confounding_is_called_out(runs_root):
    folder = make_fake_experiment(runs_root, "confounded")
    at = run_app()
    assert not any("source confounding" in w.value for w in at.warning)  # sources A/B spread over classes
    images = pd.read_parquet(folder / runs.IMAGES)
    images.loc[images["labels"] == "COVID-19", "source"] = "covid-hospital"  # COVID only from one place
    images.to_parquet(folder / runs.IMAGES, index=False)
    touch_manifest(folder)  # as a re-train would
    at.run()
    notes = [w.value for w in at.warning if "source confounding" in w.value]
    assert len(notes) == 1
    assert "Not analysed yet: a quick check of the class x source table says" in notes[0]  # labelled fallback
    assert "100% of the COVID-19 images come from source 'covid-hospital'" in notes[0]
    assert "which supplies none of the other images" in notes[0]


def test_analysed_experiment_shows_the_analysis_confounding_sentences(runs_root):
    """Overview says what Compare says: the analysis's Cramér's V sentences, not the quick share rule."""
    folder = make_fake_experiment(runs_root, "analysed")
    images = pd.read_parquet(folder / runs.IMAGES)
    images.loc[images["labels"] == "COVID-19", "source"] = "covid-hospital"  # the share rule would flag this
    images.to_parquet(folder / runs.IMAGES, index=False)
    sentence = "Image source predicts COVID-19 (Cramér's V 0.93): compare the per-source AUCs."
    atomic_write_json(folder / runs.ANALYSIS, {"confounding": [sentence], "backbones": {}})
    touch_manifest(folder)
    at = run_app()
    notes = [w.value for w in at.warning if "onfounding" in w.value]
    assert notes == [f"**Confounding.** {sentence}"]
    atomic_write_json(folder / runs.ANALYSIS, {"confounding": [], "backbones": {}})
    touch_manifest(folder)
    at.run()
    assert not [w.value for w in at.warning if "onfounding" in w.value]  # the analysis found none: no quick check
    assert any("found no attribute" in c.value for c in at.caption)


# ---------------------------------------------------------------- broken folders and switching

def test_broken_folders_are_named_and_the_good_experiment_still_shows(runs_root):
    make_fake_experiment(runs_root, "good")
    make_broken_folders(runs_root)
    at = run_app()
    warnings = [w.value for w in at.sidebar.warning]
    assert any(f"{runs_root / 'bad'}:" in w and "unreadable" in w for w in warnings)
    assert any(f"{runs_root / 'foreign'}:" in w and "not a covidviz experiment" in w for w in warnings)
    assert len(warnings) == 2
    # Names only (a date cut the label in the sidebar's width); the chosen one's date is in the caption.
    assert at.sidebar.selectbox[0].options == ["good"]
    assert any(c.value.startswith("Completed 2026-11-25 19:00. 1 experiment(s)") for c in at.sidebar.caption)
    assert at.title[0].value == "Overview: good"


def test_selecting_another_experiment_switches_the_page(runs_root):
    make_fake_experiment(runs_root, "older", n=40, completed="2026-11-20T09:00:00")
    make_fake_experiment(runs_root, "newer", n=60, completed="2026-11-25T19:00:00")
    at = run_app()
    picker = at.sidebar.selectbox[0]
    # The newest is listed first and marked, but not chosen: the default must not change when a training lands.
    assert picker.value is None
    assert picker.options == ["newer · newest", "older"]
    assert any(h.value == "Choose an experiment" for h in at.header) and not at.title
    assert "exp" not in at.query_params

    at.sidebar.selectbox[0].select("newer").run()
    assert at.title[0].value == "Overview: newer" and metric(at, "Images") == "60"
    assert at.query_params["exp"] == "newer"  # in the address: a reload or a shared link opens it

    at.sidebar.selectbox[0].select("older").run()
    assert not at.exception
    assert at.session_state["experiment"] == "older" and at.query_params["exp"] == "older"
    assert at.title[0].value == "Overview: older"
    assert metric(at, "Images") == "40"
    assert table_with_columns(at, "Train", "Validation", "Test", "All")["All"].sum() == 40
    assert len(notices(at)) == 1

    at.run()  # an unrelated rerun keeps the choice
    assert at.title[0].value == "Overview: older"


def test_the_address_names_the_experiment(runs_root):
    make_fake_experiment(runs_root, "older", n=40, completed="2026-11-20T09:00:00")
    make_fake_experiment(runs_root, "newer", n=60, completed="2026-11-25T19:00:00")
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["exp"] = "older"
    at.run()
    assert not at.exception
    assert at.sidebar.selectbox[0].value == "older" and at.title[0].value == "Overview: older"
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["exp"] = "no-such-experiment"
    at.run()
    assert at.sidebar.selectbox[0].value is None  # a stale link: nothing chosen rather than a wrong one
    assert any("No experiment named **no-such-experiment**" in w.value for w in at.warning)  # and said so


def test_demo_is_the_default_when_present(runs_root):
    make_fake_experiment(runs_root, "demo", completed="2026-11-20T09:00:00")
    make_fake_experiment(runs_root, "newer", completed="2026-11-25T19:00:00")
    at = run_app()
    assert at.sidebar.selectbox[0].value == "demo" and at.title[0].value == "Overview: demo"


def test_deleted_experiment_falls_back_to_the_only_one_left(runs_root):
    make_fake_experiment(runs_root, "older", completed="2026-11-20T09:00:00")
    make_fake_experiment(runs_root, "newer", completed="2026-11-25T19:00:00")
    at = run_app()
    at.sidebar.selectbox[0].select("older").run()
    assert at.title[0].value == "Overview: older"
    shutil.rmtree(runs_root / "older")  # deleted while open: the only experiment left is shown
    at.run()
    assert not at.exception
    assert at.title[0].value == "Overview: newer"


def test_retrained_experiment_is_reread(runs_root):
    """The caches are keyed by the manifest's mtime: an --overwrite re-train shows up without restart."""
    folder = make_fake_experiment(runs_root, "covid3")
    at = run_app()
    assert at.markdown and any("Labels:** COVID-19, Normal, Pneumonia" in m.value for m in at.markdown)
    manifest = json.loads((folder / runs.MANIFEST).read_text())
    manifest["backbones"]["densenet121"]["metrics"]["test"]["auc"]["COVID-19"] = 0.5
    atomic_write_json(folder / runs.MANIFEST, manifest)
    touch_manifest(folder)
    at.run()
    assert shown_aucs(at).loc["COVID-19", "DenseNet121"] == AUC(0.5)


# ---------------------------------------------------------------- the page on its own

def test_page_runs_on_its_own_with_picker_and_notice(runs_root):
    make_fake_experiment(runs_root, "covid3")
    at = run_app(PAGE)
    assert len(notices(at)) == 1
    assert at.sidebar.selectbox[0].value == "covid3"
    assert at.title[0].value == "Overview: covid3"
    at.run()  # reruns keep drawing the chrome (the router flag is never set stand-alone)
    assert len(notices(at)) == 1 and at.sidebar.selectbox


def test_page_on_its_own_without_experiments(runs_root):
    at = run_app(PAGE)
    assert any(ui.DEMO_COMMAND in c.value for c in at.code)
    assert len(notices(at)) == 1


# ---------------------------------------------------------------- a real trained experiment

def test_overview_of_a_real_tiny_experiment(tmp_path, monkeypatch, request):
    """train.py's own output (the tiny_experiment fixture) renders, and its numbers reach the page."""
    train_py = REPO / "train.py"
    if not train_py.exists() or "def main" not in train_py.read_text():
        pytest.skip("train.py is not there yet")
    folder = request.getfixturevalue("tiny_experiment")
    monkeypatch.setenv(ui.RUNS_ENV, str(folder.parent))
    at = run_app()
    exp = runs.read_experiment(folder)
    assert at.title[0].value == f"Overview: {exp.name}"
    table = table_with_columns(at, "Train", "Validation", "Test", "All")
    images = exp.images()
    if exp.labels.task == "multilabel":
        assert table.loc["Images", "All"] == len(images)
    else:
        assert table["All"].sum() == len(images)
    aucs = shown_aucs(at)
    for arch in exp.backbones:
        macro = exp.backbone(arch)["metrics"]["test"]["macro_auc"]
        shown = aucs.loc["Macro average", arch_label(arch)]
        assert (np.isnan(shown) if macro is None else shown == AUC(macro))
    assert len(at.get("plotly_chart")) == 2


def test_overview_says_the_shortcut_audit_and_weak_models(runs_root):
    """The model card carries the shortcut audit's verdict per backbone and its sentence agrees with it; a
    backbone whose test macro AUC is below 0.7 gets the weak-models banner at the top."""
    from covidviz.views import reliability

    folder = make_fake_experiment(runs_root, "covid3", aucs={"densenet121": {"COVID-19": 0.99, "Normal": 0.9,
                                                                            "Pneumonia": 0.9},
                                                             "resnet50": {"COVID-19": 0.6, "Normal": 0.55,
                                                                          "Pneumonia": 0.6}})
    at = run_app()
    assert [m.value for m in at.markdown if "Shortcut audit: not run" in m.value]  # not audited: said so
    banners = [w.value for w in at.warning if w.value.startswith("**Weak models:**")]
    assert len(banners) == 1 and "ResNet50 0.58" in banners[0] and "DenseNet121" not in banners[0]

    cell = {"auc": 0.99, "ci_low": 0.97, "ci_high": 1.0, "diff": 0.0, "diff_ci_low": -0.01, "diff_ci_high": 0.01,
            "base": 0.99}
    per_class = {"COVID-19": {"original": cell, "lungs_hidden": cell}}  # ranked just as well with the lungs hidden
    atomic_write_json(folder / runs.SHORTCUTS, {"conditions": ["original", "lungs_hidden"], "names": ["COVID-19"],
                                                "backbones": {"densenet121": {"per_class": per_class}}})
    at = run_app()
    badges = next(m.value for m in at.markdown if "Shortcut" in m.value and "DenseNet121" in m.value)
    assert "Shortcut: COVID-19 ranked with the lungs hidden (AUC 0.99)" in badges
    assert reliability.NOT_AUDITED_BADGE in badges  # ResNet50 was left out of this audit
    assert not [m.value for m in at.markdown if "coarse brightness" in m.value]
