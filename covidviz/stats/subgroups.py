"""Subgroup AUCs and confounding warnings (the shortcut problem of chest X-ray models).

Subgroup columns: ``source``, ``sex``, ``age_group`` (derived from ``age``: <18, 18-40, 40-60,
60-80, 80+) and ``view``. A column is analysed when it has at least two known values; images whose
value is missing ('' / NaN) form one more group, ``unknown``, because missingness itself can be a
shortcut (e.g. one source that never records sex).

Confounding rule (per column and class, on the table it is given; the report passes every split):
the column is *confounded with the class* when Cramér's V between the column (its values, unknown
included) and the class indicator is >= 0.5. For a binary indicator V is sqrt(chi2 / n): 0 when the
class prevalence is the same in every group, 1 when the groups separate the class perfectly. It is
only judged with at least ``MIN_IMAGES`` images and at least 2 positives and 2 negatives.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from covidviz.stats.metrics import PatientBootstrap, _f, has_both_outcomes, percentile_ci, rank_auc

COLUMNS = ("source", "sex", "age_group", "view")
AGE_BINS = (18, 40, 60, 80)
AGE_LABELS = ("<18", "18-40", "40-60", "60-80", "80+")
UNKNOWN = "unknown"
CRAMERS_V_THRESHOLD = 0.5
MIN_IMAGES = 20


def age_group(age) -> pd.Series:
    """Age in years -> '<18', '18-40', '40-60', '60-80', '80+' ('' when unknown); 40 falls in 40-60."""
    a = pd.to_numeric(pd.Series(age), errors="coerce").to_numpy(np.float64)
    idx = np.searchsorted(np.asarray(AGE_BINS, np.float64), a, side="right")
    return pd.Series([AGE_LABELS[i] if np.isfinite(v) else "" for i, v in zip(idx, a)], dtype=object)


def subgroup_values(images: pd.DataFrame, column: str) -> pd.Series | None:
    """The column as strings with '' -> 'unknown' (``age_group`` derived from ``age``); None if absent."""
    if column == "age_group":
        if "age" not in images.columns:
            return None
        vals = age_group(images["age"].to_numpy())
    elif column in images.columns:
        vals = pd.Series(images[column].to_numpy(), dtype=object)
        vals = vals.where(vals.notna(), "").astype(str).str.strip()
    else:
        return None
    vals = vals.reset_index(drop=True)
    return vals.where(vals != "", UNKNOWN)


def analysable(values: pd.Series | None) -> bool:
    return values is not None and values[values != UNKNOWN].nunique() >= 2


def _ordered(values: pd.Series, column: str) -> list[str]:
    present = set(values)
    if column == "age_group":
        order = [v for v in AGE_LABELS if v in present]
    else:
        order = sorted(v for v in present if v != UNKNOWN)
    return order + ([UNKNOWN] if UNKNOWN in present else [])


def subgroup_aucs(images: pd.DataFrame, onehot, probs, names, columns=COLUMNS, n_boot: int = 1000,
                  seed: int = 0) -> dict:
    """Per-class AUC with a patient-bootstrap 95% CI in every group of every analysable column.

    ``images``/``onehot``/``probs`` are row-aligned (pass the test split). Returns
    ``{"columns": [analysed columns], "rows": [{column, value, class, n, n_patients, n_pos, auc,
    ci_low, ci_high}]}``; auc/CI are None in a group where the class has a single outcome.
    """
    onehot, probs = np.asarray(onehot), np.asarray(probs, np.float64)
    pids = images["patient_id"].to_numpy() if "patient_id" in images.columns else np.arange(len(images))
    rows, used = [], []
    for ci, col in enumerate(columns):
        vals = subgroup_values(images, col)
        if not analysable(vals):
            continue
        used.append(col)
        v = vals.to_numpy()
        for vi, value in enumerate(_ordered(vals, col)):
            m = v == value
            boot = PatientBootstrap(pids[m], n_boot, [int(seed), ci, vi])
            bs = boot.aucs(onehot[m], [probs[m]])[0]
            for j, name in enumerate(names):
                y = onehot[m, j]
                auc, lo, hi = None, None, None
                if has_both_outcomes(y):
                    auc = rank_auc(y, probs[m, j])
                    lo, hi, _ = percentile_ci(bs[j])
                rows.append({"column": col, "value": value, "class": name, "n": int(m.sum()),
                             "n_patients": boot.n_patients, "n_pos": int(np.sum(y > 0)),
                             "auc": auc, "ci_low": lo, "ci_high": hi})
    return {"columns": used, "rows": rows}


def cramers_v(groups, y) -> float | None:
    """Cramér's V between a categorical ``groups`` and a 0/1 ``y`` (no continuity correction)."""
    g = pd.Series(np.asarray(groups, dtype=object))
    y = np.asarray(y) > 0
    table = pd.crosstab(g, y).to_numpy(np.float64)
    if table.shape[0] < 2 or table.shape[1] < 2:
        return None
    n = table.sum()
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / n
    chi2 = float(((table - expected) ** 2 / expected).sum())
    k = min(table.shape) - 1
    return _f(np.sqrt(chi2 / (n * k)))


