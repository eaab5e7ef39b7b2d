"""How much a model knows about the image's source: the source probe and within-source AUCs.

Pure statistics on arrays; ``covidviz.analysis.sources`` feeds them the test split's pooled features and
probabilities.

Source probe (``source_probe``). Inside one class, a linear classifier (``linear_probe``: standardised
features, L2-penalised logistic regression, C = 0.1, the thumbnail baseline's recipe) learns to tell the
films' sources apart, cross-validated over patients (``StratifiedGroupKFold``: a patient's films never sit
on both sides of a fold; ``FOLDS`` folds, fewer when a source has fewer patients). Each fold's held-out
films give a ROC AUC (two sources: the AUC of the second source's probability; more: the macro one-vs-rest
AUC) and the probe's AUC is their mean (each AUC ranks films scored by one fitted model; pooling the
folds' scores would rank scores of different models against each other). On features that carry nothing
it averages 0.50-0.56 over seeds (pure noise, 40-100 patients, 20-1024 dimensions), with a spread of
0.1-0.15 between seeds at 40 patients. The 95 % CI comes from a bootstrap over
patients of the held-out scores (the folds are not refitted per resample: the interval covers the
sampling of the test films, not the probe's fitting, so with few patients of a source it is too narrow;
``MIN_PATIENTS`` and ``FEW_PATIENTS`` say how few). 0.5: the features do not tell the hospitals apart
inside the class; 1: perfectly. A source with films from fewer than ``MIN_PATIENTS`` patients inside the
class is left out (and listed).

Within-source AUC (``within_source_aucs``). For two classes a, b that both have films from one source, the
AUC of separating them among that source's films only, each film scored by its relative probability
``p(b) / (p(a) + p(b))`` (a multi-label experiment: films with a finding against those without it, scored
by its probability). Every film compared comes from the same hospital, so this is disease signal the
source cannot explain. Several score sets (backbones, a baseline) are scored on the same bootstrap
resamples, so each one's difference from a reference (the thumbnail baseline) has a paired CI.
"""

from __future__ import annotations

import itertools

import numpy as np

from covidviz.data.labels import MULTICLASS
from covidviz.stats.metrics import PatientBootstrap, _f, percentile_ci, weighted_auc

PROBE_C = 0.1
FOLDS = 5
# Patients of a source inside a class for the probe to use that source. On features that carry nothing the
# probe's AUC spreads +-0.27 between seeds with 3 patients of the rarer source, +-0.19 with 5, +-0.12 with 10
# (40-100 films; measured over 12 seeds), more than the CI below shows: below 5 it says nothing.
MIN_PATIENTS = 5
FEW_PATIENTS = 10   # below this many patients of the rarer source the sentences say to read it with care
MIN_FILMS = 3       # films of each class inside a source for a within-source AUC
PROBE_MODEL = "logistic regression (C=0.1) on standardised features, cross-validated over patients"
PAIR_SCORE = "p(b) / (p(a) + p(b)) on the films of a and b from the source"


def linear_probe(seed: int = 0, C: float = PROBE_C):
    """Standardised features -> L2 logistic regression (scikit-learn pipeline, unfitted)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000, random_state=seed))


def probe_folds(codes: np.ndarray, groups, folds: int, seed: int = 0) -> np.ndarray:
    """(N,) the held-out fold of every film: ``folds`` folds over ``groups`` (patients), stratified by the code."""
    from sklearn.model_selection import StratifiedGroupKFold

    fold = np.full(len(codes), -1, np.int64)
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (_, test) in enumerate(cv.split(np.zeros(len(codes)), codes, groups)):
        fold[test] = k
    return fold


def out_of_fold(x: np.ndarray, codes: np.ndarray, fold: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, S) held-out probabilities of ``linear_probe`` for the integer ``codes`` (0..S-1), each fold's
    films scored by the probe fitted on the other folds (``fold``: ``probe_folds``)."""
    from sklearn.model_selection import PredefinedSplit, cross_val_predict

    return cross_val_predict(linear_probe(seed), x, codes, cv=PredefinedSplit(fold), method="predict_proba")


