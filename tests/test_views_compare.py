"""The Compare page's views (``covidviz/views/compare*.py``), without Streamlit: figures, operating
points, tables and gallery logic, checked against hand counts, sklearn and the analysis they read.

Fixtures are real analyses (``analyse_predictions`` on a small image table with known labels and
probabilities, no experiment folder) and hand-written analysis dicts for the edge cases.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score

from covidviz import runs
from covidviz.analysis.report import analyse_predictions
from covidviz.cam.overlay import DEFAULT_COLORMAP
from covidviz.data.labels import MULTICLASS, MULTILABEL, LabelSpace
from covidviz.data.table import make_table
from covidviz.views import compare, glossary
from covidviz.views import compare_figures as figures
from covidviz.views import compare_gallery as gallery
from covidviz.views import compare_operating as operating
from covidviz.views.style import (
    CELL_PAD_PX,
    CHAR_PX,
    DASHES,
    MAIN_WIDTH,
    OPERATING_POINTS,
    SYMBOLS,
    backbone_colours,
    min_table_width,
    tables_per_row,
)

REPO = Path(__file__).resolve().parents[1]
ARCHS = ["densenet121", "resnet50"]
SPLIT_CYCLE = ["train", "train", "val", "train", "test", "train", "val", "test", "test", "test"]


def _experiment(names: list[str], task: str, n: int = 240, seed: int = 0) -> SimpleNamespace:
    """Images (two per patient, split by patient), informative probabilities for two backbones, and
    their analysis (typed and raw)."""
    rng = np.random.default_rng(seed)
    n_pat = n // 2
    if task == MULTICLASS:
        pat = [[names[k]] for k in rng.integers(0, len(names), n_pat)]
    else:
        pat = [[c for c in names if rng.random() < 0.35] for _ in range(n_pat)]
    rows = []
    for i in range(n):
        p = i // 2
        first = names[0] in pat[p]
        rows.append({"image_id": f"x:{i:04d}", "path": f"/nonexistent/{i:04d}.png", "labels": "|".join(pat[p]),
                     "patient_id": f"x:p{p}", "dataset": "synthetic",
                     "source": ("B" if rng.random() < 0.9 else "A") if first else ("A" if rng.random() < 0.9 else "B"),
                     "view": "PA" if i % 3 else "AP", "sex": "MF"[p % 2], "age": 20 + (7 * p) % 70})
    images = make_table(rows)
    images["split"] = [SPLIT_CYCLE[(i // 2) % len(SPLIT_CYCLE)] for i in range(n)]
    labels = LabelSpace(tuple(names), task)
    onehot = labels.onehot(images["labels"].to_numpy())
    probs = {}
    for k, arch in enumerate(ARCHS):
        z = (2.5, 0.8)[k] * onehot + rng.normal(size=onehot.shape)
        probs[arch] = np.exp(z) / np.exp(z).sum(1, keepdims=True) if task == MULTICLASS else 1 / (1 + np.exp(-(z - 1.0)))
    raw = analyse_predictions(images, labels, probs, n_boot=40)
    test_onehot, test_probs, rows_ = compare.test_arrays(images, labels, probs)
    return SimpleNamespace(images=images, labels=labels, names=names, probs=probs, raw=raw, analysis=runs.Analysis(raw),
                           onehot=test_onehot, test_probs=test_probs, rows=rows_)


@pytest.fixture(scope="module")
def mc() -> SimpleNamespace:
    return _experiment(["COVID-19", "Normal", "Pneumonia"], MULTICLASS)


@pytest.fixture(scope="module")
def ml() -> SimpleNamespace:
    return _experiment(["Effusion", "Pneumonia", "Cardiomegaly", "Nodule"], MULTILABEL, n=300, seed=1)


def colours() -> dict[str, str]:
    return backbone_colours(ARCHS)


def hand_counts(y, s, t) -> tuple[int, int, int, int]:
    """(tp, fn, fp, tn) of the rule s >= t."""
    y, call = np.asarray(y) > 0, np.asarray(s) >= t
    return int((call & y).sum()), int((~call & y).sum()), int((call & ~y).sum()), int((~call & ~y).sum())


# ---------------------------------------------------------------- ROC / PR figures

def test_roc_figure_one_curve_per_backbone_with_auc_legend_and_axes(mc):
    cls = mc.names[0]
    fig = figures.roc_figure(mc.analysis, ARCHS, cls, colours())
    lines = [t for t in fig.data if t.mode == "lines"]
    assert [t.name for t in lines][0] == "Chance (AUC 0.5)"
    curves = lines[1:]
    assert len(curves) == len(ARCHS)
    for k, (arch, t) in enumerate(zip(ARCHS, curves)):
        d = mc.raw["backbones"][arch]["test"]["per_class"][cls]
        assert t.name == f"{'DenseNet121' if k == 0 else 'ResNet50'}: AUC {d['auc']:.3f} " \
                         f"(95% CI {d['ci_low']:.3f}–{d['ci_high']:.3f})"
        np.testing.assert_allclose(t.x, d["roc"]["fpr"])
        np.testing.assert_allclose(t.y, d["roc"]["tpr"])
        assert t.line.color == colours()[t.name.split(":")[0]] and t.line.dash == DASHES[k]
        # The stored AUC is the test AUC sklearn computes from the same labels and scores.
        j = mc.names.index(cls)
        assert d["auc"] == pytest.approx(roc_auc_score(mc.onehot[:, j], mc.test_probs[arch][:, j]))
    assert tuple(fig.layout.xaxis.range) == (-0.01, 1.01) and tuple(fig.layout.yaxis.range) == (-0.01, 1.01)
    assert fig.layout.yaxis.scaleanchor == "x"  # square: equal AUCs look equal
    assert fig.layout.title.text == f"ROC: {cls} vs rest"
    assert not [t for t in fig.data if t.mode == "markers"]  # no operating point asked for


def test_roc_marker_sits_at_the_operating_point(mc):
    cls = mc.names[1]
    j = mc.names.index(cls)
    y = mc.onehot[:, j]
    scores = {a: mc.test_probs[a][:, j] for a in ARCHS}
    points, missing = operating.operating_points(mc.analysis, ARCHS, cls, y, scores, "youden", 0.5)
    assert missing == []
    fig = figures.roc_figure(mc.analysis, ARCHS, cls, colours(), points)
    markers = [t for t in fig.data if t.mode == "markers"]
    assert len(markers) == len(ARCHS)
    for k, (arch, mk) in enumerate(zip(ARCHS, markers)):
        t = mc.raw["backbones"][arch]["thresholds"]["per_class"][cls]["points"]["youden"]["threshold"]
        tn, fp, fn, tp = confusion_matrix(y > 0, scores[arch] >= t, labels=[False, True]).ravel()
        assert mk.x[0] == pytest.approx(fp / (fp + tn)) and mk.y[0] == pytest.approx(tp / (tp + fn))
        assert f"threshold {t:.3f}" in mk.name and mk.marker.symbol == SYMBOLS[k]
        # What the page recomputes equals what the analysis stored for that threshold on test.
        stored = mc.raw["backbones"][arch]["thresholds"]["per_class"][cls]["points"]["youden"]["test"]
        assert (points[arch]["tp"], points[arch]["fn"], points[arch]["fp"], points[arch]["tn"]) == \
               (stored["tp"], stored["fn"], stored["fp"], stored["tn"])


def test_macro_roc_and_a_class_with_a_single_outcome():
    roc = {"fpr": [0, 0.5, 1], "tpr": [0, 0.8, 1]}
    raw = {"backbones": {
        "densenet121": {"test": {"macro": {"auc": 0.81, "ci_low": 0.7, "ci_high": 0.9, "roc": roc, "ap": 0.6},
                                 "per_class": {"A": {"auc": None, "roc": None, "n_pos": 0}}}},
        "resnet50": {"test": {"macro": {"auc": 0.75, "roc": roc, "ap": None},
                              "per_class": {"A": {"auc": None, "roc": None, "n_pos": 0}}}}}}
    a = runs.Analysis(raw)
    fig = figures.roc_figure(a, ARCHS, compare.MACRO, colours(), {})
    assert fig.layout.title.text == "ROC, macro average over classes"
    names = [t.name for t in fig.data]
    assert names == ["Chance (AUC 0.5)", "DenseNet121: AUC 0.810 (95% CI 0.700–0.900)", "ResNet50: AUC 0.750"]
    assert compare.missing_roc(a, ARCHS, "A") == ARCHS
    assert len(figures.roc_figure(a, ARCHS, "A", colours()).data) == 1  # only the chance line
    assert compare.mean_ap_text(a, ARCHS).endswith("DenseNet121 0.600, ResNet50 n/a.")


def test_pr_figure_chance_at_test_prevalence_and_ap(ml):
    cls = ml.names[0]
    j = ml.names.index(cls)
    fig = figures.pr_figure(ml.analysis, ARCHS, cls, colours())
    chance, *curves = fig.data
    prevalence = float(np.mean(ml.onehot[:, j] > 0))
    assert chance.y == pytest.approx((prevalence, prevalence))
    assert chance.name == f"Chance (prevalence {prevalence:.1%})"
    assert len(curves) == len(ARCHS)
    for arch, t in zip(ARCHS, curves):
        ap = average_precision_score(ml.onehot[:, j], ml.test_probs[arch][:, j])
        assert t.name.endswith(f"AP {ap:.3f}") and t.line.shape == "hv"
    assert tuple(fig.layout.yaxis.range) == (-0.01, 1.05)


# ---------------------------------------------------------------- per-class table

def _hand_analysis() -> runs.Analysis:
    def metrics(auc):
        return {"auc": auc, "ci_low": auc - 0.05, "ci_high": auc + 0.05, "n_pos": 10}

    return runs.Analysis({
        "meta": {"names": ["A", "B"], "task": MULTICLASS, "n_boot": 200, "n": {"test": 40}, "n_patients_test": 20},
        "backbones": {"densenet121": {"test": {"per_class": {"A": metrics(0.9), "B": metrics(0.7)}, "macro": metrics(0.8)}},
                      "resnet50": {"test": {"per_class": {"A": metrics(0.8), "B": metrics(0.72)}, "macro": metrics(0.76)}}},
        "comparisons": [{"a": "densenet121", "b": "resnet50",
                         "per_class": {"A": {"diff": 0.1, "ci_low": 0.02, "ci_high": 0.18, "p_value": 0.004, "p_holm": 0.008},
                                       "B": {"diff": -0.02, "ci_low": -0.1, "ci_high": 0.06, "p_value": 0.6, "p_holm": 0.6}},
                         "macro": {"diff": 0.04, "boot_ci_low": 0.01, "boot_ci_high": 0.07}}],
        "baseline": {"test": {"per_class": {"A": {"auc": 0.66}, "B": {"auc": None}}, "macro_auc": 0.6},
                     "source": {"accuracy": 0.97, "majority": "A", "majority_accuracy": 0.55}}})


def test_class_table_winner_only_where_significant_and_flipped_pair():
    a = _hand_analysis()
    fwd = compare.class_table(a, ARCHS, ["A", "B"], pair=("densenet121", "resnet50"))
    assert list(fwd.index) == ["A", "B", "Macro average"]
    assert fwd.loc["A", "DenseNet121 AUC"] == 0.9 and fwd.loc["B", "ResNet50 CI high"] == pytest.approx(0.77)
    assert fwd.loc["A", "Winner"] == "DenseNet121"    # Holm p 0.008
    assert fwd.loc["B", "Winner"] == ""               # Holm p 0.6
    assert fwd.loc["Macro average", "Winner"] == "DenseNet121"  # bootstrap CI (0.01, 0.07) excludes 0
    assert np.isnan(fwd.loc["Macro average", "p-value (DeLong)"]) and np.isnan(fwd.loc["Macro average", "Test positives"])
    rev = compare.class_table(a, ARCHS, ["A", "B"], pair=("resnet50", "densenet121"))
    assert rev.loc["A", "Difference"] == pytest.approx(-0.1)
    assert (rev.loc["A", "Difference CI low"], rev.loc["A", "Difference CI high"]) == pytest.approx((-0.18, -0.02))
    assert rev.loc["A", "Winner"] == "DenseNet121"
    shown = compare.display_table(fwd, ARCHS)
    assert list(shown.columns) == ["Test positives", "DenseNet121 AUC (95% CI)", "ResNet50 AUC (95% CI)", "Winner",
                                   "Difference (95% CI)", "p (Holm)"]
    assert shown.loc["A", "DenseNet121 AUC (95% CI)"] == "0.900 (0.850–0.950)"
    assert shown.loc["A", "Difference (95% CI)"] == "+0.100 (+0.020, +0.180)"
    assert shown.loc["A", "p (Holm)"] == "0.004 (0.008)" and shown.loc["Macro average", "p (Holm)"] == "—"
    assert shown.loc["B", "Winner"] == "—" and shown.loc["A", "Test positives"] == "10"
    single = compare.display_table(compare.class_table(a, ARCHS[:1], ["A", "B"]), ARCHS[:1])
    assert "Winner" not in single and "Difference (95% CI)" not in single


def test_texts_read_the_typed_analysis():
    a = _hand_analysis()
    assert compare.header_caption(a, LabelSpace(("A", "B"), MULTICLASS)).startswith(
        "Test split: 40 images from 20 patients · Multi-class")
    assert "**0.660**" in compare.baseline_text(a, "A") and "the macro average: **0.600**" in compare.baseline_text(
        a, compare.MACRO)
    assert compare.baseline_text(a, "B") is None
    assert "accuracy **97%**" in compare.source_baseline_text(a) and "'A': 55%" in compare.source_baseline_text(a)
    assert compare.source_baseline_text(runs.Analysis({})) is None
    assert compare.stale_text(["resnet50"], "python train.py analyze runs/x") == (
        "ResNet50 trained after the last analysis, so not shown. Run `python train.py analyze runs/x` to include it.")
    assert compare.pair_options(["a", "b", "c"]) == ["a|b", "a|c", "b|c"]
    assert compare.pair_label("densenet121|resnet50") == "DenseNet121 vs ResNet50"
    assert compare.default_pair(["a"]) is None and compare.default_pair(["a", "b", "c"]) == ("a", "b")


# ---------------------------------------------------------------- operating point

def test_presets_are_the_shared_operating_point_names():
    assert operating.preset_options() == ["youden", "high_sensitivity", "high_specificity", operating.CUSTOM]
    for key, name in OPERATING_POINTS.items():
        assert operating.preset_label(key) == name
    assert operating.preset_label("high_sensitivity").startswith("Rule-out")
    assert "Custom" in operating.preset_label(operating.CUSTOM)


def test_custom_threshold_counts_and_missing_presets(mc):
    cls = mc.names[2]
    j = mc.names.index(cls)
    y = mc.onehot[:, j]
    scores = {a: mc.test_probs[a][:, j] for a in ARCHS}
    for t in (0.2, 0.5, 0.8):
        points, missing = operating.operating_points(mc.analysis, ARCHS, cls, y, scores, operating.CUSTOM, t, 0.1)
        assert missing == []
        for arch in ARCHS:
            c = points[arch]
            assert (c["tp"], c["fn"], c["fp"], c["tn"]) == hand_counts(y, scores[arch], t)
            assert c["threshold"] == t
    # A backbone without a validation threshold for the preset: listed, and its point has no counts.
    raw = {"backbones": {"densenet121": {"thresholds": {"per_class": {cls: {"points": {"youden": {"threshold": 0.4}}}}}},
                         "resnet50": {"thresholds": {"per_class": {cls: {"points": {"youden": {"threshold": None}}}}}}}}
    points, missing = operating.operating_points(runs.Analysis(raw), ARCHS, cls, y, scores, "youden", 0.5)
    assert missing == ["resnet50"] and points["resnet50"]["tp"] is None and points["resnet50"]["fpr"] is None
    assert points["densenet121"]["threshold"] == 0.4
    assert "'Balanced (Youden's J)' threshold for ResNet50" in operating.missing_threshold_text("youden", missing, cls)
    # The ROC figure draws no marker for a point without a threshold.
    markers = [t for t in figures.roc_figure(mc.analysis, ARCHS, cls, colours(), points).data if t.mode == "markers"]
    assert len(markers) == 1 and "threshold 0.400" in markers[0].name


def test_rates_table_and_ppv_at_prevalence_by_hand():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    s = np.array([0.9, 0.8, 0.7, 0.2, 0.6, 0.3, 0.2, 0.1, 0.1, 0.05])
    c = operating.operating_point(y, s, 0.5, prevalence=0.02)
    assert (c["tp"], c["fn"], c["fp"], c["tn"]) == (3, 1, 1, 5)
    se, sp = 3 / 4, 5 / 6
    table = operating.rates_table({"densenet121": c}, prevalence=0.02)
    col = table["DenseNet121"]
    assert col["Threshold"] == "0.500 (raw score)"  # on the page's one scale, and saying so
    assert col["Sensitivity"].startswith("75.0% (3/4) [") and col["Specificity"].startswith("83.3% (5/6) [")
    assert col["PPV"].startswith("75.0% (3/4)") and col["NPV"].startswith("83.3% (5/6)")
    ppv = se * 0.02 / (se * 0.02 + (1 - sp) * 0.98)
    npv = sp * 0.98 / (sp * 0.98 + (1 - se) * 0.02)
    assert col["PPV at 2.0% prevalence"] == f"{ppv:.1%}" and col["NPV at 2.0% prevalence"] == f"{npv:.1%}"
    frame = operating.confusion_frame(c, "X")
    assert frame.loc["X present", "Called X"] == 3 and frame.loc["X absent", "Called not X"] == 5
    assert operating.test_prevalence(y) == 0.4 and operating.default_prevalence_percent(y) == 40.0
    assert operating.default_prevalence_percent(np.zeros(5)) == 0.1 and operating.test_prevalence([]) == 0.0
    none = operating.rates_table({"resnet50": operating.operating_point(y, s, None)})
    assert none.loc["Threshold", "ResNet50"] == "—" and none.loc["Sensitivity", "ResNet50"] == "—"


def test_tables_sit_side_by_side_only_where_their_longest_words_fit(mc):
    c = {"tp": 1, "fn": 2, "fp": 3, "tn": 4}
    short = operating.confusion_frame(c, "COVID-19")   # longest word per column: 8 characters ("COVID-19")
    assert min_table_width(short) == 3 * (CELL_PAD_PX + 8 * CHAR_PX)
    assert tables_per_row([short] * 3) == 3 and tables_per_row([short, None]) == 2
    long = operating.confusion_frame(c, "Pleural_Thickening")  # an unbreakable 18-character word, 3 columns
    assert min_table_width(long) > MAIN_WIDTH / 2 and tables_per_row([long, long]) == 1
    # Three backbones' 3-class argmax matrices (4 columns each): two a row at 1280 px, all three at 1920.
    frame = operating.argmax_confusion(mc.analysis, ARCHS[0])[0]
    assert tables_per_row([frame] * 3) == 2 and tables_per_row([frame] * 3, width=1400) == 3
    assert tables_per_row([None, None]) == 2 and tables_per_row([]) == 1


def test_argmax_confusion_matches_hand_counts(mc):
    for arch in ARCHS:
        frame, heading = operating.argmax_confusion(mc.analysis, arch)
        truth, pred = mc.onehot.argmax(1), mc.test_probs[arch].argmax(1)
        np.testing.assert_array_equal(frame.to_numpy(), confusion_matrix(truth, pred, labels=range(len(mc.names))))
        assert list(frame.columns) == [f"Predicted {n}" for n in mc.names]
        assert heading.endswith(f"accuracy {np.mean(truth == pred):.1%} on {len(truth)} test images")
    assert operating.argmax_confusion(runs.Analysis({}), "densenet121") is None


def test_argmax_confusion_of_an_external_set_counts_its_own_scores(mc):
    """An external set's matrix comes from its stored scores, not the internal split's analysis."""
    rng = np.random.default_rng(3)
    onehot = np.eye(len(mc.names))[rng.integers(0, len(mc.names), 17)]
    probs = {ARCHS[0]: rng.dirichlet(np.ones(len(mc.names)), 17)}
    frame, heading = operating.argmax_confusion(mc.analysis, ARCHS[0], ("siteX", onehot, probs), mc.names)
    np.testing.assert_array_equal(frame.to_numpy(), confusion_matrix(onehot.argmax(1), probs[ARCHS[0]].argmax(1),
                                                                     labels=range(len(mc.names))))
    assert heading.endswith("on 17 images of siteX") and frame.to_numpy().sum() == 17
    assert operating.argmax_confusion(mc.analysis, ARCHS[1], ("siteX", onehot, probs), mc.names) is None


# ---------------------------------------------------------------- calibration

def test_calibration_table_and_reliability_multiclass(mc):
    table = compare.calibration_table(mc.analysis, ARCHS)
    for arch in ARCHS:
        cal = mc.raw["backbones"][arch]["calibration"]
        col = table[{"densenet121": "DenseNet121", "resnet50": "ResNet50"}[arch]]
        assert col["Temperature"] == f"{cal['temperature']:.2f}"
        assert col["ECE before"] == f"{cal['before']['ece']:.3f}" and col["Brier after"] == f"{cal['after']['brier']:.3f}"
    fig = figures.reliability_figure(mc.analysis, ARCHS, None, colours(), MULTICLASS)
    traces = [t for t in fig.data if t.mode == "lines+markers"]
    assert len(traces) == 2 * len(ARCHS)  # before and after, per backbone
    bins = [b for b in mc.raw["backbones"]["densenet121"]["calibration"]["before"]["reliability"] if b["count"]]
    np.testing.assert_allclose(traces[0].x, [b["confidence"] for b in bins])
    np.testing.assert_allclose(traces[0].y, [b["accuracy"] for b in bins])
    assert max(traces[0].marker.size) == pytest.approx(20)  # the fullest bin is the biggest marker
    assert fig.layout.yaxis.title.text == "Observed accuracy" and tuple(fig.layout.xaxis.range) == (0, 1)
    assert [t.showlegend for t in traces] == [True, True, False, False]  # one legend entry per backbone
    assert compare.has_calibration(mc.analysis, ARCHS) and not compare.has_calibration(runs.Analysis({}), ARCHS)


def test_calibration_per_finding_multilabel(ml):
    cls = ml.names[1]
    assert compare.calibration_class(MULTILABEL, cls) == cls
    assert compare.calibration_class(MULTILABEL, compare.MACRO) is None and compare.calibration_class(MULTICLASS, cls) is None
    table = compare.calibration_table(ml.analysis, ARCHS, cls=cls)
    cal = ml.raw["backbones"]["densenet121"]["calibration"]
    assert table.loc["Temperature", "DenseNet121"] == f"{cal['temperature'][1]:.2f}"  # one temperature per class
    assert table.loc["ECE before", "DenseNet121"] == f"{cal['before']['ece_per_class'][cls]:.3f}"
    assert table.loc["Brier after", "DenseNet121"] == f"{cal['after']['brier_per_class'][cls]:.3f}"
    assert compare.calibration_table(ml.analysis, ARCHS).loc["Temperature", "DenseNet121"] == "per class"
    fig = figures.reliability_figure(ml.analysis, ARCHS, cls, colours(), MULTILABEL)
    bins = [b for b in cal["before"]["reliability_per_class"][cls] if b["count"]]
    np.testing.assert_allclose(fig.data[1].x, [b["confidence"] for b in bins])
    assert fig.layout.yaxis.title.text == "Observed frequency of the finding"
    assert f"probability of {cls}" in compare.reliability_caption(MULTILABEL, cls)


# ---------------------------------------------------------------- subgroups and confounding

def test_subgroup_table_figure_and_confounding(ml):
    cls = ml.names[0]
    table = compare.subgroup_table(ml.analysis, ARCHS, cls)
    rows = [r for r in ml.raw["backbones"]["densenet121"]["subgroups"]["rows"] if r["class"] == cls]
    assert len(table) == len(rows) and set(table["Attribute"]) <= {"Source", "Sex", "Age group", "View"}
    want = [np.nan if r["auc"] is None else r["auc"] for r in rows]
    np.testing.assert_allclose(table["DenseNet121 AUC"], want)
    fig = figures.subgroup_figure(table, ARCHS, colours(), cls)
    assert [t.name for t in fig.data] == ["DenseNet121", "ResNet50"]
    np.testing.assert_allclose(np.array(fig.data[0].x, float), want)
    # The backbones sit side by side within a row, never on top of each other.
    assert all(a < b for a, b in zip(fig.data[0].y, fig.data[1].y))
    assert tuple(fig.layout.yaxis.range) == (len(table) - 0.5, -0.5) and tuple(fig.layout.xaxis.range) == (0, 1.04)
    shown = compare.subgroup_display(table, ARCHS)
    assert list(shown.columns) == ["Images", "Patients", "Positives", "DenseNet121 AUC (95% CI)", "ResNet50 AUC (95% CI)"]
    # One row per subgroup, named as the forest plot names it (st.table shows the index).
    assert shown.index.name == "Subgroup" and list(shown.index) == [f"{a}: {g}" for a, g in zip(table["Attribute"],
                                                                                             table["Group"])]
    # The fixture's first class comes mostly from source B: flagged, by class too.
    assert any(cls in s for s in compare.confounding_for(ml.analysis))
    assert compare.confounding_for(ml.analysis, cls) and all(cls in s for s in compare.confounding_for(ml.analysis, cls))


def test_subgroup_row_without_any_auc_is_annotated():
    table = pd.DataFrame([{"Attribute": "Sex", "Group": "F", "Images": 5, "Patients": 3, "Positives": 0,
                           "DenseNet121 AUC": np.nan, "DenseNet121 CI low": np.nan, "DenseNet121 CI high": np.nan},
                          {"Attribute": "Sex", "Group": "M", "Images": 9, "Patients": 5, "Positives": 4,
                           "DenseNet121 AUC": 0.7, "DenseNet121 CI low": 0.5, "DenseNet121 CI high": 0.9}])
    fig = figures.subgroup_figure(table, ["densenet121"], colours(), "Effusion")
    notes = [a for a in fig.layout.annotations if a.text.startswith("no AUC")]
    assert len(notes) == 1 and notes[0].y == 0 and notes[0].text == "no AUC: no Effusion images"
    assert list(fig.data[0].error_x.array)[1] == pytest.approx(0.2)


# ---------------------------------------------------------------- gallery

def test_gallery_decision_select_and_explained_classes(ml, mc):
    cls = ml.names[2]
    points = {"densenet121": {"threshold": 0.3}, "resnet50": {"threshold": None}}
    thresholds, rule = gallery.decision(MULTILABEL, cls, ("densenet121", "resnet50"), points)
    assert thresholds == (0.3, 0.5) and "DenseNet121 ≥ 0.300" in rule and "ResNet50 ≥ 0.500" in rule
    frame, _ = gallery.select(ml.onehot, ml.test_probs, tuple(ARCHS), MULTILABEL, ml.names, cls, points, 0.9, "disagree")
    j = ml.names.index(cls)
    sa, sb = ml.test_probs["densenet121"][:, j], ml.test_probs["resnet50"][:, j]
    disagree = int(((sa >= 0.3) != (sb >= 0.5)).sum())
    assert frame["total"].iloc[0] == disagree and len(frame) == min(disagree, gallery.LIMIT)
    assert list(frame["gap"]) == sorted(frame["gap"], reverse=True)
    assert gallery.summary(frame, len(sa), rule).startswith(f"{disagree} of {len(sa)} test images")
    assert gallery.needs_class(MULTILABEL, compare.MACRO) and not gallery.needs_class(MULTICLASS, compare.MACRO)

    frame, rule = gallery.select(mc.onehot, mc.test_probs, tuple(ARCHS), MULTICLASS, mc.names, compare.MACRO, {}, 0.5,
                                 "confident")
    assert "most probable class" in rule
    tiles = gallery.tiles(frame, mc.rows)
    options = gallery.pick_options(frame, mc.rows, mc.images["image_id"])
    assert [r for r, _ in tiles] == list(options) and all(mc.rows[p] in options for p in frame["pos"])
    row, text = tiles[0]
    assert text.startswith("truth: ") and "✗" in text and options[row].startswith(mc.images["image_id"].iloc[row])
    explained = gallery.explained_classes(MULTICLASS, mc.test_probs, mc.rows, row, tuple(ARCHS), mc.names, compare.MACRO)
    pos = int(np.flatnonzero(mc.rows == row)[0])
    assert explained == {a: int(mc.test_probs[a][pos].argmax()) for a in ARCHS}
    assert gallery.explained_classes(MULTILABEL, {}, mc.rows, row, tuple(ARCHS), ml.names, cls) == {a: 2 for a in ARCHS}


def test_heatmap_caption_names_the_overlay_colormap():
    text = gallery.heatmap_caption("resnet50", "Normal", MULTICLASS)
    assert text.startswith("ResNet50: class activation map for 'Normal' (its prediction).")
    assert f"({DEFAULT_COLORMAP}, scaled per image)" in text
    assert "(its prediction)" not in gallery.heatmap_caption("resnet50", "Effusion", MULTILABEL)
    assert "Yellow = strongest evidence" in gallery.heatmap_caption("resnet50", "Effusion", MULTILABEL, "cividis")


# ---------------------------------------------------------------- records accessors the page relies on

def test_records_calibration_and_baseline_accessors(ml):
    b = ml.analysis.backbone("densenet121")
    cal = ml.raw["backbones"]["densenet121"]["calibration"]
    cls = ml.names[3]
    assert b.calibration_scores("after") == {"ece": cal["after"]["ece"], "brier": cal["after"]["brier"]}
    assert b.calibration_scores("before", cls)["ece"] == cal["before"]["ece_per_class"][cls]
    assert b.reliability("after", cls) == cal["after"]["reliability_per_class"][cls]
    assert b.reliability("after") == cal["after"]["reliability"] and b.reliability("after", "unknown") == b.reliability("after")
    assert ml.analysis.names == ml.names and ml.analysis.task == MULTILABEL and ml.analysis.n_boot == 40
    assert ml.analysis.n_images("test") == len(ml.onehot)
    # The baseline as analysis/report.py writes it (per_class -> auc) and the older flat layout.
    per_class = runs.Analysis({"baseline": {"test": {"per_class": {"A": {"auc": 0.7}}, "macro_auc": 0.65}}})
    assert per_class.baseline_auc("A") == 0.7 and per_class.baseline_auc("macro") == 0.65
    assert runs.Analysis({"baseline": {"test": {"auc": {"A": 0.6}}}}).baseline_auc("A") == 0.6
    assert runs.Analysis({}).baseline_auc("A") is None and runs.Analysis({}).baseline_source is None


# ---------------------------------------------------------------- glossary links

LINK = re.compile(r"\[([^\]]+)\]\(/" + glossary.PAGE_URL + r"#([a-z0-9-]+)\)")
SLUGS = {glossary.slug(e.term): e.term for e in glossary.entries()}


def linked_terms(text: str) -> set[str]:
    """Glossary terms a caption links (every link must land on a known entry)."""
    found = LINK.findall(text)
    assert all(slug in SLUGS for _, slug in found), found
    return {SLUGS[slug] for _, slug in found}


def test_captions_link_every_statistic_they_name(mc, ml):
    a = _hand_analysis()
    y = np.array([1, 0, 0, 1])
    expected = {
        compare.CURVES_CAPTION: {"ROC curve", "AUC", "95% CI", "Precision-recall curve"},
        compare.header_caption(a, LabelSpace(("A", "B"), MULTICLASS)): {"95% CI", "Operating point", "Temperature scaling"},
        compare.confounding_banner(2): {"Cramér's V", "AUC"},
        compare.confounding_warning("Source predicts A (Cramér's V 0.9)."): {"Cramér's V"},
        compare.NO_CONFOUNDING: {"Cramér's V"},
        compare.SUBGROUP_CAPTION: {"Subgroup AUC"},
        compare.CLASS_HELP: {"Macro average"},
        compare.difference_caption("densenet121", "resnet50", 3): {"AUC", "95% CI", "DeLong test", "Holm correction"},
        compare.baseline_text(a, "A"): {"Thumbnail baseline", "AUC"},
        compare.source_baseline_text(a): {"Thumbnail baseline"},
        compare.mean_ap_text(a, ARCHS): {"Precision-recall curve"},
        compare.reliability_caption(MULTICLASS, "A"): {"Reliability diagram", "Calibration", "ECE", "Brier score",
                                                       "Temperature scaling"},
        operating.preset_caption("youden"): {"Operating point", "Youden's J"},
        operating.preset_caption(operating.CUSTOM): {"Operating point"},
        operating.prevalence_help(y): {"PPV", "NPV", "Prevalence"},
        operating.rates_heading(y, "A"): {"Sensitivity", "Specificity", "PPV", "NPV", "Prevalence"},
        gallery.summary(pd.DataFrame({"total": [3]}), 10, "rule"): {"CAM"},
    }
    for text, terms in expected.items():
        assert terms <= linked_terms(text), (text, terms - linked_terms(text))
    # The links read as part of the sentence and the numbers around them are unchanged.
    assert compare.difference_caption("resnet50", "tinycnn", 3).startswith("Difference = ResNet50 − Tiny CNN")
    assert operating.prevalence_help(y) == (
        "Test split: 50.0%. [PPV](/glossary#ppv) and [NPV](/glossary#npv) depend on the "
        "[prevalence](/glossary#prevalence); sensitivity and specificity do not.")
    assert "**0.660**" in compare.baseline_text(a, "A")


# ---------------------------------------------------------------- the thin page

def test_views_are_streamlit_free_and_the_page_is_thin():
    for path in sorted((REPO / "covidviz" / "views").glob("compare*.py")):
        tree = ast.parse(path.read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not any(m.split(".")[0] == "streamlit" or m == "covidviz.ui" for m in imported), path
    page = REPO / "app_pages" / "compare.py"
    source = page.read_text()
    assert len(source.splitlines()) <= 250
    assert source.rstrip().splitlines()[-1] == 'ui.run_page("Compare backbones", render)'
    # Tables are st.table: every column shown and cells wrapped at any width (a dataframe grid clips).
    assert ".dataframe(" not in source
    for fn in (n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef)):
        names = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name)}
        assert names & {"st", "ui"}, f"{fn.name} in the page draws nothing: move it to covidviz/views"
