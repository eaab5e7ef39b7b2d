"""Operating points: thresholds chosen on validation, judged on test.

Decision rule everywhere: an image is called positive for a class when its probability is
``>= threshold``. Per class (one-vs-rest) three thresholds are picked on the VALIDATION split:

- ``youden``: maximises Youden's J = sensitivity + specificity - 1 (the highest such threshold on ties);
- ``high_sensitivity``: the highest threshold whose validation sensitivity is >= 0.95 (rule-out);
- ``high_specificity``: the lowest threshold whose validation specificity is >= 0.95 (rule-in).

Candidate thresholds are the observed validation scores. They are then applied unchanged to the TEST
split, where sensitivity, specificity, PPV and NPV are reported with their denominators and a Wilson
95% interval (binomial, treating images as independent).
"""

from __future__ import annotations

import numpy as np

from covidviz.stats.metrics import _f, has_both_outcomes

TARGET = 0.95
POINTS = ("youden", "high_sensitivity", "high_specificity")


def wilson_ci(k: int, n: int, level: float = 0.95) -> tuple[float | None, float | None]:
    """Wilson score interval of a proportion k/n (None when n == 0)."""
    from scipy.stats import norm

    if n <= 0:
        return None, None
    z = norm.ppf(0.5 + level / 2)
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return _f(max(0.0, centre - half)), _f(min(1.0, centre + half))


def _rate(k: int, n: int) -> dict:
    lo, hi = wilson_ci(k, n)
    return {"value": _f(k / n) if n else None, "n": int(n), "ci_low": lo, "ci_high": hi}


def confusion_at(y, s, threshold: float | None) -> dict:
    """2x2 counts and rates of the rule ``s >= threshold`` against labels ``y``.

    ``sensitivity``, ``specificity``, ``ppv`` and ``npv`` are ``{"value", "n", "ci_low", "ci_high"}`` where
    ``n`` is the denominator (positives, negatives, called positive, called negative); value None
    when the denominator is 0.
    """
    y = np.asarray(y) > 0
    s = np.asarray(s, np.float64)
    if threshold is None:
        return {"threshold": None, "tp": None, "fp": None, "fn": None, "tn": None, "n": int(len(y)),
                "sensitivity": None, "specificity": None, "ppv": None, "npv": None}
    pred = s >= threshold
    tp, fp = int(np.sum(pred & y)), int(np.sum(pred & ~y))
    fn, tn = int(np.sum(~pred & y)), int(np.sum(~pred & ~y))
    return {"threshold": _f(threshold), "tp": tp, "fp": fp, "fn": fn, "tn": tn, "n": int(len(y)),
            "sensitivity": _rate(tp, tp + fn), "specificity": _rate(tn, tn + fp),
            "ppv": _rate(tp, tp + fp), "npv": _rate(tn, tn + fn)}


def choose_thresholds(y, s, target: float = TARGET) -> dict:
    """The three validation thresholds of one class (see the module docstring).

    Returns ``{name: {"threshold", "sensitivity", "specificity"}}`` (validation values); every entry
    is None when the class has a single outcome on validation, and ``high_specificity`` is None when
    no observed score reaches the target (the top-scored validation image is a negative and there are
    fewer than 1/(1-target) negatives).
    """
    from sklearn.metrics import roc_curve

    y = np.asarray(y) > 0
    s = np.asarray(s, np.float64)
    empty = {"threshold": None, "sensitivity": None, "specificity": None}
    if not has_both_outcomes(y):
        return {p: dict(empty) for p in POINTS}
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    fpr, tpr, thr = fpr[1:], tpr[1:], thr[1:]  # drop sklearn's +inf "nothing positive" point
    spec = 1 - fpr

    def point(i):
        if i is None:
            return dict(empty)
        return {"threshold": _f(thr[i]), "sensitivity": _f(tpr[i]), "specificity": _f(spec[i])}

    j = tpr - fpr
    youden = int(np.argmax(j))                      # thresholds decrease: first max = highest threshold
    hs = np.flatnonzero(tpr >= target - 1e-12)
    hp = np.flatnonzero(spec >= target - 1e-12)
    return {"youden": point(youden),
            "high_sensitivity": point(int(hs[0]) if len(hs) else None),
            "high_specificity": point(int(hp[-1]) if len(hp) else None)}


