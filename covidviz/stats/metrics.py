"""Discrimination metrics shared by training (early stopping) and the analysis.

One-vs-rest ROC AUC per class from scikit-learn. A class whose positives or negatives are absent
from a split has no defined AUC: it is reported as ``None`` (JSON null) and left out of the macro
mean, instead of crashing or pretending 0.5.

Below those: downsampled ROC / precision-recall curves, the rank (Mann-Whitney) AUC with a vectorised
patient bootstrap for 95% CIs (``discrimination``), and the fast DeLong test with a paired bootstrap
for comparing two backbones on the same images (``compare_backbones``).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def auc_per_class(onehot: np.ndarray, probs: np.ndarray, names) -> dict[str, float | None]:
    onehot, probs = np.asarray(onehot), np.asarray(probs, dtype=np.float64)
    out = {}
    for j, name in enumerate(names):
        y = onehot[:, j]
        if y.min() == y.max():
            out[name] = None
        else:
            out[name] = float(roc_auc_score(y, probs[:, j]))
    return out


def macro_auc(per_class: dict[str, float | None]) -> float | None:
    vals = [v for v in per_class.values() if v is not None]
    return float(np.mean(vals)) if vals else None


# ====================================================================== curves, CIs, paired tests
#
# Everything below takes plain numpy arrays (``y`` 0/1 per image, ``s`` a score per image) and returns
# plain Python numbers / lists, with ``None`` wherever a quantity is undefined (a class with only one
# outcome), so the results go straight into strict JSON.

MAX_CURVE_POINTS = 200
_BOOT_CELLS = 500_000  # resamples x images per chunk: bounds the bootstrap's memory (a few x 4 MB)


def _f(x) -> float | None:
    """A finite Python float, or None."""
    if x is None:
        return None
    x = float(x)
    return x if np.isfinite(x) else None


def _fl(a) -> list:
    """A float array as a JSON-ready list (non-finite entries -> None)."""
    return [_f(v) for v in np.asarray(a, dtype=np.float64).ravel()]


def has_both_outcomes(y) -> bool:
    y = np.asarray(y)
    return y.size > 0 and y.min() != y.max()


def downsample_curve(x, y, max_points: int = MAX_CURVE_POINTS) -> np.ndarray:
    """Indices of at most ``max_points`` curve points, spread evenly along the curve's path length.

    Both ends are always kept. Sampling by cumulative |dx|+|dy| (rather than by index) keeps the
    points where the curve actually moves, so its shape (and area) survives storage.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n = len(x)
    if n <= max_points:
        return np.arange(n)
    d = np.concatenate([[0.0], np.cumsum(np.abs(np.diff(x)) + np.abs(np.diff(y)))])
    targets = np.linspace(0.0, d[-1], max_points)
    idx = np.clip(np.searchsorted(d, targets, side="left"), 0, n - 1)
    idx = np.unique(np.concatenate([[0], idx, [n - 1]]))
    if len(idx) > max_points:  # duplicates were merged, so this only trims the odd extra point
        keep = np.linspace(0, len(idx) - 1, max_points).round().astype(int)
        idx = idx[np.unique(keep)]
    return idx


def roc_points(y, s, max_points: int = MAX_CURVE_POINTS) -> dict | None:
    """ROC curve (fpr, tpr, thresholds; image called positive when score >= threshold), downsampled.

    The first point (0, 0) has threshold ``None`` (sklearn's +inf: nothing called positive).
    Returns None when ``y`` has a single outcome.
    """
    from sklearn.metrics import roc_curve

    y, s = np.asarray(y), np.asarray(s, np.float64)
    if not has_both_outcomes(y):
        return None
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=True)
    idx = downsample_curve(fpr, tpr, max_points)
    return {"fpr": _fl(fpr[idx]), "tpr": _fl(tpr[idx]), "thresholds": _fl(thr[idx])}


def pr_points(y, s, max_points: int = MAX_CURVE_POINTS) -> dict | None:
    """Precision-recall curve and sklearn's average precision; None when ``y`` has a single outcome.

    ``thresholds`` is aligned with ``precision``/``recall``: its last entry is None (sklearn's final
    point, recall 0 and precision 1, has no threshold).
    """
    from sklearn.metrics import average_precision_score, precision_recall_curve

    y, s = np.asarray(y), np.asarray(s, np.float64)
    if not has_both_outcomes(y):
        return None
    prec, rec, thr = precision_recall_curve(y, s)
    thr = np.concatenate([thr, [np.nan]])
    idx = downsample_curve(rec, prec, max_points)
    return {"precision": _fl(prec[idx]), "recall": _fl(rec[idx]), "thresholds": _fl(thr[idx]),
            "ap": _f(average_precision_score(y, s)), "prevalence": _f(np.mean(y))}


