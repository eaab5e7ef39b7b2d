"""Data shaping for the "Compare backbones" page (no streamlit here, so everything is unit-testable).

The page reads the experiment's ``analysis.json`` (layout: ``covidviz.analysis.report``) for the
stored curves, CIs, paired tests, thresholds, calibration and subgroups, and recomputes from the
stored TEST probabilities only what the user changes interactively: the confusion counts at a free
threshold, PPV/NPV at another prevalence, and the disagreement gallery.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from covidviz import runs
from covidviz.analysis.thresholds import POINTS, confusion_at, ppv_npv_at_prevalence
from covidviz.data.labels import MULTICLASS

MACRO = "Macro average (all classes)"
ALPHA = 0.05
PRESET_LABELS = {"youden": "Youden (best sens + spec on validation)",
                 "high_sensitivity": "High sensitivity (≥ 95% on validation)",
                 "high_specificity": "High specificity (≥ 95% on validation)"}
CUSTOM = "custom"


# ---------------------------------------------------------------- the analysis file

def load_analysis(exp: runs.Experiment) -> dict | None:
    """The experiment's analysis.json, or None when ``train.py analyze`` has not been run on it."""
    if not exp.has_artifact(runs.ANALYSIS):
        return None
    return exp.load_json(runs.ANALYSIS)


def analyse_command(exp_path: str | Path, repo: str | Path) -> str:
    """The exact command that writes analysis.json (path relative to the repository when inside it)."""
    p = Path(exp_path).resolve()
    try:
        shown = p.relative_to(Path(repo).resolve())
    except ValueError:
        shown = p
    return f"python train.py analyze {shown}"


def analysed_backbones(analysis: dict, backbones: list[str]) -> list[str]:
    """Backbones of the experiment that the analysis covers (in experiment order)."""
    return [a for a in backbones if a in (analysis.get("backbones") or {})]


def comparison(analysis: dict, a: str, b: str) -> tuple[dict | None, bool]:
    """The stored paired comparison of ``a`` and ``b`` and whether it is stored as (b, a)
    (then every difference must be negated to read as a - b)."""
    for cmp in analysis.get("comparisons") or []:
        if (cmp["a"], cmp["b"]) == (a, b):
            return cmp, False
        if (cmp["a"], cmp["b"]) == (b, a):
            return cmp, True
    return None, False


# ---------------------------------------------------------------- curves

def _auc_text(d: dict | None) -> str:
    if not d or d.get("auc") is None:
        return "AUC n/a"
    ci = "" if d.get("ci_low") is None else f" (95% CI {d['ci_low']:.3f}–{d['ci_high']:.3f})"
    return f"AUC {d['auc']:.3f}{ci}"


def roc_curves(analysis: dict, archs: list[str], cls: str) -> dict[str, dict]:
    """arch -> {"fpr", "tpr", "auc", "ci_low", "ci_high", "text"} for a class or ``MACRO``
    (None curve where the class has a single outcome in the test split)."""
    out = {}
    for arch in archs:
        test = analysis["backbones"][arch]["test"]
        d = test["macro"] if cls == MACRO else test["per_class"].get(cls) or {}
        roc = d.get("roc") or None
        out[arch] = {"fpr": roc["fpr"] if roc else None, "tpr": roc["tpr"] if roc else None,
                     "auc": d.get("auc"), "ci_low": d.get("ci_low"), "ci_high": d.get("ci_high"),
                     "text": _auc_text(d)}
    return out


def pr_curves(analysis: dict, archs: list[str], cls: str) -> dict[str, dict]:
    """arch -> {"precision", "recall", "ap", "prevalence"} of one class (None curve if undefined)."""
    out = {}
    for arch in archs:
        d = analysis["backbones"][arch]["test"]["per_class"].get(cls) or {}
        pr = d.get("pr") or None
        out[arch] = {"precision": pr["precision"] if pr else None, "recall": pr["recall"] if pr else None,
                     "ap": d.get("ap"), "prevalence": pr.get("prevalence") if pr else None}
    return out


