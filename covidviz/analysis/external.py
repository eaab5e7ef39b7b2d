"""External validation: score a trained experiment on another dataset without retraining.

``evaluate_external(exp_path, specs, site)`` loads the dataset(s) with the same adapters as
training, maps their labels onto the experiment's label space (the same synonyms: "No Finding" is
"Normal", "Viral Pneumonia" is "Pneumonia"), leaves out -- and lists -- images of classes the
experiment does not know or that cannot be decoded, runs every backbone (probabilities + pooled
features, one batched pass), and computes what the internal test set has:

- per-class and macro AUC with a patient-bootstrap 95 % CI, PR curves (``metrics.discrimination``);
- the thresholds chosen on the experiment's VALIDATION images, carried over unchanged, with their
  sensitivity / specificity / PPV / NPV on the new site (``thresholds.confusion_at``);
- calibration on the new site with the stored temperature (ECE, Brier, reliability before/after);
- subgroup AUCs (source, sex, age group, view);
- the AUC drop from the internal test set to this site with a 95 % CI: the two sets share no
  patients, so the CI resamples each set's patients independently and takes the difference;
- the evidence on the lungs (``covidviz.analysis.lungs``: each class's heat-map weight inside the lung
  fields, the site's own lung masks when it ships them), under ``backbones.<arch>.lungs``.

The films are made into model input through the pixel cache with the experiment's preprocessing,
its lung input included (``anatomy.inputs.cache_input`` segments each film once; how many fell back
to the fixed lung boxes is stored as ``lung_input``).

Everything is stored through ``covidviz.runs.external`` (atomic per site). Library code: it logs;
``train.py evaluate`` prints ``format_external``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from covidviz import runs
from covidviz.anatomy.inputs import cache_input
from covidviz.data.adapters import load_datasets
from covidviz.data.cache import build_cache, default_cache_dir
from covidviz.data.labels import MULTICLASS, NORMAL, LabelSpace, join_labels, split_labels
from covidviz.io import to_json_ready
from covidviz.runs.external import ExternalWriter
from covidviz.stats.calibration import _summary as calibration_summary
from covidviz.stats.calibration import calibrated_probabilities
from covidviz.stats.metrics import PatientBootstrap, discrimination, percentile_ci
from covidviz.stats.subgroups import COLUMNS, subgroup_aucs
from covidviz.stats.thresholds import POINTS, confusion_at

log = logging.getLogger(__name__)


class NoOverlapError(ValueError):
    """The external dataset shares no class with the experiment."""


def map_labels(table: pd.DataFrame, labels: LabelSpace) -> tuple[pd.Series, pd.Series]:
    """Each image's labels in the experiment's space, and a mask of the images that fit it.

    Multi-class: exactly one label, one the experiment knows. Multi-label: every finding known
    ("Normal"/"No Finding" is the all-negative vector). Anything else is left out, never guessed.
    """
    known = set(labels.names)
    mapped, keep = [], []
    for cell in table["labels"]:
        labs = split_labels(cell)
        if labels.task == MULTICLASS:
            ok = len(labs) == 1 and labs[0] in known
            mapped.append(labs[0] if ok else "")
        else:
            findings = [lab for lab in labs if lab != NORMAL]
            ok = all(lab in known for lab in findings)
            mapped.append(join_labels(findings) if ok else "")
        keep.append(ok)
    return pd.Series(mapped, index=table.index), pd.Series(keep, index=table.index)


def _carried_thresholds(analysis, arch: str, names, onehot, probs) -> dict:
    out = {}
    for j, cls in enumerate(names):
        out[cls] = {}
        for p in POINTS:
            t = analysis.backbone(arch).point(cls, p).threshold if analysis is not None else None
            out[cls][p] = {"threshold": t, "test": confusion_at(onehot[:, j], probs[:, j], t)}
    return out


def _auc_drop(internal: tuple[np.ndarray, np.ndarray, np.ndarray], external: tuple[np.ndarray, np.ndarray, np.ndarray],
              names, n_boot: int, seed: int) -> dict:
    """Per class (and macro): internal AUC - external AUC with a CI from independent patient bootstraps."""
    (yi, pi, gi), (ye, pe, ge) = internal, external
    bi = PatientBootstrap(gi, n_boot, seed).aucs(yi, [pi])[0]       # (C, B)
    be = PatientBootstrap(ge, n_boot, seed + 1).aucs(ye, [pe])[0]
    di, de = discrimination(yi, pi, names, gi, n_boot=0), discrimination(ye, pe, names, ge, n_boot=0)
    out = {}
    for j, cls in enumerate(names):
        a, b = di["per_class"][cls]["auc"], de["per_class"][cls]["auc"]
        lo, hi, _ = percentile_ci(bi[j] - be[j])
        out[cls] = {"internal": a, "external": b, "drop": None if a is None or b is None else a - b,
                    "ci_low": lo, "ci_high": hi}
    both = [j for j, c in enumerate(names) if out[c]["drop"] is not None]
    if both:
        lo, hi, _ = percentile_ci(bi[both].mean(0) - be[both].mean(0))
        a = float(np.mean([out[names[j]]["internal"] for j in both]))
        b = float(np.mean([out[names[j]]["external"] for j in both]))
        out["macro"] = {"internal": a, "external": b, "drop": a - b, "ci_low": lo, "ci_high": hi}
    return out


def feature_verdicts(exp, table, pixels, feats_by_arch) -> np.ndarray | None:
    """Each image's out-of-distribution verdict from the experiment's detector over every backbone's
    features (``covidviz.ood.load_detector``: the Diagnose page's verdict, feature part), or None when
    no image could be checked (nothing stored to compare with). The input gate is left out: it reads the
    original file's size and colour, and the cache holds model-size gray pixels only."""
    from covidviz.ood import load_detector

    verdicts = load_detector(exp).verdicts(feats_by_arch)
    if not any(v.checked for v in verdicts):
        return None
    return np.array([v.is_ood for v in verdicts], bool)


def _lungs(exp, table: pd.DataFrame, n_boot: int, seed: int, max_images: int) -> dict:
    """arch -> the site's lung-weight analysis ({} when no film has usable lung fields)."""
    from covidviz.analysis.lungs import lung_analysis

    return lung_analysis(exp, images=table, split="external", n_boot=n_boot, seed=seed, max_images=max_images)


def evaluate_external(exp_path: str | Path, specs: list[str], site: str, *, cache_dir: str | Path | None = None,
                      n_boot: int = 1000, seed: int = 0, batch_size: int = 32, workers: int | None = 0,
                      ood_fn: Callable | None = None, progress: bool = False, lungs: bool = True,
                      max_lung_images: int = 200) -> dict:
    """Score ``specs`` with every backbone of the experiment and store the set as ``external/<site>``.

    ``ood_fn(exp, table, cache_pixels, features_by_arch) -> bool array or None`` gives each image's
    out-of-distribution verdict; its rate is stored. Default ``feature_verdicts``: the experiment's fitted
    detector (the Diagnose page's verdict, feature part). ``lungs``: also measure the evidence on the
    lungs (at most ``max_lung_images`` films; it re-reads the originals). Returns the stored metrics.
    """
    import torch

    from covidviz.training import Feed, predict

    exp = runs.read_experiment(exp_path)
    labels, names, prep = exp.labels, list(exp.labels.names), exp.preprocessing
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    table, _, _ = load_datasets(list(specs), cache_dir=cache_dir / "datasets", seed=seed)
    mapped, keep = map_labels(table, labels)
    left_out = [{"path": str(p), "labels": str(c), "reason": "class not in the experiment's label space"}
                for p, c in zip(table.loc[~keep, "path"], table.loc[~keep, "labels"])]
    if not keep.any():
        found = sorted({lab for c in table["labels"] for lab in split_labels(c)})
        raise NoOverlapError(f"none of the {len(table)} images has a class of experiment {exp.name} "
                             f"({', '.join(names)}); the dataset's classes are: {', '.join(found) or 'none'}")
    table = table[keep].copy()
    table["source_labels"] = table["labels"]
    table["labels"] = mapped[keep]
    cache = build_cache(table["path"].tolist(), prep.image_size, cache_dir / "pixels", workers=workers, progress=progress,
                        crop=prep.crop, input=prep.input, make_input=cache_input)
    bad = {r for r, _, _ in cache.errors}
    left_out += [{"path": p, "labels": "", "reason": f"unreadable: {why}"} for _, p, why in cache.errors]
    rows = np.array([r for r in range(len(table)) if r not in bad], dtype=np.int64)
    table_paths = table["path"].tolist()
    table = table.iloc[rows].reset_index(drop=True)
    table["split"] = "external"
    onehot = labels.onehot(table["labels"])
    pids = table["patient_id"].to_numpy()

    writer = ExternalWriter(exp.path, site)
    try:
        writer.write_images(table, np.asarray(cache.thumbs)[rows])
        images = exp.images()
        test = (images["split"] == "test").to_numpy()
        internal_y = labels.onehot(images.loc[test, "labels"])
        internal_g = images.loc[test, "patient_id"].to_numpy()
        analysis = exp.analysis()
        per_backbone, feats_by_arch = {}, {}
        for arch in exp.backbones:
            model = exp.load_model(arch)
            with torch.no_grad():
                probs, feats = predict(model, Feed(cache.pixels, prep, torch.device("cpu"), batch_size), rows,
                                       labels.task, progress=progress, desc=f"[{arch}] {site}")
            preds = pd.DataFrame({"image_id": table["image_id"],
                                  **{runs.PROB_PREFIX + n: probs[:, j] for j, n in enumerate(names)}})
            writer.write_backbone(arch, preds, feats)
            feats_by_arch[arch] = feats
            temp = analysis.backbone(arch).temperature if analysis is not None else None
            calibrated = calibrated_probabilities(probs, temp, labels.task) if temp is not None else None
            per_backbone[arch] = {
                "test": discrimination(onehot, probs, names, pids, n_boot=n_boot, seed=seed),
                "thresholds": _carried_thresholds(analysis, arch, names, onehot, probs),
                "calibration": {"temperature": temp,
                                "before": calibration_summary(onehot, probs, labels.task, names, 15),
                                "after": None if calibrated is None else
                                calibration_summary(onehot, calibrated, labels.task, names, 15)},
                "subgroups": subgroup_aucs(table, onehot, probs, names, COLUMNS, n_boot, seed),
                "drop": _auc_drop((internal_y, exp.probabilities(arch)[test], internal_g), (onehot, probs, pids),
                                  names, n_boot, seed),
            }
        if lungs:
            for arch, rec in _lungs(exp, table, n_boot, seed, max_lung_images).items():
                per_backbone[arch]["lungs"] = rec
        verdicts = (ood_fn or feature_verdicts)(exp, table, np.asarray(cache.pixels)[rows], feats_by_arch)
        ood_rate = float(np.mean(np.asarray(verdicts, bool))) if verdicts is not None and len(verdicts) else None
        metrics = to_json_ready({
            "site": site, "specs": list(specs), "n_images": int(len(table)),
            "n_patients": int(pd.Series(pids).nunique()), "task": labels.task, "names": names,
            "n_boot": n_boot, "seed": seed, "left_out": left_out, "ood_rate": ood_rate,
            "class_counts": {n: int(onehot[:, j].sum()) for j, n in enumerate(names)},
            "lung_input": {} if cache.lungs is None else cache.lungs.summary(rows, table_paths),
            "backbones": per_backbone})
        writer.write_metrics(metrics)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    log.info("external set %s of %s: %d images scored, %d left out", site, exp.name, len(table), len(left_out))
    return metrics


def _ci(d: dict | None, signed: bool = False) -> str:
    if not d or d.get("auc" if not signed else "drop") is None:
        return "n/a"
    v = d["auc"] if not signed else d["drop"]
    fmt = "+.3f" if signed else ".3f"
    ci = "" if d.get("ci_low") is None else f" [{d['ci_low']:{fmt}}, {d['ci_high']:{fmt}}]"
    return f"{v:{fmt}}{ci}"


def format_external(metrics: dict) -> str:
    """Plain-text table: per class, n positives, each backbone's AUC on the site [95% CI] and the
    drop from the internal test set [95% CI]."""
    names, archs = metrics["names"], list(metrics["backbones"])
    lines = [f"External test set '{metrics['site']}': {metrics['n_images']} images ({metrics['n_patients']} patients); "
             f"{len(metrics['left_out'])} left out",
             "AUC on this site [95% CI, patient bootstrap] and drop from the internal test set (internal - external)"]
    head = f"{'class':<20}{'n_pos':>6}  " + "  ".join(f"{a + ' AUC':<24}{a + ' drop':<26}" for a in archs)
    lines.append(head)
    for cls in [*names, "macro"]:
        n_pos = metrics["class_counts"].get(cls, "")
        cells = []
        for a in archs:
            b = metrics["backbones"][a]
            auc = b["test"]["macro"] if cls == "macro" else b["test"]["per_class"][cls]
            cells.append(f"{_ci(auc):<24}{_ci(b['drop'].get(cls), signed=True):<26}")
        lines.append(f"{cls:<20}{n_pos!s:>6}  " + "  ".join(cells))
    if metrics.get("ood_rate") is not None:
        lines.append(f"Out-of-distribution verdicts: {metrics['ood_rate']:.0%} of the images")
    if metrics["left_out"]:
        reasons = pd.Series([x["reason"].split(":")[0] for x in metrics["left_out"]]).value_counts()
        lines.append("Left out: " + ", ".join(f"{n} {r}" for r, n in reasons.items()))
    lungs = {a: b["lungs"] for a, b in metrics["backbones"].items() if b.get("lungs")}
    if lungs:
        from covidviz.analysis.lungs import format_lungs

        lines.append(format_lungs(lungs, names))
    return "\n".join(lines)