def macro_roc(curves: list[dict | None], grid_points: int = 101) -> dict | None:
    """Macro-average ROC: each class's tpr interpolated on a common fpr grid, then averaged."""
    curves = [c for c in curves if c is not None]
    if not curves:
        return None
    grid = np.linspace(0.0, 1.0, grid_points)
    tprs = []
    for c in curves:
        fpr, tpr = np.asarray(c["fpr"], np.float64), np.asarray(c["tpr"], np.float64)
        t = np.interp(grid, fpr, tpr)
        t[0] = 0.0
        tprs.append(t)
    return {"fpr": _fl(grid), "tpr": _fl(np.mean(tprs, axis=0))}


# ---------------------------------------------------------------------- rank AUC + patient bootstrap

def rank_auc(y, s) -> float | None:
    """ROC AUC by the Mann-Whitney rank formula (ties count 1/2); equals sklearn's roc_auc_score."""
    y, s = np.asarray(y), np.asarray(s, np.float64)
    if not has_both_outcomes(y):
        return None
    return _f(weighted_auc(y, s, np.ones((1, len(y))))[0])


def weighted_auc(y, s, weights: np.ndarray) -> np.ndarray:
    """AUC of the scores ``s`` for labels ``y`` under each row of ``weights`` (B, N) at once.

    With integer weights (how many times each image was drawn) this is exactly the Mann-Whitney AUC of
    the resampled data set: sum over (positive i, negative j) of w_i w_j [s_i > s_j] (+1/2 on ties),
    divided by W_pos W_neg. We sort the scores once and use cumulative sums over the sorted order, so a
    whole block of resamples costs a few numpy passes over a (B, N) array. Calling sklearn's
    roc_auc_score 1000 times (one re-sort and Python overhead each) is ~100x slower.
    Rows without a weighted positive or negative give NaN.
    """
    y = np.asarray(y).astype(bool)
    s = np.asarray(s, np.float64)
    w = np.atleast_2d(np.asarray(weights, np.float64))
    order = np.argsort(s, kind="mergesort")
    ss, ys, w = s[order], y[order], w[:, order]
    n = len(ss)
    # group boundaries of tied scores: for sorted position k, its tie group is [start[k], end[k])
    new = np.concatenate([[True], ss[1:] != ss[:-1]])
    gid = np.cumsum(new) - 1
    starts = np.flatnonzero(new)
    ends = np.concatenate([starts[1:], [n]])
    start, end = starts[gid], ends[gid]
    wneg = np.where(ys, 0.0, w)
    cneg = np.concatenate([np.zeros((w.shape[0], 1)), np.cumsum(wneg, axis=1)], axis=1)
    below = cneg[:, start]                      # weighted negatives strictly below each score
    tied = cneg[:, end] - below                 # weighted negatives tied with it
    wpos = w[:, ys]
    num = np.sum(wpos * (below[:, ys] + 0.5 * tied[:, ys]), axis=1)
    den = wpos.sum(axis=1) * wneg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