def source_auc(codes: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B,) AUC of ``scores`` (N, S) for the source ``codes`` under each weight row (B, N): the second
    source's AUC with two sources, the macro one-vs-rest AUC with more (NaN where one is undefined)."""
    s = scores.shape[1]
    if s == 2:
        return weighted_auc(codes == 1, scores[:, 1], weights)
    return np.mean([weighted_auc(codes == k, scores[:, k], weights) for k in range(s)], axis=0)


def fold_mean_auc(codes: np.ndarray, scores: np.ndarray, fold: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B,) the mean over folds of each fold's ``source_auc`` on its held-out films (folds where it is
    undefined, e.g. a resample without one source there, left out; NaN when all are)."""
    per = np.stack([source_auc(codes[fold == k], scores[fold == k], weights[:, fold == k])
                    for k in np.unique(fold)])
    ok = np.isfinite(per)
    with np.errstate(invalid="ignore"):
        return np.where(ok.any(0), np.where(ok, per, 0.0).sum(0) / np.maximum(ok.sum(0), 1), np.nan)


def _patients_per(values: np.ndarray, pids: np.ndarray) -> dict[str, int]:
    return {str(v): int(len(set(pids[values == v].tolist()))) for v in sorted(set(values.tolist()))}


def source_probe(features: dict[str, np.ndarray], sources, patient_ids, *, n_boot: int = 1000, seed: int = 0,
                 folds: int = FOLDS, min_patients: int = MIN_PATIENTS) -> dict:
    """The source probe on one class's films, for several feature sets (same films, same folds, same
    resamples). ``features``: name -> (N, D); ``sources``: (N,) source names ('' unknown, left out).
    Returns ``{"n", "n_patients", "sources": {src: films}, "left_out": {src: films}, "folds", "reason",
    "scores": {name: {"auc", "ci_low", "ci_high", "n_boot_valid"}}}``; ``reason`` (and no scores) when
    fewer than two sources have ``min_patients`` patients."""
    src = np.asarray([str(s) for s in sources], dtype=object)
    pids = np.asarray([str(p) for p in patient_ids], dtype=object)
    known = src != ""
    per_source = _patients_per(src[known], pids[known])
    kept = [s for s, n in per_source.items() if n >= min_patients]
    films = {s: int(np.sum(src == s)) for s in per_source}
    out = {"n": 0, "n_patients": 0, "sources": {s: films[s] for s in kept},
           "patients": {s: per_source[s] for s in kept},
           "left_out": {s: films[s] for s in per_source if s not in kept}, "folds": 0, "reason": "", "scores": {}}
    if len(kept) < 2:
        out["reason"] = (f"fewer than two sources with films from {min_patients} or more patients"
                         + (f" ({', '.join(f'{s}: {n}' for s, n in per_source.items())} patients)" if per_source else ""))
        return out
    use = np.isin(src, kept)
    codes = np.searchsorted(np.asarray(kept, dtype=object), src[use])
    k = int(min(folds, min(per_source[s] for s in kept)))
    fold = probe_folds(codes, pids[use], k, seed)
    boot = PatientBootstrap(pids[use], n_boot, seed)
    out.update(n=int(use.sum()), n_patients=boot.n_patients, folds=k)
    for name, x in features.items():
        x = np.nan_to_num(np.asarray(x, np.float64)[use], nan=0.0, posinf=0.0, neginf=0.0)
        oof = out_of_fold(x, codes, fold, seed)
        auc = _f(fold_mean_auc(codes, oof, fold, np.ones((1, len(codes))))[0])
        bs = np.concatenate([fold_mean_auc(codes, oof, fold, w) for w in boot.blocks()]) if n_boot else np.zeros(0)
        lo, hi, nv = percentile_ci(bs)
        out["scores"][name] = {"auc": auc, "ci_low": lo, "ci_high": hi, "n_boot_valid": nv}
    return out


def _pair_score(probs: np.ndarray, a: int, b: int) -> np.ndarray:
    pa, pb = probs[:, a].astype(np.float64), probs[:, b].astype(np.float64)
    den = pa + pb
    return np.where(den > 0, pb / np.where(den > 0, den, 1.0), 0.5)


def _pairs(onehot: np.ndarray, names: list[str], task: str):
    """(a name, b name, films of a, films of b, score function) for every comparison of the task."""
    if task == MULTICLASS:
        for a, b in itertools.combinations(range(len(names)), 2):
            yield names[a], names[b], onehot[:, a] > 0, onehot[:, b] > 0, (lambda p, a=a, b=b: _pair_score(p, a, b))
    else:
        for j, name in enumerate(names):
            yield f"without {name}", name, onehot[:, j] <= 0, onehot[:, j] > 0, (lambda p, j=j: p[:, j])


def within_source_aucs(onehot, scores: dict[str, np.ndarray], sources, patient_ids, names, task: str = MULTICLASS, *,
                       reference: str | None = None, n_boot: int = 1000, seed: int = 0,
                       min_films: int = MIN_FILMS) -> list[dict]:
    """One row per (source, a, b) whose two classes both have films from that source: ``{"source", "a",
    "b", "n_a", "n_b", "n_patients", "reason", "aucs": {name: {"auc", "ci_low", "ci_high", "n_boot_valid"}},
    "diffs": {name: {"diff", "ci_low", "ci_high"}}}`` (``diffs``: each score set minus ``reference``, paired
    resamples). ``scores``: name -> (N, C) probabilities (NaN columns: that comparison is left out for it).
    A pair with fewer than ``min_films`` films of a class in the source has a ``reason`` and no AUCs."""
    onehot = np.asarray(onehot)
    src = np.asarray([str(s) for s in sources], dtype=object)
    pids = np.asarray([str(p) for p in patient_ids], dtype=object)
    names = list(names)
    rows = []
    for source in sorted(s for s in set(src.tolist()) if s):
        here = src == source
        for a, b, in_a, in_b, score in _pairs(onehot, names, task):
            sel_a, sel_b = here & in_a, here & in_b
            if task == MULTICLASS:  # a film of both classes (not in multi-class data) would count twice
                sel_a &= ~sel_b
            n_a, n_b = int(sel_a.sum()), int(sel_b.sum())
            if not n_a or not n_b:
                continue
            row = {"source": source, "a": a, "b": b, "n_a": n_a, "n_b": n_b, "n_patients": 0, "reason": "",
                   "aucs": {}, "diffs": {}}
            rows.append(row)
            if min(n_a, n_b) < min_films:
                row["reason"] = f"fewer than {min_films} films of {a if n_a < n_b else b} from {source}"
                continue
            sel = sel_a | sel_b
            y = sel_b[sel]
            s = {k: score(np.asarray(p, np.float64)[sel]) for k, p in scores.items()}
            s = {k: v for k, v in s.items() if np.all(np.isfinite(v))}
            boot = PatientBootstrap(pids[sel], n_boot, seed)
            row["n_patients"] = boot.n_patients
            bs = {k: [] for k in s}
            for w in boot.blocks():
                for k, v in s.items():
                    bs[k].append(weighted_auc(y, v, w))
            bs = {k: np.concatenate(v) if v else np.zeros(0) for k, v in bs.items()}
            for k, v in s.items():
                lo, hi, nv = percentile_ci(bs[k])
                row["aucs"][k] = {"auc": _f(weighted_auc(y, v, np.ones((1, len(y))))[0]), "ci_low": lo, "ci_high": hi,
                                  "n_boot_valid": nv}
            if reference in s:
                for k in s:
                    if k == reference:
                        continue
                    lo, hi, _ = percentile_ci(bs[k] - bs[reference])
                    row["diffs"][k] = {"diff": _f(row["aucs"][k]["auc"] - row["aucs"][reference]["auc"]),
                                       "ci_low": lo, "ci_high": hi}
    return rows