# ---------------------------------------------------------------- per-class table

def class_table(analysis: dict, archs: list[str], names: list[str], label=str,
                pair: tuple[str, str] | None = None) -> pd.DataFrame:
    """One row per class (+ the macro average): positives in test, AUC and 95% CI per backbone, and for
    ``pair`` = (a, b) the difference a - b, its DeLong 95% CI, p-value, Holm-adjusted p-value and the
    winner, named only when the Holm-adjusted p < 0.05 (macro: when the paired bootstrap CI of the
    difference excludes 0). Numbers are floats (NaN where undefined), so the CSV is machine-readable.
    """
    cmp, flip = comparison(analysis, *pair) if pair else (None, False)
    sign = -1.0 if flip else 1.0
    rows = []
    for cls in list(names) + [MACRO]:
        first = analysis["backbones"][archs[0]]["test"]
        d0 = first["macro"] if cls == MACRO else first["per_class"].get(cls, {})
        row = {"Class": "Macro average" if cls == MACRO else cls,
               "Test positives": np.nan if cls == MACRO else d0.get("n_pos", np.nan)}
        for arch in archs:
            test = analysis["backbones"][arch]["test"]
            d = test["macro"] if cls == MACRO else test["per_class"].get(cls, {})
            row[f"{label(arch)} AUC"] = _num(d.get("auc"))
            row[f"{label(arch)} CI low"] = _num(d.get("ci_low"))
            row[f"{label(arch)} CI high"] = _num(d.get("ci_high"))
        if pair and cmp is not None:
            a, b = pair
            c = cmp["macro"] if cls == MACRO else cmp["per_class"].get(cls, {})
            diff = _num(c.get("diff")) * sign
            if cls == MACRO:  # no DeLong test for the macro: the paired patient bootstrap CI
                lo, hi = _num(c.get("boot_ci_low")) * sign, _num(c.get("boot_ci_high")) * sign
                p, p_holm = np.nan, np.nan
                significant = np.isfinite(lo) and np.isfinite(hi) and (lo > 0 or hi < 0)
            else:
                lo, hi = _num(c.get("ci_low")) * sign, _num(c.get("ci_high")) * sign
                p, p_holm = _num(c.get("p_value")), _num(c.get("p_holm"))
                significant = np.isfinite(p_holm) and p_holm < ALPHA
            if flip:
                lo, hi = hi, lo
            row.update({"Difference": diff, "Difference CI low": lo, "Difference CI high": hi,
                        "p-value (DeLong)": p, "p-value (Holm)": p_holm,
                        "Winner": (label(a) if diff > 0 else label(b)) if significant and np.isfinite(diff) else ""})
        rows.append(row)
    return pd.DataFrame(rows).set_index("Class")


def _num(v) -> float:
    return np.nan if v is None else float(v)


def display_table(table: pd.DataFrame, archs: list[str], label=str) -> pd.DataFrame:
    """``class_table`` as text: 'AUC (low–high)' per backbone, signed difference with CI, p-values."""
    out = pd.DataFrame(index=table.index)
    out["Test positives"] = [("" if not np.isfinite(v) else f"{int(v)}") for v in table["Test positives"]]
    for arch in archs:
        n = label(arch)
        out[f"{n} AUC (95% CI)"] = [_ci_text(a, lo, hi) for a, lo, hi in
                                    zip(table[f"{n} AUC"], table[f"{n} CI low"], table[f"{n} CI high"])]
    if "Difference" in table:
        out["Winner"] = [w or "—" for w in table["Winner"]]  # beside the AUCs: the first thing to read
        out["Difference (95% CI)"] = [_ci_text(d, lo, hi, signed=True) for d, lo, hi in
                                      zip(table["Difference"], table["Difference CI low"], table["Difference CI high"])]
        out["p (Holm)"] = [p_text(p) if not np.isfinite(p) else f"{p_text(p)} ({p_text(h)})"
                                    for p, h in zip(table["p-value (DeLong)"], table["p-value (Holm)"])]
    return out


