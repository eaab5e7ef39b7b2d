"""The remedies' comparison (views/remedies.py, experiments/remedies.py, the Overview section): experiments on
the same test films are found, one row per experiment and backbone plus the thumbnail baseline, numbers
read from the stored analysis, a plain reading; experiments on other films are left out."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pandas as pd
import pytest

from covidviz import runs
from covidviz.runs.sources import BASELINE, read_sources
from covidviz.views import remedies

pytestmark = pytest.mark.usefixtures("app_like_server")


@pytest.fixture(scope="module")
def remedy_runs(tiny_experiment, tmp_path_factory):
    """The tiny experiment, a copy recorded as a lung-mask input, and a copy on other test films."""
    root = tmp_path_factory.mktemp("remedies")
    full = shutil.copytree(tiny_experiment, root / "tiny")
    lung = shutil.copytree(tiny_experiment, root / "tiny-lung-mask")
    manifest = json.loads((lung / runs.MANIFEST).read_text())
    manifest["preprocessing"]["input"] = "lung-mask"
    manifest["name"] = "tiny-lung-mask"
    (lung / runs.MANIFEST).write_text(json.dumps(manifest))
    other = shutil.copytree(tiny_experiment, root / "tiny-other")
    images = pd.read_parquet(other / "images.parquet")
    images.loc[images["split"] == "test", "image_id"] += "-x"
    images.to_parquet(other / "images.parquet")
    return root, [runs.read_experiment(p) for p in (full, lung, other)]


def test_siblings_are_the_experiments_on_the_same_test_films(remedy_runs):
    _, (full, lung, other) = remedy_runs
    same = remedies.siblings(full, [full, lung, other])
    assert [e.name for e in same] == [full.name, lung.name]
    assert remedies.siblings(other, [full, lung, other]) == []


def test_table_rows_and_numbers_come_from_the_stored_analysis(remedy_runs):
    _, (full, lung, _) = remedy_runs
    table = remedies.table([full, lung])
    assert len(table) == 2 * len(full.backbones) + 1
    assert table["Remedy"].tolist()[:len(full.backbones)] == ["full film"] * len(full.backbones)
    assert set(table["Remedy"][len(full.backbones):-1]) == {"lung-mask input"}
    assert table["Remedy"].iloc[-1] == remedies.BASELINE_LABEL
    arch = full.backbones[0]
    macro = full.analysis().backbone(arch).macro
    assert table["Test macro AUC"].iloc[0].startswith(f"{macro.auc:.3f}")
    evidence = read_sources(full)
    for cls in evidence.classes():
        probe = evidence.probe(cls)
        col = f"Source probe in {cls}"
        if probe.reason:
            assert col not in table
            continue
        assert table[col].iloc[0].startswith(f"{probe.score(arch).auc:.3f}")
        assert table[col].iloc[-1].startswith(f"{probe.score(BASELINE).auc:.3f}")


def test_reading_compares_each_remedy_with_the_full_film(remedy_runs):
    _, (full, lung, _) = remedy_runs
    sentences = remedies.reading([full, lung])
    assert len(sentences) == len(lung.backbones)
    assert all(s.startswith("lung-mask input (tiny-lung-mask)") and "headline macro AUC" in s for s in sentences)
    assert remedies.reading([lung]) == ["No full-film experiment on these test films: nothing to compare the remedies with."]


def test_verdict_claims_a_change_only_where_the_cis_part():
    assert "better model" in remedies._verdict(-1, [1, 0], [])
    assert remedies._verdict(0, [0, 0], [0, 0]) == "No change beyond the 95 % CIs on these test films."
    assert "not an improvement" in remedies._verdict(0, [-1, 0], [])
    assert "mixed" in remedies._verdict(0, [-1, 1], [])
    assert "knows less about the hospital" in remedies._verdict(0, [0], [-1, 0])
    assert "not an improvement" in remedies._verdict(-1, [0], [0])


def test_apart_reads_the_intervals():
    s = SimpleNamespace
    assert remedies._apart(s(auc=0.9, ci_low=0.85, ci_high=0.95), s(auc=0.7, ci_low=0.6, ci_high=0.8)) == 1
    assert remedies._apart(s(auc=0.7, ci_low=0.6, ci_high=0.8), s(auc=0.9, ci_low=0.85, ci_high=0.95)) == -1
    assert remedies._apart(s(auc=0.8, ci_low=0.6, ci_high=0.9), s(auc=0.9, ci_low=0.85, ci_high=0.95)) == 0
    assert remedies._apart(s(auc=0.8, ci_low=None, ci_high=None), s(auc=0.9, ci_low=0.85, ci_high=0.95)) == 0


def test_markdown_and_overview_show_the_table(remedy_runs, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from covidviz import ui
    from experiments import remedies as script
    from tests.conftest import REPO

    root, (full, lung, _) = remedy_runs
    text = script.markdown([full, lung])
    assert text.count("\n| ") == 2 * len(full.backbones) + 2 and "## Reading" in text
    monkeypatch.setenv(ui.RUNS_ENV, str(root))
    at = AppTest.from_file(str(REPO / "app_pages" / "overview.py"), default_timeout=120)
    at.query_params["exp"] = full.path.name
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Remedies on the same test films" in [h.value for h in at.header]
    # one table per backbone (columns: the experiments and the thumbnail baseline), so that it fits at 1280 px
    tables = [t.value for t in at.table if "Source probe" in " ".join(map(str, t.value.index))
              or "Test macro AUC" in list(map(str, t.value.index))]
    assert len(tables) == len(full.backbones)
    for t in tables:
        assert list(t.columns) == [full.path.name, lung.path.name, remedies.BASELINE_LABEL]
