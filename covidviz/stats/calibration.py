"""Calibration: temperature scaling fitted on validation, ECE / Brier / reliability bins on test.

Temperature scaling (Guo et al. 2017) divides the logits by T > 0: T > 1 softens over-confident
probabilities, T < 1 sharpens under-confident ones; the ranking (hence every AUC) is unchanged.
We only have probabilities, so the logits are recovered from them:

- ``multiclass`` (softmax head): ONE temperature for all classes, on z = log(p) (the logits up to an
  additive constant per image, which softmax ignores): p' = softmax(log p / T).
- ``multilabel`` (sigmoid heads): ONE temperature PER CLASS, on z = logit(p): p'_c = sigmoid(z_c / T_c).
  A class with a single outcome on validation keeps T = 1 (nothing to fit).

T is fitted by minimising the validation negative log-likelihood over log T (bounded scalar search).
"""

from __future__ import annotations

import numpy as np

from covidviz.stats.metrics import _f, _fl, has_both_outcomes

N_BINS = 15
_EPS = 1e-7
_LOG_T_BOUNDS = (-4.0, 4.0)  # T in [0.018, 55]


def _as2d(p) -> tuple[np.ndarray, bool]:
    p = np.asarray(p, np.float64)
    return (p[None, :], True) if p.ndim == 1 else (p, False)


def _softmax_t(logp: np.ndarray, t: float) -> np.ndarray:
    z = logp / t
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * z))  # overflow-free


def apply_temperature(probs, T, task: str) -> np.ndarray:
    """Rescale probabilities by a fitted temperature (what the app applies to an upload's output).

    ``probs``: (N, C) or (C,). ``T``: a scalar (multiclass) or a scalar / length-C sequence
    (multilabel, one per class). Returns the same shape; T = 1 returns the probabilities unchanged
    (up to clipping at 1e-7 for multilabel).
    """
    p, one = _as2d(probs)
    if task == "multiclass":
        t = float(np.asarray(T, np.float64).reshape(-1)[0]) if np.ndim(T) else float(T)
        if t <= 0:
            raise ValueError(f"temperature must be > 0, got {t}")
        out = _softmax_t(np.log(np.clip(p, 1e-12, None)), t)
    elif task == "multilabel":
        t = np.broadcast_to(np.asarray(T, np.float64), (p.shape[1],))
        if np.any(t <= 0):
            raise ValueError(f"temperatures must be > 0, got {t}")
        out = _sigmoid(_logit(p) / t)
    else:
        raise ValueError(f"unknown task {task!r}")
    return out[0] if one else out


def calibrated_probabilities(probs, temperature, task: str) -> np.ndarray:
    """THE rule from a model's own probabilities to the calibrated ones every page shows: through the
    stored temperature (``apply_temperature``), or unchanged when the experiment has none (not analysed,
    or no validation images). Always a new float64 array, (C,) or (N, C) like ``probs``."""
    if temperature is None:
        return np.array(probs, dtype=np.float64)
    return np.asarray(apply_temperature(probs, temperature, task), np.float64)


def _nll_multiclass(logp, y_idx, t) -> float:
    z = logp / t
    z = z - z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=1))
    return float(np.mean(lse - z[np.arange(len(z)), y_idx]))


def _nll_binary(z, y, t) -> float:
    zt = z / t
    # -[y log s(zt) + (1-y) log(1-s(zt))] = softplus(zt) - y zt
    return float(np.mean(np.logaddexp(0, zt) - y * zt))


def _fit_scalar(nll) -> float:
    from scipy.optimize import minimize_scalar

    res = minimize_scalar(lambda lt: nll(np.exp(lt)), bounds=_LOG_T_BOUNDS, method="bounded",
                          options={"xatol": 1e-4})
    return float(np.exp(res.x))


def fit_temperature(onehot, probs, task: str):
    """Temperature(s) minimising validation NLL: a float (multiclass) or a list of C floats (multilabel)."""
    y, p = np.asarray(onehot), np.asarray(probs, np.float64)
    if len(y) == 0:
        return 1.0 if task == "multiclass" else [1.0] * p.shape[1]
    if task == "multiclass":
        logp = np.log(np.clip(p, 1e-12, None))
        idx = np.argmax(y, axis=1)
        return _fit_scalar(lambda t: _nll_multiclass(logp, idx, t))
    if task == "multilabel":
        z = _logit(p)
        return [(_fit_scalar(lambda t, j=j: _nll_binary(z[:, j], y[:, j], t))
                 if has_both_outcomes(y[:, j]) else 1.0) for j in range(p.shape[1])]
    raise ValueError(f"unknown task {task!r}")


def _bin_index(conf: np.ndarray, n_bins: int) -> np.ndarray:
    return np.clip((conf * n_bins).astype(int), 0, n_bins - 1)  # [0, 1/15), ..., [14/15, 1]