def _ci_text(v, lo, hi, signed: bool = False) -> str:
    if v is None or not np.isfinite(v):
        return "n/a"
    f = "+.3f" if signed else ".3f"
    sep = ", " if signed else "–"  # an en dash would read as a minus sign between signed numbers
    ci = "" if not (np.isfinite(lo) and np.isfinite(hi)) else f" ({lo:{f}}{sep}{hi:{f}})"
    return f"{v:{f}}{ci}"


def p_text(p) -> str:
    if p is None or not np.isfinite(p):
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


# ---------------------------------------------------------------- operating points

def test_arrays(images: pd.DataFrame, labels, probs: dict[str, np.ndarray]) -> tuple[np.ndarray, dict, np.ndarray]:
    """(test one-hot (N, C), arch -> test probabilities (N, C) float64, images.parquet rows of the test images)."""
    test = (images["split"].astype(str).str.lower() == "test").to_numpy()
    rows = np.flatnonzero(test)
    onehot = labels.onehot(images["labels"].to_numpy())[test]
    return onehot, {a: np.asarray(p, np.float64)[test] for a, p in probs.items()}, rows


def presets(analysis: dict, arch: str, cls: str) -> dict[str, float | None]:
    """Validation-chosen thresholds of one backbone and class: {youden|high_sensitivity|high_specificity: t}."""
    points = (analysis["backbones"][arch]["thresholds"]["per_class"].get(cls) or {}).get("points") or {}
    return {p: (points.get(p) or {}).get("threshold") for p in POINTS}


def operating_point(y, s, threshold: float | None, prevalence: float | None = None) -> dict:
    """``confusion_at`` on the test labels/scores, plus PPV/NPV at ``prevalence`` (Bayes) and the ROC
    coordinates (fpr, tpr) of the point."""
    c = confusion_at(y, s, threshold)
    sens = (c["sensitivity"] or {}).get("value") if c["sensitivity"] else None
    spec = (c["specificity"] or {}).get("value") if c["specificity"] else None
    c["fpr"] = None if spec is None else 1.0 - spec
    c["tpr"] = sens
    c["at_prevalence"] = ppv_npv_at_prevalence(sens, spec, prevalence) if prevalence is not None else None
    return c


def confusion_frame(c: dict, cls: str) -> pd.DataFrame:
    """2x2 table: rows = truth, columns = the call at the threshold."""
    return pd.DataFrame([[c["tp"], c["fn"]], [c["fp"], c["tn"]]],
                        index=pd.Index([f"{cls} present", f"{cls} absent"], name="Truth"),
                        columns=[f"Called {cls}", f"Called not {cls}"])


def rates_table(points: dict[str, dict], label=str, prevalence: float | None = None) -> pd.DataFrame:
    """Per backbone: threshold, sensitivity, specificity, PPV and NPV on test (k/n and Wilson 95% CI);
    PPV/NPV at ``prevalence`` when given."""
    rows = {}
    for arch, c in points.items():
        r = {"Threshold": "—" if c["threshold"] is None else f"{c['threshold']:.3f}"}
        for key, name in (("sensitivity", "Sensitivity"), ("specificity", "Specificity"), ("ppv", "PPV"), ("npv", "NPV")):
            r[name] = _rate_text(c[key], c, key)
        if prevalence is not None:
            at = c.get("at_prevalence") or {}
            r[f"PPV at {prevalence:.1%} prevalence"] = _pct(at.get("ppv"))
            r[f"NPV at {prevalence:.1%} prevalence"] = _pct(at.get("npv"))
        rows[label(arch)] = r
    return pd.DataFrame(rows).rename_axis("On test")


_NUMERATORS = {"sensitivity": "tp", "specificity": "tn", "ppv": "tp", "npv": "tn"}


def _rate_text(rate: dict | None, c: dict, key: str) -> str:
    if not rate or rate.get("value") is None:
        return "n/a (no images)" if rate is not None else "—"
    ci = "" if rate.get("ci_low") is None else f" [{rate['ci_low']:.0%}–{rate['ci_high']:.0%}]"
    return f"{rate['value']:.1%} ({c[_NUMERATORS[key]]}/{rate['n']}){ci}"


