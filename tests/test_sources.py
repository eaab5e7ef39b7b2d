"""The source evidence: the source probe against scikit-learn on synthetic features (source linearly encoded
or not), within-source AUCs on synthetic scores, the stored record, its sentences, and the Compare section."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from covidviz import runs
from covidviz.analysis.sources import format_sources, run_sources
from covidviz.runs.manifest import Deconfounding
from covidviz.runs.sources import BASELINE, SOURCES, SourceEvidence, read_sources
from covidviz.stats.sources import MIN_FILMS, linear_probe, probe_folds, source_probe, within_source_aucs
from covidviz.views import sources as view


def _features(n_pat: int, encoded: float, n_sources: int = 2, seed: int = 0, dim: int = 20):
    """Films of ``n_pat`` patients (1-2 films each) from ``n_sources`` sources; feature 0 carries the source
    with signal-to-noise ``encoded`` (0: not at all)."""
    rng = np.random.default_rng(seed)
    films = rng.integers(1, 3, n_pat)
    pids = np.repeat([f"p{i}" for i in range(n_pat)], films)
    src_of = np.array([f"s{i % n_sources}" for i in range(n_pat)])
    src = np.repeat(src_of, films)
    x = rng.normal(size=(len(src), dim))
    codes = np.array([int(s[1:]) for s in src])
    x[:, 0] += encoded * codes
    if n_sources > 2:
        x[:, 1] += encoded * (codes == 1)
    return x, src, pids


def _sklearn_auc(x, src, pids, folds, multi=False):
    """The probe computed with scikit-learn directly on the same folds: a fresh standardise + logistic
    regression fitted per fold, roc_auc_score on the held-out films, averaged over the folds."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    kept = sorted(set(src))
    codes = np.searchsorted(kept, src)
    fold = probe_folds(codes, pids, folds)
    aucs = []
    for k in np.unique(fold):
        tr, te = fold != k, fold == k
        scaler = StandardScaler().fit(x[tr])
        p = LogisticRegression(C=0.1, max_iter=1000).fit(scaler.transform(x[tr]), codes[tr]).predict_proba(
            scaler.transform(x[te]))
        aucs.append(roc_auc_score(codes[te], p, multi_class="ovr", average="macro") if multi
                    else roc_auc_score(codes[te], p[:, 1]))
    return float(np.mean(aucs))


def test_probe_tells_an_encoded_source_apart_and_matches_sklearn():
    x, src, pids = _features(80, encoded=3.0)
    res = source_probe({"model": x}, src, pids, n_boot=200)
    cell = res["scores"]["model"]
    assert res["reason"] == "" and res["folds"] == 5 and set(res["sources"]) == {"s0", "s1"}
    assert cell["auc"] > 0.95 and cell["ci_low"] > 0.85
    assert cell["auc"] == pytest.approx(_sklearn_auc(x, src, pids, 5), abs=1e-9)


def test_probe_is_near_chance_when_the_source_is_not_encoded():
    x, src, pids = _features(80, encoded=0.0)
    cell = source_probe({"model": x}, src, pids, n_boot=200)["scores"]["model"]
    assert abs(cell["auc"] - 0.5) < 0.15 and cell["ci_low"] < 0.5 < cell["ci_high"]
    assert cell["auc"] == pytest.approx(_sklearn_auc(x, src, pids, 5), abs=1e-9)


def test_probe_with_three_sources_is_sklearns_macro_one_vs_rest():
    x, src, pids = _features(90, encoded=2.0, n_sources=3)
    res = source_probe({"a": x, "b": x[:, ::-1].copy()}, src, pids, n_boot=100)
    assert res["scores"]["a"]["auc"] == pytest.approx(_sklearn_auc(x, src, pids, 5, multi=True), abs=1e-9)
    assert res["scores"]["a"]["auc"] > 0.8


def test_probe_never_splits_a_patient_across_folds():
    """A patient's films all sit in one fold (a probe that split them could recognise the patient), and
    every fold holds films of both sources."""
    x, src, pids = _features(60, encoded=1.0)
    codes = (src == "s1").astype(int)
    fold = probe_folds(codes, pids, 5)
    assert set(fold) == set(range(5))
    assert all(len(set(fold[pids == p])) == 1 for p in set(pids))
    assert all(len(set(codes[fold == k])) == 2 for k in range(5))