class PatientBootstrap:
    """Seeded resampling of patients with replacement, exposed as per-image weight blocks.

    Drawing P patient ids with replacement and taking all their images is the same as giving every
    image the multiplicity of its patient in the draw; ``blocks()`` yields those multiplicities as
    (b, N) float arrays, in chunks that bound memory. Every call replays the same draws (same seed),
    so two backbones or several classes evaluated on the same images are paired resample by resample.
    """

    def __init__(self, patient_ids, n_boot: int = 1000, seed: int = 0):
        codes, uniq = pd_factorize(patient_ids)
        self.codes = codes
        self.n_patients = len(uniq)
        self.n_images = len(codes)
        self.n_boot = int(n_boot)
        self.seed = seed

    def blocks(self):
        rng = np.random.default_rng(self.seed)
        p, n = self.n_patients, self.n_images
        chunk = max(1, min(self.n_boot, _BOOT_CELLS // max(n + p, 1)))
        done = 0
        while done < self.n_boot:
            b = min(chunk, self.n_boot - done)
            draws = rng.integers(0, p, size=(b, p))
            counts = np.bincount((draws + p * np.arange(b)[:, None]).ravel(), minlength=b * p).reshape(b, p)
            yield counts[:, self.codes].astype(np.float64)
            done += b

    def aucs(self, onehot: np.ndarray, score_sets: list[np.ndarray]) -> np.ndarray:
        """(K, C, B) bootstrap AUCs for K score matrices (N, C) against ``onehot`` (N, C); NaN if undefined."""
        onehot = np.asarray(onehot)
        k, c = len(score_sets), onehot.shape[1]
        out = np.full((k, c, self.n_boot), np.nan)
        if self.n_patients == 0 or self.n_boot == 0:
            return out
        pos = 0
        for w in self.blocks():
            b = w.shape[0]
            for j in range(c):
                if not has_both_outcomes(onehot[:, j]):
                    continue
                for i, s in enumerate(score_sets):
                    out[i, j, pos:pos + b] = weighted_auc(onehot[:, j], np.asarray(s)[:, j], w)
            pos += b
        return out


def pd_factorize(values) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes (0..P-1) and unique values, with missing ids treated as their own patient each."""
    import pandas as pd

    ser = pd.Series(list(values), dtype=object)
    missing = ser.isna() | (ser.astype(str) == "")
    if missing.any():  # an image without a patient id is its own patient
        ser = ser.astype(str).where(~missing, [f"\0img{i}" for i in range(len(ser))])
    codes, uniq = pd.factorize(ser.astype(str), sort=True)
    return codes.astype(np.int64), np.asarray(uniq)


def percentile_ci(samples, level: float = 0.95) -> tuple[float | None, float | None, int]:
    """Percentile interval of the finite samples, and how many were finite."""
    v = np.asarray(samples, np.float64)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return None, None, int(len(v))
    a = (1 - level) / 2 * 100
    lo, hi = np.percentile(v, [a, 100 - a])
    return _f(lo), _f(hi), int(len(v))


def discrimination(onehot, probs, names, patient_ids, n_boot: int = 1000, seed: int = 0,
                   max_points: int = MAX_CURVE_POINTS) -> dict:
    """Per-class one-vs-rest ROC/PR curves, AUC with a patient-bootstrap 95% CI, AP; and the macro.

    Returns ``{"n", "n_patients", "n_boot", "per_class": {name: {n, n_pos, auc, ci_low, ci_high,
    n_boot_valid, ap, roc, pr}}, "macro": {auc, ci_low, ci_high, n_boot_valid, ap, roc, n_classes}}``;
    a class with a single outcome has None for every value. The macro averages the classes whose AUC is
    defined on the full data; its CI uses the resamples in which all of them are defined.
    """
    onehot, probs = np.asarray(onehot), np.asarray(probs, np.float64)
    boot = PatientBootstrap(patient_ids, n_boot, seed)
    bs = boot.aucs(onehot, [probs])[0]  # (C, B)
    per_class, curves, defined = {}, [], []
    for j, name in enumerate(names):
        y, s = onehot[:, j], probs[:, j]
        row = {"n": int(len(y)), "n_pos": int(np.sum(y > 0))}
        if has_both_outcomes(y):
            lo, hi, nv = percentile_ci(bs[j])
            pr = pr_points(y, s, max_points)
            roc = roc_points(y, s, max_points)
            row.update(auc=rank_auc(y, s), ci_low=lo, ci_high=hi, n_boot_valid=nv, ap=pr["ap"], roc=roc, pr=pr)
            curves.append(roc)
            defined.append(j)
        else:
            row.update(auc=None, ci_low=None, ci_high=None, n_boot_valid=0, ap=None, roc=None, pr=None)
        per_class[name] = row
    macro = {"auc": None, "ci_low": None, "ci_high": None, "n_boot_valid": 0, "ap": None, "roc": None,
             "n_classes": len(defined)}
    if defined:
        aucs = [per_class[names[j]]["auc"] for j in defined]
        lo, hi, nv = percentile_ci(bs[defined].mean(axis=0))  # NaN in any class -> resample dropped
        macro.update(auc=_f(np.mean(aucs)), ci_low=lo, ci_high=hi, n_boot_valid=nv,
                     ap=_f(np.mean([per_class[names[j]]["ap"] for j in defined])), roc=macro_roc(curves))
    return {"n": int(len(onehot)), "n_patients": boot.n_patients, "n_boot": int(n_boot),
            "per_class": per_class, "macro": macro}


# ---------------------------------------------------------------------- DeLong (fast, Sun & Xu 2014)

def _midranks(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x, method="average", axis=-1)


def delong_covariance(y, scores) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and their DeLong covariance matrix for K score vectors on the same images.

    Fast DeLong (Sun & Xu, IEEE SPL 2014): the structural components come from three rankings per
    model (positives alone, negatives alone, all together) instead of the O(m n) pairwise kernel:
    V10_i = (rank of positive i among all - its rank among positives) / n   (per positive)
    V01_j = 1 - (rank of negative j among all - its rank among negatives) / m  (per negative)
    cov = S10 / m + S01 / n with S the sample covariances (ddof=1) of those components.
    ``scores`` is (K, N) or (N,). Requires both outcomes; with m or n < 2 that part of the variance is 0.
    """
    y = np.asarray(y).astype(bool)
    s = np.atleast_2d(np.asarray(scores, np.float64))
    pos, neg = s[:, y], s[:, ~y]
    m, n = pos.shape[1], neg.shape[1]
    tx, ty, tz = _midranks(pos), _midranks(neg), _midranks(np.concatenate([pos, neg], axis=1))
    aucs = tz[:, :m].sum(axis=1) / m / n - (m + 1.0) / 2.0 / n
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    s10 = np.atleast_2d(np.cov(v10)) if m > 1 else np.zeros((len(s), len(s)))
    s01 = np.atleast_2d(np.cov(v01)) if n > 1 else np.zeros((len(s), len(s)))
    return aucs, s10 / m + s01 / n


def delong_test(y, s_a, s_b, level: float = 0.95) -> dict:
    """DeLong's test for two correlated ROC AUCs (same images): AUC_a - AUC_b, its CI, two-sided p.

    Images are treated as independent (DeLong's assumption); with several images per patient this is
    somewhat optimistic, hence the paired patient bootstrap beside it in ``compare_backbones``.
    """
    from scipy.stats import norm

    y = np.asarray(y)
    if not has_both_outcomes(y):
        return {"auc_a": None, "auc_b": None, "diff": None, "se": None, "ci_low": None, "ci_high": None,
                "z": None, "p_value": None}
    aucs, cov = delong_covariance(y, np.stack([np.asarray(s_a, np.float64), np.asarray(s_b, np.float64)]))
    diff = float(aucs[0] - aucs[1])
    if min(int(np.sum(y > 0)), int(np.sum(y <= 0))) < 2:  # a variance needs two of each outcome
        return {"auc_a": _f(aucs[0]), "auc_b": _f(aucs[1]), "diff": _f(diff), "se": None, "ci_low": None,
                "ci_high": None, "z": None, "p_value": None}
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se = float(np.sqrt(max(var, 0.0)))
    zc = norm.ppf(0.5 + level / 2)
    if se <= 1e-12:  # identical rankings (or both perfect): no evidence of any difference
        z, p = (0.0, 1.0) if abs(diff) <= 1e-12 else (float(np.sign(diff) * np.inf), 0.0)
    else:
        z = diff / se
        p = float(2 * norm.sf(abs(z)))
    return {"auc_a": _f(aucs[0]), "auc_b": _f(aucs[1]), "diff": _f(diff), "se": _f(se),
            "ci_low": _f(diff - zc * se), "ci_high": _f(diff + zc * se), "z": _f(z), "p_value": _f(p)}


def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values (None stays None)."""
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    out: list[float | None] = [None] * len(pvalues)
    ordered = sorted(idx, key=lambda i: pvalues[i])
    running, k = 0.0, len(idx)
    for rank, i in enumerate(ordered):
        running = max(running, min(1.0, (k - rank) * pvalues[i]))
        out[i] = running
    return out


def compare_backbones(onehot, probs_a, probs_b, names, patient_ids, n_boot: int = 1000, seed: int = 0) -> dict:
    """Paired comparison of two backbones on the same images, per class and macro.

    Per class: DeLong difference (a - b), 95% CI and two-sided p (plus Holm-adjusted p across classes),
    and the paired patient-bootstrap 95% CI of the difference (same resamples for both models).
    Macro: the difference of macro AUCs with its paired bootstrap CI.
    """
    onehot = np.asarray(onehot)
    pa, pb = np.asarray(probs_a, np.float64), np.asarray(probs_b, np.float64)
    boot = PatientBootstrap(patient_ids, n_boot, seed)
    bs = boot.aucs(onehot, [pa, pb])  # (2, C, B)
    per_class, defined = {}, []
    for j, name in enumerate(names):
        y = onehot[:, j]
        row = {"n": int(len(y)), "n_pos": int(np.sum(y > 0)), **delong_test(y, pa[:, j], pb[:, j])}
        lo, hi, nv = percentile_ci(bs[0, j] - bs[1, j]) if has_both_outcomes(y) else (None, None, 0)
        row.update(boot_ci_low=lo, boot_ci_high=hi, n_boot_valid=nv)
        if has_both_outcomes(y):
            defined.append(j)
        per_class[name] = row
    for name, p in zip(names, holm([per_class[n]["p_value"] for n in names])):
        per_class[name]["p_holm"] = p
    macro = {"auc_a": None, "auc_b": None, "diff": None, "boot_ci_low": None, "boot_ci_high": None, "n_boot_valid": 0}
    if defined:
        a = float(np.mean([per_class[names[j]]["auc_a"] for j in defined]))
        b = float(np.mean([per_class[names[j]]["auc_b"] for j in defined]))
        lo, hi, nv = percentile_ci(bs[0][defined].mean(axis=0) - bs[1][defined].mean(axis=0))
        macro.update(auc_a=_f(a), auc_b=_f(b), diff=_f(a - b), boot_ci_low=lo, boot_ci_high=hi, n_boot_valid=nv)
    return {"n": int(len(onehot)), "n_patients": boot.n_patients, "per_class": per_class, "macro": macro}