def _pct(v) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.1%}"


# ---------------------------------------------------------------- calibration

def calibration_table(analysis: dict, archs: list[str], label=str, cls: str | None = None) -> pd.DataFrame:
    """Per backbone: temperature, ECE and Brier before/after temperature scaling (test split).
    ``cls`` (multi-label only): that class's ECE/Brier/temperature instead of the averages."""
    rows = {}
    for arch in archs:
        cal = analysis["backbones"][arch].get("calibration")
        if not cal:
            rows[label(arch)] = {"Temperature": "—"}
            continue
        t = cal.get("temperature")
        names = analysis["meta"]["names"]
        if isinstance(t, list):
            t = t[names.index(cls)] if cls in names else None
            t_text = "per class" if t is None else f"{t:.2f}"
        else:
            t_text = "—" if t is None else f"{t:.2f}"
        r = {"Temperature": t_text}
        for when, name in (("before", "before"), ("after", "after")):
            s = cal.get(when) or {}
            e = (s.get("ece_per_class") or {}).get(cls) if cls and "ece_per_class" in s else s.get("ece")
            b = (s.get("brier_per_class") or {}).get(cls) if cls else s.get("brier")
            r[f"ECE {name}"] = "—" if e is None else f"{e:.3f}"
            r[f"Brier {name}"] = "—" if b is None else f"{b:.3f}"
        rows[label(arch)] = r
    return pd.DataFrame(rows).rename_axis("Calibration (test)")


def reliability(analysis: dict, arch: str, when: str, cls: str | None = None) -> list[dict]:
    """Reliability bins (``centre``, ``confidence``, ``accuracy``, ``count``) before/after; per class
    for multi-label when ``cls`` is given, else the stored default (top class / pooled)."""
    cal = analysis["backbones"][arch].get("calibration") or {}
    s = cal.get(when) or {}
    if cls and cls in (s.get("reliability_per_class") or {}):
        return s["reliability_per_class"][cls]
    return s.get("reliability") or []


# ---------------------------------------------------------------- disagreement gallery