def test_probe_leaves_out_rare_sources_and_says_why_it_cannot_run():
    x, src, pids = _features(40, encoded=3.0)
    src = src.astype(object)
    src[:2] = "rare"  # one or two patients only
    res = source_probe({"m": x}, src, pids, n_boot=50, min_patients=3)
    assert "rare" in res["left_out"] and "rare" not in res["sources"] and res["scores"]["m"]["auc"] is not None
    one = source_probe({"m": x}, ["s0"] * len(src), pids, n_boot=50)
    assert one["reason"].startswith("fewer than two sources") and one["scores"] == {}


def test_linear_probe_is_the_thumbnail_baselines_recipe():
    from covidviz.analysis.report import _logreg

    assert _logreg(3).get_params()["logisticregression__C"] == linear_probe(3).get_params()["logisticregression__C"]


# ---------------------------------------------------------------- within-source AUCs

def _confounded(n: int = 400, signal: float = 1.5, seed: int = 0):
    """Two classes, two sources: class b mostly from source 'y' (the shortcut), both classes in both sources.
    ``model`` sees the disease (signal inside each source); ``shortcut`` only the source."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.5
    src = np.where(rng.random(n) < np.where(y, 0.8, 0.2), "y", "x")
    pids = np.array([f"p{i // 2}" for i in range(n)])
    z = signal * y + rng.normal(size=n)
    model = np.stack([1 - 1 / (1 + np.exp(-z)), 1 / (1 + np.exp(-z))], 1)
    s = (src == "y") * 1.0 + 0.01 * rng.normal(size=n)
    shortcut = np.stack([1 - 1 / (1 + np.exp(-s)), 1 / (1 + np.exp(-s))], 1)
    onehot = np.stack([~y, y], 1).astype(float)
    return onehot, {"model": model, "shortcut": shortcut}, src, pids


def test_within_source_auc_keeps_disease_signal_and_removes_the_shortcut():
    onehot, scores, src, pids = _confounded()
    overall = roc_auc_score(onehot[:, 1], scores["shortcut"][:, 1])
    assert overall > 0.75  # the shortcut looks good overall ...
    rows = within_source_aucs(onehot, scores, src, pids, ["a", "b"], reference="shortcut", n_boot=200)
    assert [(r["source"], r["a"], r["b"]) for r in rows] == [("x", "a", "b"), ("y", "a", "b")]
    for r in rows:
        inside = src == r["source"]
        want = roc_auc_score(onehot[inside, 1], scores["model"][inside, 1])  # p(b)/(p(a)+p(b)) = p(b) here
        assert r["aucs"]["model"]["auc"] == pytest.approx(want, abs=1e-9)
        assert abs(r["aucs"]["shortcut"]["auc"] - 0.5) < 0.1  # ... but inside one source it is chance
        assert r["diffs"]["model"]["ci_low"] > 0 and "shortcut" not in r["diffs"]
        assert r["n_a"] == int((inside & (onehot[:, 0] > 0)).sum())


def test_within_source_pairs_use_the_relative_probability_and_skip_unshared_or_thin_pairs():
    rng = np.random.default_rng(2)
    names = ["COVID-19", "Normal", "Pneumonia"]
    labels = np.array(["COVID-19"] * 30 + ["Normal"] * 30 + ["Pneumonia"] * 30 + ["Normal"] * 20 + ["Pneumonia"] * 2)
    src = np.array(["hannover"] * 30 + ["kermany"] * 60 + ["nih"] * 22)
    onehot = np.stack([labels == c for c in names], 1).astype(float)
    probs = rng.dirichlet(np.ones(3), size=len(labels))
    pids = np.arange(len(labels)).astype(str)
    rows = within_source_aucs(onehot, {"m": probs}, src, pids, names, n_boot=50)
    keys = [(r["source"], r["a"], r["b"]) for r in rows]
    assert keys == [("kermany", "Normal", "Pneumonia"), ("nih", "Normal", "Pneumonia")]  # COVID-19 shares none
    kermany, nih = rows
    inside = src == "kermany"
    rel = probs[inside, 2] / (probs[inside, 1] + probs[inside, 2])
    assert kermany["aucs"]["m"]["auc"] == pytest.approx(roc_auc_score(labels[inside] == "Pneumonia", rel))
    assert nih["n_b"] == 2 < MIN_FILMS and "fewer than" in nih["reason"] and nih["aucs"] == {}


# ---------------------------------------------------------------- record, text, views

def _evidence() -> SourceEvidence:
    def score(auc, lo, hi):
        return {"auc": auc, "ci_low": lo, "ci_high": hi, "n_boot_valid": 100}

    return SourceEvidence.from_json({
        "version": 1, "split": "test", "n_images": 92, "n_patients": 80, "n_boot": 100, "models": ["densenet121"],
        "baseline": BASELINE, "sources": {"hannover": 25, "kermany": 52, "nih": 15},
        "probe": {"model": "logistic", "min_patients": 3, "classes": {
            "COVID-19": {"n": 0, "sources": {}, "left_out": {"hannover": 25}, "reason": "fewer than two sources",
                         "scores": {}},
            "Normal": {"n": 37, "n_patients": 37, "sources": {"kermany": 26, "nih": 11},
                       "patients": {"kermany": 26, "nih": 11}, "left_out": {}, "folds": 5,
                       "reason": "", "scores": {"densenet121": score(0.93, 0.88, 0.97),
                                                BASELINE: score(0.99, 0.97, 1.0)}},
            "Pneumonia": {"n": 30, "sources": {"kermany": 26, "nih": 7}, "patients": {"kermany": 25, "nih": 6},
                          "reason": "",
                          "scores": {"densenet121": score(0.55, 0.3, 0.8), BASELINE: score(0.9, 0.7, 1.0)}}}},
        "within": {"score": "p(b) / (p(a) + p(b))", "min_films": 3, "pairs": [
            {"source": "kermany", "a": "Normal", "b": "Pneumonia", "n_a": 26, "n_b": 26, "reason": "",
             "aucs": {"densenet121": score(0.95, 0.9, 0.99), BASELINE: score(0.8, 0.7, 0.89)},
             "diffs": {"densenet121": {"diff": 0.15, "ci_low": 0.05, "ci_high": 0.25}}},
            {"source": "nih", "a": "Normal", "b": "Pneumonia", "n_a": 11, "n_b": 2, "reason": "fewer than 3 films",
             "aucs": {}, "diffs": {}}]},
        "future_key": 1})


def test_record_reads_its_parts_and_keeps_unknown_keys():
    ev = _evidence()
    assert ev.classes() == ["COVID-19", "Normal", "Pneumonia"] and ev.min_patients == 3
    assert ev.probe("Normal").score("densenet121").auc == 0.93 and ev.probe("Nope").reason == ""
    pair = ev.pairs()[0]
    assert (pair.source, pair.a, pair.b, pair.diff("densenet121").diff) == ("kermany", "Normal", "Pneumonia", 0.15)
    assert ev.extra == {"future_key": 1}
    assert SourceEvidence.from_json({}).pairs() == [] and SourceEvidence.from_json(None).classes() == []


def test_sentences_read_the_intervals_honestly():
    ev = _evidence()
    probe = view.probe_sentences(ev, ["densenet121"])
    assert probe[0] == ("Inside Normal, a linear probe telling kermany from nih: on DenseNet121's features, still "
                        "tells the sources apart (AUC 0.93 [0.88–0.97]); on the thumbnails' pixels, AUC 0.99 "
                        "[0.97–1.00].")
    assert "no better than chance (AUC 0.55 [0.30–0.80])" in probe[1]
    assert probe[1].endswith("(only 6 patients from nih: read with care).")
    within = view.within_sentences(ev, ["densenet121"])
    assert within == ["Inside kermany, DenseNet121 separates Pneumonia from Normal with AUC 0.95 [0.90–0.99] "
                      "(thumbnail baseline 0.80 [0.70–0.89]): clearly above the thumbnail baseline (+0.15 [+0.05, "
                      "+0.25]): disease signal the hospital cannot explain."]
    table = view.within_table(ev, ["densenet121"])
    assert list(table["DenseNet121"]) == ["0.95 [0.90–0.99] (+0.15)", "—"]
    assert table.iloc[1]["Note"].startswith("not measured")
    probe_table = view.probe_table(ev, ["densenet121"])
    assert list(probe_table.columns) == ["Class", "Sources (films)", "DenseNet121", view.BASELINE_LABEL, "Note"]
    assert probe_table.iloc[0]["DenseNet121"] == "—" and "glossary#source-probe" in view.probe_caption(ev)
    assert "glossary#within-source-auc" in view.within_caption(ev)


def test_deconfound_sentence():
    assert view.deconfound_text(None) is None
    on = Deconfounding(method="source", strength=0.3, active=True, per_class={"Normal": {"kermany": 1, "nih": 2}})
    assert "inside Normal, kermany vs nih" in view.deconfound_text(on) and "0.3" in view.deconfound_text(on)
    off = Deconfounding(method="source", strength=0.3, active=False,
                        message="--deconfound source ignored: the training data has one source (nih), so ...")
    assert "ignored: the training data has one source (nih)" in view.deconfound_text(off)


def test_analysis_of_a_trained_experiment_stores_the_evidence(tiny_experiment):
    """The training run's analysis wrote sources.json from the stored features; it reads back typed and prints."""
    exp = runs.read_experiment(tiny_experiment)
    assert exp.has_artifact(SOURCES)
    ev = read_sources(exp)
    assert ev.models == exp.backbones and ev.n_images == int((exp.images()["split"] == "test").sum())
    assert set(ev.classes()) == set(exp.labels.names)
    fresh = run_sources(exp, save=False, n_boot=20)
    assert fresh["n_images"] == ev.n_images
    assert "Source probe" in format_sources(fresh) and "Within-source AUC" in format_sources(fresh)
    summary = exp.info.analysis["backbones"][exp.backbones[0]]
    assert "source_probe" in summary