def reliability_bins(conf, correct, n_bins: int = N_BINS) -> list[dict]:
    """Equal-width bins: ``{"centre", "confidence" (mean), "accuracy" (mean outcome), "count"}``.

    Empty bins have count 0 and None means.
    """
    conf, correct = np.asarray(conf, np.float64).ravel(), np.asarray(correct, np.float64).ravel()
    b = _bin_index(conf, n_bins)
    cnt = np.bincount(b, minlength=n_bins)
    sc = np.bincount(b, weights=conf, minlength=n_bins)
    sa = np.bincount(b, weights=correct, minlength=n_bins)
    return [{"centre": _f((i + 0.5) / n_bins),
             "confidence": _f(sc[i] / cnt[i]) if cnt[i] else None,
             "accuracy": _f(sa[i] / cnt[i]) if cnt[i] else None,
             "count": int(cnt[i])} for i in range(n_bins)]


def ece_from(conf, correct, n_bins: int = N_BINS) -> float | None:
    """Expected calibration error: sum over bins of (count / N) |mean confidence - mean outcome|."""
    conf, correct = np.asarray(conf, np.float64).ravel(), np.asarray(correct, np.float64).ravel()
    if conf.size == 0:
        return None
    b = _bin_index(conf, n_bins)
    gap = np.abs(np.bincount(b, weights=conf, minlength=n_bins) - np.bincount(b, weights=correct, minlength=n_bins))
    return _f(gap.sum() / conf.size)  # sum_b |sum conf - sum acc| / N == sum_b n_b/N |mean gap|


def ece(onehot, probs, task: str, n_bins: int = N_BINS) -> float | None:
    """ECE with 15 equal-width bins.

    multiclass: on the top-class confidence (max probability) vs whether the argmax is right.
    multilabel: per class on p_c vs the class being present, then averaged over the classes.
    """
    y, p = np.asarray(onehot), np.asarray(probs, np.float64)
    if len(y) == 0:
        return None
    if task == "multiclass":
        return ece_from(p.max(axis=1), np.argmax(p, axis=1) == np.argmax(y, axis=1), n_bins)
    return _f(np.mean([ece_from(p[:, j], y[:, j], n_bins) for j in range(p.shape[1])]))


def brier(onehot, probs, task: str) -> float | None:
    """Brier score. multiclass: mean over images of sum_c (p_c - y_c)^2 (range 0-2).
    multilabel: mean over images and classes of (p_c - y_c)^2 (the per-class Brier, averaged; 0-1)."""
    y, p = np.asarray(onehot, np.float64), np.asarray(probs, np.float64)
    if len(y) == 0:
        return None
    sq = (p - y) ** 2
    return _f(sq.sum(axis=1).mean() if task == "multiclass" else sq.mean())


def nll(onehot, probs, task: str) -> float | None:
    """Mean negative log-likelihood (multiclass: of the true class; multilabel: per-class BCE averaged)."""
    y, p = np.asarray(onehot, np.float64), np.clip(np.asarray(probs, np.float64), _EPS, 1 - _EPS)
    if len(y) == 0:
        return None
    if task == "multiclass":
        return _f(-np.mean(np.log(p[np.arange(len(p)), np.argmax(y, axis=1)])))
    return _f(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def _summary(onehot, probs, task: str, names, n_bins: int) -> dict:
    y, p = np.asarray(onehot), np.asarray(probs, np.float64)
    out = {"ece": ece(y, p, task, n_bins), "brier": brier(y, p, task), "nll": nll(y, p, task),
           "brier_per_class": {n: _f(np.mean((p[:, j] - y[:, j]) ** 2)) if len(y) else None
                               for j, n in enumerate(names)}}
    if task == "multiclass":
        out["reliability"] = reliability_bins(p.max(axis=1), np.argmax(p, axis=1) == np.argmax(y, axis=1), n_bins)
    else:
        out["ece_per_class"] = {n: ece_from(p[:, j], y[:, j], n_bins) for j, n in enumerate(names)}
        out["reliability"] = reliability_bins(p.ravel(), y.ravel(), n_bins)  # every (image, class) pooled
        out["reliability_per_class"] = {n: reliability_bins(p[:, j], y[:, j], n_bins) for j, n in enumerate(names)}
    return out


def calibrate(val_onehot, val_probs, test_onehot, test_probs, task: str, names, n_bins: int = N_BINS) -> dict:
    """Fit the temperature on validation; ECE, Brier, NLL and reliability bins on test before/after.

    ``{"method": "temperature", "task", "temperature": float | [float]*C, "n_val", "n_test",
       "before": {...}, "after": {...}}`` with ``before``/``after`` = ``{"ece", "brier", "nll",
    "brier_per_class", "reliability": [bins]}`` (+ ``ece_per_class``, ``reliability_per_class`` for
    multilabel, where ``reliability`` pools every (image, class) pair).
    """
    t = fit_temperature(val_onehot, val_probs, task)
    after = apply_temperature(test_probs, t, task) if len(test_probs) else np.asarray(test_probs, np.float64)
    return {"method": "temperature", "task": task,
            "temperature": _f(t) if task == "multiclass" else _fl(t),
            "n_val": int(len(val_onehot)), "n_test": int(len(test_onehot)),
            "before": _summary(test_onehot, test_probs, task, names, n_bins),
            "after": _summary(test_onehot, after, task, names, n_bins)}