def operating_points(val_onehot, val_probs, test_onehot, test_probs, names, target: float = TARGET) -> dict:
    """Per class: the validation thresholds and their confusion/rates on test.

    ``{name: {"val": {"n", "n_pos"}, "test": {"n", "n_pos"},
              "points": {youden|high_sensitivity|high_specificity:
                         {"threshold", "val": {"sensitivity", "specificity"}, "test": confusion_at(...)}}}}``
    """
    vy, vp = np.asarray(val_onehot), np.asarray(val_probs, np.float64)
    ty, tp = np.asarray(test_onehot), np.asarray(test_probs, np.float64)
    out = {}
    for j, name in enumerate(names):
        chosen = choose_thresholds(vy[:, j], vp[:, j], target)
        points = {}
        for p, c in chosen.items():
            points[p] = {"threshold": c["threshold"],
                         "val": {"sensitivity": c["sensitivity"], "specificity": c["specificity"]},
                         "test": confusion_at(ty[:, j], tp[:, j], c["threshold"])}
        out[name] = {"val": {"n": int(len(vy)), "n_pos": int(np.sum(vy[:, j] > 0))},
                     "test": {"n": int(len(ty)), "n_pos": int(np.sum(ty[:, j] > 0))}, "points": points}
    return out


def ppv_npv_at_prevalence(sens, spec, prevalence):
    """PPV and NPV (Bayes) of a test with this sensitivity/specificity at another prevalence.

    PPV = sens p / (sens p + (1 - spec)(1 - p)),  NPV = spec (1 - p) / (spec (1 - p) + (1 - sens) p).
    Scalars in -> ``{"ppv": float|None, "npv": float|None}`` (None where the denominator is 0);
    arrays (broadcast) in -> the same keys with numpy arrays (NaN where undefined).
    """
    if sens is None or spec is None or prevalence is None:
        return {"ppv": None, "npv": None}
    se, sp, p = (np.asarray(v, np.float64) for v in (sens, spec, prevalence))
    if np.any((p < 0) | (p > 1)) or np.any((se < 0) | (se > 1)) or np.any((sp < 0) | (sp > 1)):
        raise ValueError("sensitivity, specificity and prevalence must lie in [0, 1]")
    with np.errstate(invalid="ignore", divide="ignore"):
        ppv_den = se * p + (1 - sp) * (1 - p)
        npv_den = sp * (1 - p) + (1 - se) * p
        ppv = np.where(ppv_den > 0, se * p / np.where(ppv_den > 0, ppv_den, 1), np.nan)
        npv = np.where(npv_den > 0, sp * (1 - p) / np.where(npv_den > 0, npv_den, 1), np.nan)
    if ppv.ndim == 0:
        return {"ppv": _f(ppv), "npv": _f(npv)}
    return {"ppv": ppv, "npv": npv}


def argmax_confusion(onehot, probs, names) -> dict:
    """Multi-class confusion matrix of the argmax prediction: rows = true class, columns = predicted."""
    y = np.argmax(np.asarray(onehot), axis=1)
    pred = np.argmax(np.asarray(probs, np.float64), axis=1)
    c = len(names)
    m = np.bincount(y * c + pred, minlength=c * c).reshape(c, c)
    n = int(m.sum())
    return {"names": list(names), "matrix": m.astype(int).tolist(), "n": n,
            "accuracy": _f(np.trace(m) / n) if n else None,
            "recall": [_f(m[i, i] / m[i].sum()) if m[i].sum() else None for i in range(c)],
            "precision": [_f(m[i, i] / m[:, i].sum()) if m[:, i].sum() else None for i in range(c)]}
