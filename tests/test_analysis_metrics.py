"""Metrics with CIs, DeLong, thresholds, calibration, subgroups and the report (hand-computable cases)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from covidviz.analysis.report import analyse_predictions, format_summary, thumbnail_baseline
from covidviz.data.labels import LabelSpace
from covidviz.io import to_json_ready
from covidviz.stats.calibration import (
    apply_temperature,
    brier,
    calibrate,
    ece,
    ece_from,
    fit_temperature,
    reliability_bins,
)
from covidviz.stats.metrics import (
    PatientBootstrap,
    auc_per_class,
    compare_backbones,
    delong_covariance,
    delong_test,
    discrimination,
    downsample_curve,
    holm,
    macro_auc,
    pr_points,
    rank_auc,
    roc_points,
    weighted_auc,
)
from covidviz.stats.subgroups import age_group, confounding, cramers_v, subgroup_aucs
from covidviz.stats.thresholds import (
    argmax_confusion,
    choose_thresholds,
    confusion_at,
    operating_points,
    ppv_npv_at_prevalence,
    wilson_ci,
)

NAMES3 = ("COVID-19", "Normal", "Pneumonia")


def strict_json(obj) -> str:
    return json.dumps(to_json_ready(obj), allow_nan=False)


# ---------------------------------------------------------------------- existing helpers unchanged

def test_auc_per_class_and_macro_unchanged():
    y = np.array([[1, 0], [0, 1], [1, 0], [0, 1]])
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.6, 0.4]])
    per = auc_per_class(y, p, ["a", "b"])
    assert per == {"a": 0.75, "b": 0.75}
    assert macro_auc({"a": 0.5, "b": None, "c": 1.0}) == 0.75
    assert auc_per_class(np.array([[1], [1]]), np.array([[0.2], [0.3]]), ["a"]) == {"a": None}


# ---------------------------------------------------------------------- rank AUC and the bootstrap

def test_rank_auc_equals_sklearn_with_ties():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.random(300) + 0.4 * y, 1)  # heavy ties
    assert rank_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert rank_auc([1, 0, 1, 0], [0.9, 0.1, 0.4, 0.6]) == 0.75  # 3 of 4 pairs ordered
    assert rank_auc([1, 1, 1], [0.1, 0.2, 0.3]) is None


def test_weighted_auc_equals_auc_of_the_resampled_data():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 80)
    s = np.round(rng.random(80) + 0.5 * y, 1)
    idx = [rng.integers(0, 80, 80) for _ in range(5)]
    w = np.stack([np.bincount(i, minlength=80) for i in idx])
    got = weighted_auc(y, s, w)
    want = [roc_auc_score(y[i], s[i]) for i in idx]
    np.testing.assert_allclose(got, want, atol=1e-12)
    # a row with no weighted positive is undefined, not an error
    assert np.isnan(weighted_auc(y, s, np.where(y == 1, 0.0, 1.0)[None])[0])


def test_patient_bootstrap_resamples_whole_patients_and_is_seeded():
    pids = np.repeat([f"p{i}" for i in range(30)], 3)  # three images per patient
    boot = PatientBootstrap(pids, n_boot=50, seed=3)
    w = np.concatenate(list(boot.blocks()))
    assert w.shape == (50, 90)
    assert np.all(w[:, 0::3] == w[:, 1::3]) and np.all(w[:, 0::3] == w[:, 2::3])
    assert np.all(w[:, ::3].sum(axis=1) == 30)  # 30 patients drawn per resample
    np.testing.assert_array_equal(w, np.concatenate(list(PatientBootstrap(pids, 50, 3).blocks())))
    assert not np.array_equal(w, np.concatenate(list(PatientBootstrap(pids, 50, 4).blocks())))


def _multiclass_data(n=240, seed=0, strength=1.5):
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, 3, n)
    onehot = np.eye(3)[lab]
    z = rng.normal(size=(n, 3))
    z[np.arange(n), lab] += strength
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    pids = np.array([f"p{i // 2}" for i in range(n)])
    return onehot, p, pids


def test_discrimination_cis_curves_and_degenerate_class():
    onehot, p, pids = _multiclass_data()
    onehot = np.concatenate([onehot, np.zeros((len(onehot), 1))], axis=1)  # a class absent from test
    p = np.concatenate([p, np.full((len(p), 1), 0.1)], axis=1)
    names = list(NAMES3) + ["Absent"]
    d = discrimination(onehot, p, names, pids, n_boot=300, seed=0)
    for j, name in enumerate(NAMES3):
        c = d["per_class"][name]
        assert c["auc"] == pytest.approx(roc_auc_score(onehot[:, j], p[:, j]))
        assert c["ci_low"] < c["auc"] < c["ci_high"] and c["ci_high"] - c["ci_low"] < 0.3
        assert c["ap"] == pytest.approx(average_precision_score(onehot[:, j], p[:, j]))
        assert c["n_pos"] == int(onehot[:, j].sum()) and c["n_boot_valid"] == 300
    absent = d["per_class"]["Absent"]
    assert absent["auc"] is None and absent["ci_low"] is None and absent["roc"] is None and absent["pr"] is None
    assert d["macro"]["n_classes"] == 3
    assert d["macro"]["auc"] == pytest.approx(np.mean([d["per_class"][n]["auc"] for n in NAMES3]))
    assert d["macro"]["ci_low"] < d["macro"]["auc"] < d["macro"]["ci_high"]
    assert d["n_patients"] == 120
    strict_json(d)
    again = discrimination(onehot, p, names, pids, n_boot=300, seed=0)
    assert again == d
    other = discrimination(onehot, p, names, pids, n_boot=300, seed=1)
    assert other["per_class"]["Normal"]["ci_low"] != d["per_class"]["Normal"]["ci_low"]


def test_roc_and_pr_points_are_downsampled_keeping_the_shape():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 5000)
    s = rng.normal(size=5000) + y
    roc = roc_points(y, s, max_points=200)
    assert len(roc["fpr"]) <= 200 and len(roc["fpr"]) == len(roc["tpr"]) == len(roc["thresholds"])
    assert (roc["fpr"][0], roc["tpr"][0], roc["fpr"][-1], roc["tpr"][-1]) == (0, 0, 1, 1)
    assert roc["thresholds"][0] is None  # sklearn's +inf: nothing called positive
    assert np.all(np.diff(roc["fpr"]) >= 0)
    assert np.trapezoid(roc["tpr"], roc["fpr"]) == pytest.approx(roc_auc_score(y, s), abs=0.005)
    pr = pr_points(y, s, max_points=200)
    assert len(pr["recall"]) <= 200 and pr["thresholds"][-1] is None
    assert pr["ap"] == pytest.approx(average_precision_score(y, s))
    assert roc_points([0, 0], [0.1, 0.2]) is None and pr_points([1, 1], [0.1, 0.2]) is None
    assert list(downsample_curve([0, 1], [0, 1], 200)) == [0, 1]


# ---------------------------------------------------------------------- DeLong

def test_delong_hand_computed_variance():
    # positives 0.9, 0.4; negatives 0.5, 0.1. Pairs: (0.9>0.5), (0.9>0.1), (0.4<0.5), (0.4>0.1) -> AUC 3/4.
    # V10 (per positive) = [1, 1/2], V01 (per negative) = [1/2, 1]; var = 0.125/2 + 0.125/2 = 0.125.
    aucs, cov = delong_covariance([1, 1, 0, 0], [0.9, 0.4, 0.5, 0.1])
    assert aucs[0] == pytest.approx(0.75) and cov[0, 0] == pytest.approx(0.125)


def _brute_delong(y, sa, sb):
    y = np.asarray(y).astype(bool)
    comps = []
    for s in (sa, sb):
        x, z = s[y], s[~y]
        psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
        comps.append((psi.mean(axis=1), psi.mean(axis=0), psi.mean()))
    v10 = np.stack([c[0] for c in comps])
    v01 = np.stack([c[1] for c in comps])
    return np.array([c[2] for c in comps]), np.cov(v10) / y.sum() + np.cov(v01) / (~y).sum()


def test_fast_delong_matches_the_pairwise_definition():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 40)
    sa = np.round(rng.random(40) + 0.6 * y, 1)
    sb = np.round(sa + rng.normal(0, 0.3, 40), 1)
    aucs, cov = delong_covariance(y, np.stack([sa, sb]))
    want_aucs, want_cov = _brute_delong(y, sa, sb)
    np.testing.assert_allclose(aucs, want_aucs, atol=1e-12)
    np.testing.assert_allclose(cov, want_cov, atol=1e-12)


def test_delong_identical_perfect_vs_random_and_bootstrap_cross_check():
    rng = np.random.default_rng(8)
    y = np.repeat([0, 1], 100)
    s = rng.random(200) + 0.3 * y
    same = delong_test(y, s, s)
    assert same["diff"] == 0 and same["p_value"] == 1.0
    perfect = delong_test(y, y + rng.random(200) * 0.5, rng.random(200))
    assert perfect["p_value"] < 0.001 and perfect["diff"] > 0.3
    assert delong_test([1, 1], [0.1, 0.2], [0.3, 0.4])["p_value"] is None
    one_pos = delong_test([1, 0, 0], [0.9, 0.1, 0.2], [0.1, 0.9, 0.2])  # no variance from one positive
    assert one_pos["diff"] == 1.0 and one_pos["p_value"] is None
    # one image per patient: DeLong's CI and the paired bootstrap's CI of the difference agree
    sb = s + rng.normal(0, 0.4, 200)
    cmp = compare_backbones(np.stack([y, 1 - y], 1), np.stack([s, -s], 1), np.stack([sb, -sb], 1),
                            ["pos", "neg"], np.arange(200), n_boot=1000, seed=0)
    c = cmp["per_class"]["pos"]
    assert c["diff"] == pytest.approx(roc_auc_score(y, s) - roc_auc_score(y, sb))
    assert c["ci_low"] < c["diff"] < c["ci_high"]
    delong_width = c["ci_high"] - c["ci_low"]
    boot_width = c["boot_ci_high"] - c["boot_ci_low"]
    assert 0.75 < boot_width / delong_width < 1.33
    assert cmp["macro"]["diff"] == pytest.approx(c["diff"])  # "neg" is "pos" mirrored
    assert c["p_holm"] >= c["p_value"]


def test_holm():
    assert holm([0.01, 0.04, None, 0.03]) == [pytest.approx(0.03), pytest.approx(0.06), None, pytest.approx(0.06)]


# ---------------------------------------------------------------------- thresholds

# 4 positives, 6 negatives; scores chosen so that every rate can be counted by hand.
Y10 = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
S10 = np.array([0.9, 0.8, 0.7, 0.3, 0.6, 0.4, 0.2, 0.1, 0.05, 0.01])


def test_choose_thresholds_hand_counted():
    t = choose_thresholds(Y10, S10)
    # >= 0.7: tp 3/4, fp 0/6 -> J = 0.75 (best); >= 0.3: tp 4/4, fp 2/6 -> J = 0.667
    assert t["youden"] == {"threshold": 0.7, "sensitivity": 0.75, "specificity": 1.0}
    # highest threshold with sensitivity >= 0.95: 0.3 (all 4 positives), specificity 4/6
    assert t["high_sensitivity"]["threshold"] == 0.3
    assert t["high_sensitivity"]["specificity"] == pytest.approx(4 / 6)
    # specificity >= 0.95 needs 0 false positives of 6: lowest such threshold is 0.7
    assert t["high_specificity"]["threshold"] == 0.7
    assert choose_thresholds([0, 0, 0], [0.1, 0.2, 0.3])["youden"]["threshold"] is None


def test_confusion_at_threshold_hand_counted():
    c = confusion_at(Y10, S10, 0.7)
    assert (c["tp"], c["fp"], c["fn"], c["tn"]) == (3, 0, 1, 6)
    assert c["sensitivity"]["value"] == 0.75 and c["sensitivity"]["n"] == 4
    assert c["specificity"]["value"] == 1.0 and c["specificity"]["n"] == 6
    assert c["ppv"]["value"] == 1.0 and c["ppv"]["n"] == 3
    assert c["npv"]["value"] == pytest.approx(6 / 7) and c["npv"]["n"] == 7
    assert c["sensitivity"]["ci_low"] < 0.75 < c["sensitivity"]["ci_high"]
    nobody = confusion_at(Y10, S10, 2.0)
    assert nobody["ppv"]["value"] is None and nobody["ppv"]["n"] == 0


def test_operating_points_chosen_on_val_applied_to_test():
    ty = np.array([[1], [0], [1], [0]])
    tp = np.array([[0.75], [0.7], [0.2], [0.1]])
    op = operating_points(Y10[:, None], S10[:, None], ty, tp, ["c"])["c"]
    y = op["points"]["youden"]
    assert y["threshold"] == 0.7 and y["val"]["sensitivity"] == 0.75
    assert (y["test"]["tp"], y["test"]["fp"], y["test"]["fn"], y["test"]["tn"]) == (1, 1, 1, 1)  # 0.7 >= 0.7
    assert op["val"] == {"n": 10, "n_pos": 4} and op["test"] == {"n": 4, "n_pos": 2}
    strict_json(op)


def test_wilson_and_ppv_npv_at_prevalence():
    lo, hi = wilson_ci(0, 10)
    assert lo == 0 and hi == pytest.approx(3.8415 / 13.8415, abs=1e-4)
    r = ppv_npv_at_prevalence(0.9, 0.8, 0.1)
    assert r["ppv"] == pytest.approx(0.09 / 0.27) and r["npv"] == pytest.approx(0.72 / 0.73)
    assert ppv_npv_at_prevalence(0.0, 1.0, 0.3)["ppv"] is None  # nobody called positive
    arr = ppv_npv_at_prevalence(0.9, 0.8, np.array([0.01, 0.1, 0.5]))
    assert arr["ppv"].shape == (3,) and np.all(np.diff(arr["ppv"]) > 0) and np.all(np.diff(arr["npv"]) < 0)
    with pytest.raises(ValueError):
        ppv_npv_at_prevalence(0.9, 0.8, 1.5)


def test_argmax_confusion_matrix():
    onehot = np.eye(3)[[0, 0, 1, 2, 2]]
    probs = np.eye(3)[[0, 1, 1, 2, 0]] * 0.8 + 0.05
    cm = argmax_confusion(onehot, probs, NAMES3)
    assert cm["matrix"] == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]
    assert cm["accuracy"] == pytest.approx(3 / 5) and cm["n"] == 5
    assert cm["recall"] == [0.5, 1.0, 0.5] and cm["precision"] == [0.5, 0.5, 1.0]


# ---------------------------------------------------------------------- calibration

def _calibrated(n, sharpen=1.0, seed=0, k=3):
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, size=(n, k))
    true_p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    lab = (rng.random(n)[:, None] > np.cumsum(true_p, axis=1)).sum(axis=1)
    shown = np.exp(sharpen * z) / np.exp(sharpen * z).sum(axis=1, keepdims=True)
    return np.eye(k)[lab], shown


def test_temperature_near_one_for_calibrated_and_above_one_for_overconfident():
    y, p = _calibrated(4000)
    t = fit_temperature(y[:2000], p[:2000], "multiclass")
    assert abs(t - 1) < 0.1
    assert ece(y[2000:], p[2000:], "multiclass") < 0.04
    y, p = _calibrated(4000, sharpen=3.0, seed=1)
    cal = calibrate(y[:2000], p[:2000], y[2000:], p[2000:], "multiclass", NAMES3)
    assert cal["temperature"] > 2
    assert cal["after"]["ece"] < cal["before"]["ece"] / 2
    assert cal["after"]["nll"] < cal["before"]["nll"]
    assert len(cal["before"]["reliability"]) == 15
    assert sum(b["count"] for b in cal["after"]["reliability"]) == 2000
    strict_json(cal)


def test_multilabel_temperature_per_class():
    rng = np.random.default_rng(4)
    z = rng.normal(0, 2, size=(3000, 2))
    y = (rng.random((3000, 2)) < 1 / (1 + np.exp(-z))).astype(float)
    shown = 1 / (1 + np.exp(-z * np.array([3.0, 1.0])))  # class 0 over-confident, class 1 calibrated
    t = fit_temperature(y, shown, "multilabel")
    assert t[0] > 2 and abs(t[1] - 1) < 0.15
    y[:, 1] = 0  # a class with one outcome keeps T = 1
    assert fit_temperature(y, shown, "multilabel")[1] == 1.0
    cal = calibrate(y, shown, y, shown, "multilabel", ["a", "b"])
    assert set(cal["before"]["ece_per_class"]) == {"a", "b"} and len(cal["temperature"]) == 2
    assert sum(b["count"] for b in cal["before"]["reliability"]) == 6000  # every (image, class) pooled


def test_apply_temperature():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    np.testing.assert_allclose(apply_temperature(p, 1.0, "multiclass"), p, atol=1e-9)
    soft = apply_temperature(p, 2.0, "multiclass")
    np.testing.assert_allclose(soft.sum(axis=1), 1)
    assert soft[0, 0] < 0.7 and np.all(np.argsort(soft, 1) == np.argsort(p, 1))
    # T = 2 on log-probs is the square root, renormalised
    np.testing.assert_allclose(soft[0], np.sqrt(p[0]) / np.sqrt(p[0]).sum())
    one = apply_temperature(p[0], 2.0, "multiclass")
    assert one.shape == (3,)
    ml = apply_temperature(np.array([0.9, 0.9]), [1.0, 3.0], "multilabel")
    assert ml[0] == pytest.approx(0.9) and 0.5 < ml[1] < 0.9
    with pytest.raises(ValueError):
        apply_temperature(p, 0.0, "multiclass")


def test_brier_and_ece_by_hand():
    y = np.array([[1, 0], [0, 1]])
    p = np.array([[0.8, 0.2], [0.4, 0.6]])
    assert brier(y, p, "multiclass") == pytest.approx((0.04 + 0.04 + 0.16 + 0.16) / 2)
    assert brier(np.array([[1, 0]]), np.array([[0.8, 0.4]]), "multilabel") == pytest.approx((0.04 + 0.16) / 2)
    # confidences 0.8 and 0.6 fall in different bins, both right: ECE = (0.2 + 0.4) / 2
    assert ece(y, p, "multiclass") == pytest.approx(0.3)
    assert ece_from([0.95, 0.95], [1, 0]) == pytest.approx(0.45)
    bins = reliability_bins([0.01, 0.02, 0.99], [0, 1, 1])
    assert bins[0]["count"] == 2 and bins[0]["accuracy"] == 0.5 and bins[0]["confidence"] == pytest.approx(0.015)
    assert bins[14]["count"] == 1 and bins[7]["confidence"] is None and bins[0]["centre"] == pytest.approx(1 / 30)


# ---------------------------------------------------------------------- subgroups and confounding

def test_age_groups():
    got = list(age_group([5, 18, 39.9, 40, 60, 79, 80, 101, np.nan]))
    assert got == ["<18", "18-40", "18-40", "40-60", "60-80", "60-80", "80+", "80+", ""]


def _table(n, confounded, seed=0):
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, 3, n)
    if confounded:
        source = np.array(["hannover", "kermany", "nih"])[lab]
    else:
        source = rng.choice(["hannover", "kermany", "nih"], n)
    return pd.DataFrame({"image_id": [f"i{i}" for i in range(n)], "labels": [NAMES3[k] for k in lab],
                         "patient_id": [f"p{i // 2}" for i in range(n)], "source": source,
                         "sex": rng.choice(["M", "F"], n), "age": rng.uniform(1, 95, n),
                         "view": np.full(n, "PA")}), lab


def test_confounding_warning_when_source_determines_the_class():
    table, lab = _table(300, confounded=True)
    onehot = np.eye(3)[lab]
    found = confounding(table, onehot, NAMES3)
    assert {(d["column"], d["class"]) for d in found} == {("source", n) for n in NAMES3}
    covid = next(d for d in found if d["class"] == "COVID-19")
    assert covid["cramers_v"] == pytest.approx(1.0) and covid["top_value"] == "hannover"
    assert covid["top_share"] == 1.0 and covid["top_prevalence"] == 1.0
    assert "COVID-19" in covid["sentence"] and "hannover" in covid["sentence"] and "100%" in covid["sentence"]
    balanced, lab = _table(300, confounded=False)
    assert confounding(balanced, np.eye(3)[lab], NAMES3) == []


def test_cramers_v():
    assert cramers_v(["a", "a", "b", "b"], [1, 1, 0, 0]) == pytest.approx(1.0)
    assert cramers_v(["a", "b", "a", "b"], [1, 1, 0, 0]) == pytest.approx(0.0)
    assert cramers_v(["a", "a"], [1, 0]) is None


def test_subgroup_rows():
    table, lab = _table(200, confounded=True)
    table.loc[:9, "sex"] = ""
    onehot = np.eye(3)[lab]
    p = onehot * 0.6 + np.random.default_rng(0).random((200, 3)) * 0.4
    sub = subgroup_aucs(table, onehot, p, NAMES3, n_boot=50, seed=0)
    assert sub["columns"] == ["source", "sex", "age_group"]  # view has one value only
    rows = pd.DataFrame(sub["rows"])
    assert set(rows.columns) >= {"column", "value", "class", "n", "n_pos", "auc", "ci_low", "ci_high"}
    hann = rows[(rows.column == "source") & (rows.value == "hannover")]
    assert hann["auc"].isna().all()  # every hannover image is COVID-19: no AUC inside that group
    assert list(rows[rows.column == "sex"].value.unique()) == ["F", "M", "unknown"]
    assert rows[(rows.column == "sex") & (rows.value == "unknown")].n.iloc[0] == 10
    males = rows[(rows.column == "sex") & (rows.value == "M") & (rows["class"] == "Normal")].iloc[0]
    assert males.ci_low <= males.auc <= males.ci_high
    strict_json(sub)


# ---------------------------------------------------------------------- the report

def _experiment(n=300, task="multiclass", seed=0):
    rng = np.random.default_rng(seed)
    table, lab = _table(n, confounded=False, seed=seed)
    pids = np.array([int(p[1:]) for p in table.patient_id])
    table["split"] = np.array(["train", "train", "train", "val", "test"])[pids % 5]
    if task == "multiclass":
        labels = LabelSpace(NAMES3, "multiclass")
        onehot = np.eye(3)[lab]
    else:
        labels = LabelSpace(("Effusion", "Mass", "Hernia"), "multilabel")
        onehot = (rng.random((n, 3)) < [0.3, 0.2, 0.0]).astype(float)  # Hernia never present
        table["labels"] = ["|".join(n for n, v in zip(labels.names, row) if v) for row in onehot]

    def model(strength):
        z = rng.normal(size=(n, 3)) + strength * onehot
        if task == "multiclass":
            return np.exp(2 * z) / np.exp(2 * z).sum(axis=1, keepdims=True)
        return 1 / (1 + np.exp(-2 * z + 1))

    return table, labels, {"densenet121": model(1.5), "resnet50": model(1.0)}


def test_analyse_predictions_multiclass_layout_json_and_determinism():
    table, labels, probs = _experiment()
    res = analyse_predictions(table, labels, probs, seed=0, n_boot=200)
    json.dumps(res, allow_nan=False)
    assert set(res) >= {"meta", "backbones", "comparisons", "confounding"}
    assert res["meta"]["n"]["test"] == int((table.split == "test").sum())
    b = res["backbones"]["densenet121"]
    assert set(b) == {"test", "thresholds", "calibration", "subgroups"}
    test = table.split.to_numpy() == "test"
    for j, name in enumerate(NAMES3):
        y = labels.onehot(table.labels)[test, j]
        assert b["test"]["per_class"][name]["auc"] == pytest.approx(roc_auc_score(y, probs["densenet121"][test, j]))
    assert len(b["thresholds"]["confusion"]["matrix"]) == 3
    assert set(b["thresholds"]["per_class"]["Normal"]["points"]) == {"youden", "high_sensitivity", "high_specificity"}
    assert b["calibration"]["temperature"] > 0
    assert {r["column"] for r in b["subgroups"]["rows"]} == {"source", "sex", "age_group"}
    assert len(res["comparisons"]) == 1 and res["comparisons"][0]["a"] == "densenet121"
    assert set(res["comparisons"][0]["per_class"]) == set(NAMES3)
    assert res["confounding"] == []
    assert analyse_predictions(table, labels, probs, seed=0, n_boot=200) == res
    text = format_summary(res, labels)
    for word in ("COVID-19", "Pneumonia", "macro", "densenet121", "resnet50", "p="):
        assert word in text
    with pytest.raises(ValueError, match="shape"):
        analyse_predictions(table, labels, {"x": probs["resnet50"][:, :2]}, n_boot=10)


def test_analyse_predictions_multilabel_with_a_degenerate_class():
    table, labels, probs = _experiment(task="multilabel", seed=1)
    res = analyse_predictions(table, labels, probs, seed=0, n_boot=100)
    json.dumps(res, allow_nan=False)
    b = res["backbones"]["resnet50"]
    assert b["test"]["per_class"]["Hernia"]["auc"] is None
    assert b["test"]["per_class"]["Effusion"]["auc"] > 0.7
    assert b["thresholds"]["confusion"] is None
    assert len(b["calibration"]["temperature"]) == 3
    assert res["comparisons"][0]["per_class"]["Hernia"]["p_value"] is None
    assert "n/a" in format_summary(res, labels)


def test_thumbnail_baseline_sees_source_shortcut():
    rng = np.random.default_rng(0)
    table, lab = _table(120, confounded=True)
    pids = np.array([int(p[1:]) for p in table.patient_id])
    table["split"] = np.where(pids % 3 == 0, "test", "train")
    thumbs = rng.integers(0, 60, (120, 64, 64)).astype(np.uint8)
    thumbs[:, :16, :16] += (lab * 60).astype(np.uint8)[:, None, None]  # a corner mark per source/class
    labels = LabelSpace(NAMES3, "multiclass")
    res = thumbnail_baseline(thumbs, table, labels, seed=0)
    json.dumps(res, allow_nan=False)
    assert res["n_test"] == int((table.split == "test").sum())
    assert all(res["test"]["per_class"][n]["auc"] > 0.9 for n in NAMES3)
    assert res["source"]["accuracy"] > 0.9 and res["source"]["majority_accuracy"] < 0.6
    res["baseline"] = res  # format_summary prints a baseline stored beside the analysis
    summary = format_summary({"meta": {}, "backbones": {}, "comparisons": [], "baseline": res}, labels)
    assert "Trivial baseline" in summary and "source" in summary
