"""One call that analyses every backbone of an experiment, a text summary, and a trivial baseline.

``analyse_predictions`` turns the per-image table + each backbone's probabilities into one strict-JSON
dict (``None`` wherever a number is undefined); ``format_summary`` prints its headline numbers at the
end of training; ``thumbnail_baseline`` fits a logistic regression on 32x32 thumbnails, the trivial
model that tells disease signal from shortcut (see ../shared/data/README.md).
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from covidviz.data.labels import MULTICLASS, LabelSpace
from covidviz.io import to_json_ready
from covidviz.stats.calibration import calibrate
from covidviz.stats.metrics import _f, compare_backbones, discrimination, has_both_outcomes, rank_auc
from covidviz.stats.sources import linear_probe
from covidviz.stats.subgroups import COLUMNS, confounding, subgroup_aucs
from covidviz.stats.thresholds import argmax_confusion, operating_points


def _split_masks(images: pd.DataFrame) -> dict[str, np.ndarray]:
    if "split" not in images.columns:
        raise ValueError("the image table has no 'split' column")
    split = images["split"].astype(str).str.lower().to_numpy()
    return {s: split == s for s in ("train", "val", "test")}


def _patients(images: pd.DataFrame) -> np.ndarray:
    return images["patient_id"].to_numpy() if "patient_id" in images.columns else np.arange(len(images))


def analyse_predictions(images: pd.DataFrame, labels: LabelSpace, probs: dict[str, np.ndarray],
                        seed: int = 0, n_boot: int = 1000) -> dict:
    """Everything the app shows about the backbones' test performance, as strict-JSON-ready data.

    ``images``: the experiment's per-image table (``labels``, ``patient_id``, ``split`` and the
    optional ``source``/``sex``/``age``/``view``); ``probs``: backbone name -> (N, C) probabilities,
    row-aligned with ``images``. Bootstrap CIs resample test PATIENTS (``n_boot`` times, seeded; the
    same resamples for every backbone, so comparisons are paired). Layout::

        {"meta": {task, names, seed, n_boot, n: {train, val, test}, n_patients_test},
         "backbones": {arch: {
             "test": discrimination(...)          # per_class {n, n_pos, auc, ci_low, ci_high, ap, roc, pr}, macro
             "thresholds": {"per_class": operating_points(...), "confusion": argmax matrix | None},
             "calibration": calibrate(...) | None (no validation images),
             "subgroups": {"columns": [...], "rows": [{column, value, class, n, n_patients, n_pos, auc, ci_low, ci_high}]}}},
         "comparisons": [{"a", "b", "per_class": {cls: {auc_a, auc_b, diff, se, ci_low, ci_high, z,
                          p_value, p_holm, boot_ci_low, boot_ci_high, ...}}, "macro": {...}}],
         "confounding": [sentences], "confounding_details": [dicts]}
    """
    images = images.reset_index(drop=True)
    names = list(labels.names)
    masks = _split_masks(images)
    test, val = masks["test"], masks["val"]
    if not test.any():
        raise ValueError("no test images: cannot analyse predictions")
    onehot = labels.onehot(images["labels"].to_numpy())
    pids = _patients(images)
    checked = {}
    for arch, p in probs.items():
        p = np.asarray(p, np.float64)
        if p.shape != (len(images), len(names)):
            raise ValueError(f"{arch}: probabilities have shape {p.shape}, expected {(len(images), len(names))}")
        if not np.all(np.isfinite(p)):
            raise ValueError(f"{arch}: probabilities contain NaN or inf")
        checked[arch] = p

    test_images = images[test].reset_index(drop=True)
    result = {"meta": {"task": labels.task, "names": names, "seed": int(seed), "n_boot": int(n_boot),
                       "n": {s: int(m.sum()) for s, m in masks.items()},
                       "n_patients_test": int(pd.Series(pids[test]).nunique())},
              "backbones": {}, "comparisons": []}
    for arch, p in checked.items():
        entry = {"test": discrimination(onehot[test], p[test], names, pids[test], n_boot, seed)}
        entry["thresholds"] = {
            "per_class": operating_points(onehot[val], p[val], onehot[test], p[test], names),
            "confusion": argmax_confusion(onehot[test], p[test], names) if labels.task == MULTICLASS else None}
        entry["calibration"] = (calibrate(onehot[val], p[val], onehot[test], p[test], labels.task, names)
                                if val.any() else None)
        entry["subgroups"] = subgroup_aucs(test_images, onehot[test], p[test], names, COLUMNS, n_boot, seed)
        result["backbones"][arch] = entry
    for a, b in itertools.combinations(list(checked), 2):
        cmp = compare_backbones(onehot[test], checked[a][test], checked[b][test], names, pids[test], n_boot, seed)
        result["comparisons"].append({"a": a, "b": b, **cmp})
    details = confounding(images, onehot, names)
    result["confounding"] = [d["sentence"] for d in details]
    result["confounding_details"] = details
    return to_json_ready(result)


# ---------------------------------------------------------------------- text summary

def auc_ci(d: dict | None, digits: int = 3) -> str:
    """'0.812 [0.780-0.843]' from a stored ``{"auc", "ci_low", "ci_high"}`` ('n/a' when not measured):
    the one format of the command-line summaries (metrics, source evidence, shortcut audit)."""
    if not d or d.get("auc") is None:
        return "n/a"
    ci = "" if d.get("ci_low") is None else f" [{d['ci_low']:.{digits}f}-{d['ci_high']:.{digits}f}]"
    return f"{d['auc']:.{digits}f}{ci}"


def _p(p: float | None) -> str:
    if p is None:
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def format_summary(result: dict, labels: LabelSpace) -> str:
    """Plain-text tables: per-class test AUC [95% patient-bootstrap CI] per backbone, paired tests."""
    names = list(labels.names)
    archs = list(result.get("backbones", {}))
    meta = result.get("meta", {})
    w0 = max([len("macro"), len("class")] + [len(n) for n in names]) + 2
    lines = [f"Test ROC AUC [95% CI, patient bootstrap x{meta.get('n_boot', '?')}] on "
             f"{meta.get('n', {}).get('test', '?')} test images ({meta.get('n_patients_test', '?')} patients)"]
    cols = [max(len(a), 22) + 2 for a in archs]
    lines.append("class".ljust(w0) + "n_pos".rjust(6) + "  " + "".join(a.ljust(c) for a, c in zip(archs, cols)))
    for name in names + ["macro"]:
        cells = []
        n_pos = ""
        for a in archs:
            test = result["backbones"][a]["test"]
            d = test["macro"] if name == "macro" else test["per_class"][name]
            if name != "macro":
                n_pos = str(d["n_pos"])
            cells.append(auc_ci(d))
        lines.append(name.ljust(w0) + n_pos.rjust(6) + "  " + "".join(c.ljust(w) for c, w in zip(cells, cols)))
    for cmp in result.get("comparisons", []):
        lines.append("")
        lines.append(f"{cmp['a']} - {cmp['b']}: AUC difference, DeLong 95% CI and p (Holm across classes), "
                     "paired patient-bootstrap 95% CI")
        for name in names:
            d = cmp["per_class"][name]
            if d.get("diff") is None:
                lines.append(name.ljust(w0) + "n/a")
                continue
            boot = ("n/a" if d.get("boot_ci_low") is None
                    else f"[{d['boot_ci_low']:+.3f}, {d['boot_ci_high']:+.3f}]")
            ci = "[n/a]" if d.get("ci_low") is None else f"[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"
            lines.append(name.ljust(w0) + f"{d['diff']:+.3f} {ci}  "
                         f"p={_p(d.get('p_value'))} (Holm {_p(d.get('p_holm'))})  bootstrap {boot}")
        m = cmp.get("macro", {})
        if m.get("diff") is not None:
            boot = "n/a" if m.get("boot_ci_low") is None else f"[{m['boot_ci_low']:+.3f}, {m['boot_ci_high']:+.3f}]"
            lines.append("macro".ljust(w0) + f"{m['diff']:+.3f}  bootstrap {boot}")
    base = result.get("baseline")
    if base:
        lines.append("")
        lines.append("Trivial baseline (logistic regression on 32x32 thumbnails): "
                     + ", ".join(f"{n} {auc_ci(base['test']['per_class'].get(n))}" for n in names)
                     + f"; macro {'n/a' if base['test'].get('macro_auc') is None else format(base['test']['macro_auc'], '.3f')}")
        src = base.get("source")
        if src and src.get("accuracy") is not None:
            lines.append(f"  the same model predicts the image source with accuracy {src['accuracy']:.0%} "
                         f"(majority guess {src['majority_accuracy']:.0%})")
    if result.get("confounding"):
        lines.append("")
        lines.append("Confounding warnings:")
        lines.extend("- " + s for s in result["confounding"])
    return "\n".join(lines)


# ---------------------------------------------------------------------- trivial baseline

def _thumb_features(thumbs: np.ndarray) -> np.ndarray:
    t = np.asarray(thumbs, np.float32)
    if t.ndim != 3 or t.shape[1] % 2 or t.shape[2] % 2:
        raise ValueError(f"thumbnails must be (N, H, W) with even H, W; got {t.shape}")
    n, h, w = t.shape
    small = t.reshape(n, h // 2, 2, w // 2, 2).mean(axis=(2, 4))  # 64x64 -> 32x32 by 2x2 averaging
    return small.reshape(n, -1) / 255.0


def _logreg(seed: int):
    return linear_probe(seed)  # the same recipe as the source probe (standardised, C=0.1)


def thumbnail_probabilities(thumbs: np.ndarray, images: pd.DataFrame, labels: LabelSpace,
                            seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(test mask (N,), (N_test, C) test probabilities) of the thumbnail baseline (``thumbnail_baseline``):
    NaN columns where a multi-label class has one outcome in train. Also what ``analysis.sources``
    scores inside each source."""
    images = images.reset_index(drop=True)
    thumbs = np.asarray(thumbs)
    if len(thumbs) != len(images):
        raise ValueError(f"{len(thumbs)} thumbnails for {len(images)} images")
    masks = _split_masks(images)
    tr, te = masks["train"], masks["test"]
    if not tr.any() or not te.any():
        raise ValueError("the baseline needs train and test images")
    x = _thumb_features(thumbs)
    onehot = labels.onehot(images["labels"].to_numpy())
    probs = np.full((int(te.sum()), labels.num_classes), np.nan)
    if labels.task == MULTICLASS:
        y = np.argmax(onehot, axis=1)
        model = _logreg(seed).fit(x[tr], y[tr])
        pr = model.predict_proba(x[te])
        for k, cls in enumerate(model.classes_):
            probs[:, cls] = pr[:, k]
    else:
        for j in range(labels.num_classes):
            if has_both_outcomes(onehot[tr, j]):
                probs[:, j] = _logreg(seed).fit(x[tr], onehot[tr, j]).predict_proba(x[te])[:, 1]
    return te, probs


