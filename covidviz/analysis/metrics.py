"""Discrimination metrics shared by training (early stopping) and the analysis.

One-vs-rest ROC AUC per class from scikit-learn. A class whose positives or negatives are absent
from a split has no defined AUC: it is reported as ``None`` (JSON null) and left out of the macro
mean, instead of crashing or pretending 0.5.
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