def disagreements(onehot: np.ndarray, pa: np.ndarray, pb: np.ndarray, task: str, names: list[str],
                  cls: str | None = None, thresholds: tuple[float, float] = (0.5, 0.5),
                  confident: float = 0.9, kind: str = "disagree", limit: int = 24) -> pd.DataFrame:
    """Test images (positions in the test arrays) where two backbones disagree or either is confidently
    wrong, most different first.

    Multi-class: the decision is the argmax; "confidently wrong" = a wrong argmax with probability
    >= ``confident``. Multi-label (``cls`` required): a backbone calls ``cls`` present when its probability
    >= its threshold; "confidently wrong" = probability >= ``confident`` on an image without the finding
    or <= 1 - ``confident`` on one with it. Columns: pos, truth, p_a, p_b, call_a, call_b, wrong_a,
    wrong_b, gap (|p_a - p_b| of the class shown).
    """
    onehot = np.asarray(onehot)
    if task == MULTICLASS:
        truth = np.argmax(onehot, axis=1)
        ca, cb = np.argmax(pa, axis=1), np.argmax(pb, axis=1)
        conf_a, conf_b = pa.max(axis=1), pb.max(axis=1)
        wrong_a, wrong_b = ca != truth, cb != truth
        confident_a, confident_b = wrong_a & (conf_a >= confident), wrong_b & (conf_b >= confident)
        idx = np.arange(len(truth))
        gap = np.abs(pa[idx, truth] - pb[idx, truth])
        frame = pd.DataFrame({"pos": idx, "truth": [names[t] for t in truth],
                              "call_a": [names[c] for c in ca], "call_b": [names[c] for c in cb],
                              "p_a": conf_a, "p_b": conf_b, "wrong_a": wrong_a, "wrong_b": wrong_b,
                              "confident_a": confident_a, "confident_b": confident_b, "gap": gap})
        disagree = ca != cb
    else:
        if cls not in names:
            raise ValueError(f"multi-label disagreements need a class, one of {names}")
        j = names.index(cls)
        y = onehot[:, j] > 0
        sa, sb = pa[:, j], pb[:, j]
        ta, tb = thresholds
        ca, cb = sa >= ta, sb >= tb
        wrong_a, wrong_b = ca != y, cb != y
        confident_a = (~y & (sa >= confident)) | (y & (sa <= 1 - confident))
        confident_b = (~y & (sb >= confident)) | (y & (sb <= 1 - confident))
        word = {True: cls, False: f"no {cls}"}
        frame = pd.DataFrame({"pos": np.arange(len(y)), "truth": [word[bool(v)] for v in y], "positive": y,
                              "call_a": [word[bool(v)] for v in ca], "call_b": [word[bool(v)] for v in cb],
                              "p_a": sa, "p_b": sb, "wrong_a": wrong_a, "wrong_b": wrong_b,
                              "confident_a": confident_a, "confident_b": confident_b, "gap": np.abs(sa - sb)})
        disagree = ca != cb
    keep = disagree if kind == "disagree" else (frame["confident_a"] | frame["confident_b"]).to_numpy()
    frame = frame[keep]
    if kind != "disagree":  # most confident mistake first
        worst = np.maximum(np.where(frame["confident_a"], _wrongness(frame, "a", task), 0),
                           np.where(frame["confident_b"], _wrongness(frame, "b", task), 0))
        frame = frame.assign(_k=worst).sort_values(["_k", "pos"], ascending=[False, True]).drop(columns="_k")
    else:
        frame = frame.sort_values(["gap", "pos"], ascending=[False, True])
    return frame.head(limit).reset_index(drop=True).assign(total=int(keep.sum()))


def _wrongness(frame: pd.DataFrame, side: str, task: str) -> np.ndarray:
    """How confident the wrong call is: the top probability (multi-class), else p or 1 - p."""
    p = frame[f"p_{side}"].to_numpy()
    if task == MULTICLASS:
        return p
    positive = frame["positive"].to_numpy()
    return np.where(positive, 1 - p, p)


# ---------------------------------------------------------------- subgroups

COLUMN_NAMES = {"source": "Source", "sex": "Sex", "age_group": "Age group", "view": "View"}


def subgroup_table(analysis: dict, archs: list[str], cls: str, label=str) -> pd.DataFrame:
    """Long table for one class: column, group, n images / patients / positives, per backbone AUC + CI."""
    rows = {}
    for arch in archs:
        for r in (analysis["backbones"][arch].get("subgroups") or {}).get("rows") or []:
            if r["class"] != cls:
                continue
            key = (r["column"], r["value"])
            row = rows.setdefault(key, {"Attribute": COLUMN_NAMES.get(r["column"], r["column"]), "Group": r["value"],
                                        "Images": r["n"], "Patients": r["n_patients"], "Positives": r["n_pos"]})
            row[f"{label(arch)} AUC"] = _num(r["auc"])
            row[f"{label(arch)} CI low"] = _num(r["ci_low"])
            row[f"{label(arch)} CI high"] = _num(r["ci_high"])
    return pd.DataFrame(list(rows.values()))


def confounding_for(analysis: dict, cls: str | None = None) -> list[str]:
    """Confounding sentences (all, or those naming ``cls``)."""
    details = analysis.get("confounding_details") or []
    if cls is None or not details:
        return list(analysis.get("confounding") or [])
    return [d["sentence"] for d in details if d.get("class") == cls]


def baseline_auc(analysis: dict, cls: str) -> float | None:
    base = analysis.get("baseline") or {}
    test = base.get("test") or {}
    if cls == MACRO:
        return test.get("macro_auc")
    return ((test.get("per_class") or {}).get(cls) or {}).get("auc")


# ---------------------------------------------------------------- training curves