def thumbnail_baseline(thumbs: np.ndarray, images: pd.DataFrame, labels: LabelSpace, seed: int = 0) -> dict:
    """Logistic regression (standardised pixels, C=0.1) on 32x32-downsampled thumbnails.

    Trained on the train split, evaluated on test: per-class AUC (one-vs-rest; multilabel: one model
    per class, None where a class has a single outcome in train or test), the macro AUC, the argmax
    accuracy (multiclass); and the same kind of model's accuracy at predicting ``source`` (beside the
    majority-source guess) when train has >= 2 sources. A high source accuracy means the pixels
    identify the hospital, so a CNN's AUC may come from the shortcut rather than the disease.
    """
    images = images.reset_index(drop=True)
    te, probs = thumbnail_probabilities(thumbs, images, labels, seed)
    tr = _split_masks(images)["train"]
    x = _thumb_features(np.asarray(thumbs))
    names = list(labels.names)
    onehot = labels.onehot(images["labels"].to_numpy())
    per_class = {}
    for j, name in enumerate(names):
        yt = onehot[te, j]
        auc = rank_auc(yt, probs[:, j]) if np.all(np.isfinite(probs[:, j])) else None
        per_class[name] = {"auc": auc, "n": int(te.sum()), "n_pos": int(np.sum(yt > 0))}
    aucs = [d["auc"] for d in per_class.values() if d["auc"] is not None]
    test = {"per_class": per_class, "macro_auc": _f(np.mean(aucs)) if aucs else None}
    if labels.task == MULTICLASS:
        pred = np.argmax(np.nan_to_num(probs, nan=-1.0), axis=1)
        test["accuracy"] = _f(np.mean(pred == np.argmax(onehot[te], axis=1)))
    source = None
    if "source" in images.columns:
        src = images["source"].fillna("").astype(str).to_numpy()
        known = src != ""
        if len(set(src[tr & known])) >= 2 and (te & known).any():
            model = _logreg(seed).fit(x[tr & known], src[tr & known])
            truth = src[te & known]
            values, counts = np.unique(src[tr & known], return_counts=True)
            majority = values[np.argmax(counts)]
            source = {"accuracy": _f(np.mean(model.predict(x[te & known]) == truth)),
                      "majority_accuracy": _f(np.mean(truth == majority)), "majority": str(majority),
                      "n_test": int(len(truth)), "values": [str(v) for v in values]}
    return to_json_ready({"model": "logistic regression (C=0.1) on standardised 32x32 thumbnails",
                          "n_train": int(tr.sum()), "n_test": int(te.sum()), "test": test, "source": source})
