"""Does the model still know the hospital, and is there disease signal inside one hospital?

Two measures on the test split, stored once per experiment as ``runs.sources.SOURCES`` (layout:
``covidviz.runs.sources``), read from what the experiment already holds (the pooled features the maps
and the SOM use, the probabilities, the thumbnails), so no model runs again:

- **source probe** (``covidviz.stats.sources.source_probe``): inside each class (multi-label: each
  finding's films), how well a cross-validated linear classifier on each backbone's pooled features tells
  the films' sources apart (AUC with a patient-bootstrap CI); the same probe on the 32x32 thumbnails'
  pixels beside it, as a reference for how different the hospitals' films look at all;
- **within-source AUC** (``within_source_aucs``): for every pair of classes that share a source, each
  backbone's AUC inside that source only (score ``p(b) / (p(a) + p(b))``), beside the thumbnail baseline
  (``analysis.report.thumbnail_probabilities``) scored the same way, with the paired CI of the difference.

``source_evidence(exp)`` returns the record (None when the table has no source column);
``run_sources`` stores it; ``format_sources`` prints it.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from covidviz import runs
from covidviz.analysis.report import _thumb_features, auc_ci, thumbnail_probabilities
from covidviz.data.labels import MULTICLASS
from covidviz.io import to_json_ready
from covidviz.runs.sources import BASELINE, SOURCES
from covidviz.stats.sources import (
    FOLDS,
    MIN_FILMS,
    MIN_PATIENTS,
    PAIR_SCORE,
    PROBE_MODEL,
    source_probe,
    within_source_aucs,
)

log = logging.getLogger(__name__)

SOURCES_VERSION = 1


def _groups(onehot: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """The films of each class (a multi-label experiment: each finding's positives)."""
    return {name: onehot[:, j] > 0 for j, name in enumerate(names)}


def source_evidence(exp: runs.Experiment, *, seed: int = 0, n_boot: int = 1000, split: str = "test",
                    archs=None) -> dict | None:
    """The source probe and within-source AUCs of ``exp``'s backbones on ``split`` (see the module
    docstring); None when the per-image table has no ``source``."""
    t0 = time.time()
    images = exp.images().reset_index(drop=True)
    if "source" not in images.columns:
        return None
    labels = exp.labels
    names = list(labels.names)
    archs = list(archs or exp.backbones)
    mask = (images["split"].astype(str).str.lower() == split).to_numpy()
    if not mask.any():
        raise ValueError(f"no {split} images: cannot measure the source evidence")
    sub = images[mask].reset_index(drop=True)
    src = sub["source"].fillna("").astype(str).to_numpy()
    pids = sub["patient_id"].astype(str).to_numpy() if "patient_id" in sub.columns else np.arange(len(sub)).astype(str)
    onehot = labels.onehot(sub["labels"].to_numpy())
    feats = {arch: np.asarray(exp.features(arch), np.float32)[mask] for arch in archs}
    thumbs = np.asarray(exp.thumbnails())
    feats[BASELINE] = _thumb_features(thumbs[mask])
    probe = {}
    for cls, films in _groups(onehot, names).items():
        probe[cls] = source_probe({k: v[films] for k, v in feats.items()}, src[films], pids[films],
                                  n_boot=n_boot, seed=seed)
    scores = {arch: exp.probabilities(arch)[mask] for arch in archs}
    baseline_note = ""
    if split == "test":
        try:
            _, base = thumbnail_probabilities(thumbs, images, labels, seed)
            scores[BASELINE] = base
        except ValueError as exc:  # e.g. no train images: the pairs are scored without it
            baseline_note = str(exc)
            log.warning("within-source AUCs without the thumbnail baseline: %s", exc)
    pairs = within_source_aucs(onehot, scores, src, pids, names, labels.task, reference=BASELINE if BASELINE in scores
                               else None, n_boot=n_boot, seed=seed)
    return to_json_ready({
        "version": SOURCES_VERSION, "split": split, "n_images": int(mask.sum()),
        "n_patients": int(len(set(pids.tolist()))), "n_boot": int(n_boot), "seed": int(seed), "models": archs,
        "baseline": BASELINE, "baseline_note": baseline_note,
        "sources": {s: int(n) for s, n in zip(*np.unique(src[src != ""], return_counts=True))},
        "probe": {"model": PROBE_MODEL, "folds": FOLDS, "min_patients": MIN_PATIENTS,
                  "films": "each class's films" if labels.task == MULTICLASS else "each finding's positive films",
                  "classes": probe},
        "within": {"score": PAIR_SCORE if labels.task == MULTICLASS else "p(finding) on the source's films",
                   "min_films": MIN_FILMS, "pairs": pairs},
        "seconds": round(time.time() - t0, 1)})


def run_sources(path_or_exp, *, save: bool = True, **kw) -> dict | None:
    """Measure an experiment (folder or ``Experiment``) and store ``SOURCES`` (nothing without a source column)."""
    return runs.measure_and_store(path_or_exp, source_evidence, SOURCES, save=save, **kw)


# ---------------------------------------------------------------------- text

def _auc(c: dict | None) -> str:
    return auc_ci(c, digits=2)


def format_sources(result: dict | None) -> str:
    """Plain text: the probe per class and feature set, then the within-source AUCs per pair."""
    if not result:
        return "Source evidence: the images have no source column."
    models = list(result.get("models") or [])
    base = result.get("baseline") or BASELINE
    lines = [f"Source probe (cross-validated linear classifier telling the sources apart inside each class, "
             f"AUC [95% CI], 0.5 = cannot; source (test films/patients)) on {result['n_images']} {result['split']} images:"]
    for cls, c in (result.get("probe", {}).get("classes") or {}).items():
        if c.get("reason"):
            lines.append(f"  {cls}: not measured ({c['reason']})")
            continue
        srcs = " vs ".join(f"{s} ({n}/{c.get('patients', {}).get(s, '?')})" for s, n in c["sources"].items())
        parts = ", ".join(f"{m} {_auc(c['scores'].get(m))}" for m in [*models, base])
        lines.append(f"  {cls} ({srcs}): {parts}")
    pairs = (result.get("within") or {}).get("pairs") or []
    lines.append("Within-source AUC (the pair's films from one source only; score p(b)/(p(a)+p(b))):")
    if not pairs:
        lines.append("  no two classes share a source in the test split")
    for p in pairs:
        head = f"  {p['source']}: {p['a']} ({p['n_a']}) vs {p['b']} ({p['n_b']})"
        if p.get("reason"):
            lines.append(f"{head}: not measured ({p['reason']})")
            continue
        lines.append(f"{head}: " + ", ".join(f"{m} {_auc(p['aucs'].get(m))}" for m in [*models, base]))
    return "\n".join(lines)
