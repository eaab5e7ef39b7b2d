"""External validation end to end on phantoms: a second "hospital" (another generator setting)."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from covidviz import runs
from covidviz.analysis.external import NoOverlapError, evaluate_external, format_external, map_labels
from covidviz.data.labels import MULTICLASS, MULTILABEL, LabelSpace
from covidviz.runs.external import list_external, read_external

SITE_B = "synthetic:45:difficulty=0.8,confounder=0.0,seed=7"


@pytest.fixture(scope="module")
def evaluated(tiny_experiment, tmp_path_factory):
    exp_path = shutil.copytree(tiny_experiment, tmp_path_factory.mktemp("ext") / "tiny")
    cache = tmp_path_factory.mktemp("cache")
    metrics = evaluate_external(exp_path, [SITE_B], "site-b", cache_dir=cache, n_boot=200)
    return exp_path, cache, metrics


def test_stored_metrics_match_sklearn_on_the_stored_predictions(evaluated):
    exp_path, _, metrics = evaluated
    exp = runs.read_experiment(exp_path)
    sets, problems = list_external(exp_path)
    assert [s.name for s in sets] == ["site-b"] and not problems
    ext = sets[0]
    images = ext.images()
    assert len(images) == metrics["n_images"] == 45 and (images["split"] == "external").all()
    assert ext.thumbnails().shape == (45, 64, 64)
    onehot = exp.labels.onehot(images["labels"])
    for arch in exp.backbones:
        probs = ext.predictions(arch)[[runs.PROB_PREFIX + n for n in exp.labels.names]].to_numpy()
        assert ext.features(arch).shape[0] == 45
        for j, cls in enumerate(exp.labels.names):
            auc = ext.auc(arch, cls)
            assert auc.auc == pytest.approx(roc_auc_score(onehot[:, j], probs[:, j]))
            assert auc.ci_low <= auc.auc <= auc.ci_high
            # thresholds carried over from validation, judged on the new site
            point = ext.point(arch, cls, "youden")
            stored = exp.analysis().backbone(arch).point(cls, "youden").threshold
            assert point.threshold == pytest.approx(stored)
            called = probs[:, j] >= stored
            tp = int((called & (onehot[:, j] > 0)).sum())
            assert point.counts()["tp"] == tp
            # the drop is the internal test AUC minus this site's
            drop = ext.drop(arch, cls)
            internal = exp.analysis().backbone(arch).metrics(cls).auc
            assert drop["internal"] == pytest.approx(internal) and drop["external"] == pytest.approx(auc.auc)
            assert drop["drop"] == pytest.approx(internal - auc.auc)
            assert drop["ci_low"] <= drop["drop"] <= drop["ci_high"]
    text = format_external(metrics)
    assert "site-b" in text and "drop" in text and all(a in text for a in exp.backbones)


def test_rerun_replaces_only_when_complete(evaluated, monkeypatch):
    exp_path, cache, _ = evaluated
    before = read_external(exp_path / "external" / "site-b").metrics
    import covidviz.analysis.external as ext_mod

    def boom(*a, **k):
        raise RuntimeError("killed mid-way")

    monkeypatch.setattr(ext_mod, "subgroup_aucs", boom)
    with pytest.raises(RuntimeError):
        evaluate_external(exp_path, [SITE_B], "site-b", cache_dir=cache, n_boot=50)
    assert read_external(exp_path / "external" / "site-b").metrics == before  # the old set is untouched
    assert not any(p.name.startswith(".partial") for p in (exp_path / "external").iterdir())


def test_unknown_classes_are_listed_and_no_overlap_is_a_clear_error(evaluated, tmp_path):
    exp_path, cache, _ = evaluated
    folder = tmp_path / "other"
    for cls in ("Normal", "Hernia"):
        (folder / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((40, 40), 60 * i + 20, np.uint8)).save(folder / cls / f"{i}.png")
    metrics = evaluate_external(exp_path, [f"folder:{folder}"], "mixed", cache_dir=cache, n_boot=20)
    assert metrics["n_images"] == 3
    assert len(metrics["left_out"]) == 3 and all("label space" in x["reason"] for x in metrics["left_out"])
    shutil.rmtree(folder / "Normal")
    (folder / "Mass").mkdir()  # a folder dataset needs two classes of its own
    for i in range(3):
        Image.fromarray(np.full((40, 40), 50 * i + 30, np.uint8)).save(folder / "Mass" / f"{i}.png")
    with pytest.raises(NoOverlapError, match="Hernia"):
        evaluate_external(exp_path, [f"folder:{folder}"], "none", cache_dir=cache, n_boot=20)


def test_label_mapping_uses_the_synonyms():
    table = pd.DataFrame({"labels": ["No Finding", "Viral Pneumonia", "COVID-19|Pneumonia", "Hernia"]})
    mapped, keep = map_labels(table, LabelSpace(("COVID-19", "Normal", "Pneumonia"), MULTICLASS))
    assert list(keep) == [True, True, False, False] and list(mapped[keep]) == ["Normal", "Pneumonia"]
    mapped, keep = map_labels(table, LabelSpace(("COVID-19", "Pneumonia"), MULTILABEL))
    assert list(keep) == [True, True, True, False] and list(mapped[keep]) == ["", "Pneumonia", "COVID-19|Pneumonia"]