def test_no_source_column_means_no_evidence(tmp_path):
    from tests.app_fixtures import make_fake_experiment

    folder = make_fake_experiment(tmp_path, "nosrc")
    exp = runs.read_experiment(folder)
    images = exp.images()
    if "source" in images.columns:  # the fixture may have one: drop it to test the guard
        pd.DataFrame(images.drop(columns="source")).to_parquet(folder / runs.IMAGES)
        exp = runs.read_experiment(folder)
    assert run_sources(exp) is None and not exp.has_artifact(SOURCES)
    assert format_sources(None).startswith("Source evidence: the images have no source column")


@pytest.mark.usefixtures("app_like_server")
def test_compare_page_shows_the_source_sections(runs_root):
    """A multi-class experiment with two sources in every class: the Compare page shows the deconfounding
    sentence, the probe table (one row per class, a column per backbone and for the pixels), the
    within-source table and their sentences, as the views write them."""
    from streamlit.testing.v1 import AppTest

    from covidviz.data.labels import MULTICLASS
    from tests.test_compare_page import PAGE, make_analysed

    names, archs = ["COVID-19", "Normal", "Pneumonia"], ["densenet121", "resnet50"]
    folder = make_analysed(runs_root, "sources", names, MULTICLASS, archs, n=480)
    exp = runs.read_experiment(folder)
    ev = SourceEvidence.from_json(run_sources(exp, n_boot=50))
    rec = Deconfounding(method="source", strength=0.3, active=True,
                        per_class={c: {"hospital-A": 40, "hospital-B": 60} for c in names})
    exp.update_manifest(deconfound=rec.to_json())
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    heads = [h.value for h in at.subheader]
    assert view.PROBE_TITLE in heads and view.WITHIN_TITLE in heads
    texts = [m.value for m in at.markdown]
    assert view.deconfound_text(rec) in texts
    assert all(f"- {s}" in texts for s in view.probe_sentences(ev, archs) + view.within_sentences(ev, archs))
    tables = [t.value for t in at.table]
    probe = next(t for t in tables if view.BASELINE_LABEL in t.columns)
    assert list(probe.index) == names and {"DenseNet121", "ResNet50"} <= set(probe.columns)
    within = next(t for t in tables if "Thumbnail baseline" in t.columns)
    assert len(within) == len(ev.pairs())
