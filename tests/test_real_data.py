"""Real development X-rays (../shared/data): 1-epoch training on covid3 and nih14, shown by the app.

Skipped where ../shared/data is absent (a user's fresh clone); CI runs them.
"""

from __future__ import annotations

import pytest

import train
from covidviz import runs
from tests.conftest import REPO

# slow: two real-data training runs (~1.5 min on 2 cores); CI runs them with `make test-slow`.
pytestmark = [pytest.mark.needs_data, pytest.mark.slow, pytest.mark.usefixtures("app_like_server")]


@pytest.fixture(scope="module")
def real_runs(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("real-runs")
    common = ["--arch", "tinycnn", "--epochs", "1", "--image-size", "64", "--batch-size", "32",
              "--weights", "none", "--out", str(out), "--quiet", "--projections", "pca"]
    assert train.main(["--data", f"csv:{shared_data / 'covid3'}", "--name", "covid3", *common]) == 0
    assert train.main(["--data", f"nih:{shared_data / 'nih14'}", "--name", "nih14", *common]) == 0
    return out


def test_covid3_experiment_matches_readme(real_runs):
    exp = runs.read_experiment(real_runs / "covid3")
    assert exp.labels.names == ("COVID-19", "Normal", "Pneumonia") and exp.labels.task == "multiclass"
    images = exp.images()
    assert len(images) == 612 and images["patient_id"].nunique() == 466
    assert images["labels"].value_counts().to_dict() == {"Normal": 246, "Pneumonia": 198, "COVID-19": 168}
    # patient-disjoint: no patient in two splits
    assert images.groupby("patient_id")["split"].nunique().max() == 1
    assert exp.manifest["dataset"]["skipped"] == []


def test_nih14_experiment_is_multilabel_with_boxes(real_runs):
    exp = runs.read_experiment(real_runs / "nih14")
    assert exp.labels.task == "multilabel" and len(exp.labels.names) == 14
    images = exp.images()
    assert len(images) == 436
    assert (images["bbox"] != "").sum() == 7
    probs = exp.probabilities("tinycnn")
    assert probs.shape == (436, 14) and 0 <= probs.min() and probs.max() <= 1


def test_overview_page_shows_real_experiments(real_runs, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("COVIDVIZ_RUNS", str(real_runs))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120).run()
    assert not at.exception
    text = " ".join(m.value for m in at.markdown) + " ".join(str(t.value) for t in at.title)
    assert "covid3" in text or "nih14" in text