_COLUMN_NOUN = {"source": "source", "sex": "sex", "age_group": "age group", "view": "view"}


# (who the images are, what the class's images do) per column; {v} is the group's value.
_PHRASES = {"source": ("images from {v}", "come from {v}"),
            "age_group": ("images of patients aged {v}", "are of patients aged {v}"),
            "view": ("{v} images", "are {v} views")}
_SEX = {"F": "female patients", "M": "male patients"}


def _phrases(column: str, value: str) -> tuple[str, str]:
    """Plain words for the warnings: ('images from hannover', 'come from hannover'), ..."""
    if value == UNKNOWN:
        noun = _COLUMN_NOUN.get(column, column)
        return f"images with no recorded {noun}", f"have no recorded {noun}"
    if column == "sex":
        who = _SEX.get(value, f"sex {value}")
        return f"images of {who}", f"are of {who}"
    members, predicate = _PHRASES.get(column, ("images with {c} {v}", "are images with {c} {v}"))
    return members.format(v=value, c=column), predicate.format(v=value, c=column)


def _members(column: str, value: str) -> str:
    return _phrases(column, value)[0]


def _predicate(column: str, value: str) -> str:
    return _phrases(column, value)[1]


def confounding(images: pd.DataFrame, onehot, names, columns=COLUMNS,
                threshold: float = CRAMERS_V_THRESHOLD, min_images: int = MIN_IMAGES) -> list[dict]:
    """Every (column, class) pair flagged by the rule in the module docstring, strongest first.

    Each item: ``{column, class, cramers_v, n, n_pos, prevalence, top_value, top_share, top_prevalence,
    low_value, low_prevalence, sentence}``: ``top_value`` holds the largest share of the class's images,
    ``low_value`` is the group (of >= 5% of the images) with the lowest prevalence of the class.
    """
    onehot = np.asarray(onehot)
    out = []
    for col in columns:
        vals = subgroup_values(images, col)
        if not analysable(vals):
            continue
        v = vals.to_numpy()
        order = _ordered(vals, col)
        for j, name in enumerate(names):
            y = onehot[:, j] > 0
            n, n_pos = len(y), int(y.sum())
            if n < min_images or n_pos < 2 or n - n_pos < 2:
                continue
            cv = cramers_v(v, y)
            if cv is None or cv < threshold:
                continue
            counts = {g: int(np.sum(v == g)) for g in order}
            pos = {g: int(np.sum(y & (v == g))) for g in order}
            top = max(order, key=lambda g: (pos[g], -order.index(g)))
            big = [g for g in order if counts[g] >= max(1, 0.05 * n)] or order
            low = min(big, key=lambda g: (pos[g] / counts[g], order.index(g)))
            item = {"column": col, "class": name, "cramers_v": cv, "n": n, "n_pos": n_pos,
                    "prevalence": _f(n_pos / n), "top_value": top, "top_share": _f(pos[top] / n_pos),
                    "top_prevalence": _f(pos[top] / counts[top]), "low_value": low,
                    "low_prevalence": _f(pos[low] / counts[low])}
            item["sentence"] = _sentence(item, counts)
            out.append(item)
    out.sort(key=lambda d: -d["cramers_v"])
    return out


def _sentence(it: dict, counts: dict) -> str:
    col, cls = it["column"], it["class"]
    noun = _COLUMN_NOUN.get(col, col)
    top, low = it["top_value"], it["low_value"]
    s = (f"{noun[0].upper() + noun[1:]} predicts {cls} (Cramér's V {it['cramers_v']:.2f}): "
         f"{it['top_share']:.0%} of the {it['n_pos']} {cls} images {_predicate(col, top)}, and "
         f"{it['top_prevalence']:.0%} of the {counts[top]} {_members(col, top)} are {cls}, "
         f"against {it['prevalence']:.0%} of all images")
    if low != top:
        if it["low_prevalence"] == 0:
            s += f"; none of the {counts[low]} {_members(col, low)} is {cls}"
        else:
            s += f"; only {it['low_prevalence']:.0%} of the {counts[low]} {_members(col, low)} are {cls}"
    return (s + f". A model can score well on {cls} by picking up {noun}-related image cues instead of the "
            f"disease: compare the per-{noun} AUCs.")
