"""Shortcut audit: does the test AUC survive hiding the lungs? Does it collapse without the borders?

A heat map is one image's correlation; this is the test-set version of the Diagnose page's what-ifs
(``covidviz.cam.whatif``). For every backbone the test images (at most ``max_images``, a seeded
choice) are scored five ways, each altered image filled with its own blurred background:

- ``original``: the film as it is;
- ``borders``: the outer strip hidden (text markers, rulers, collimation edges, lead letters);
- ``centre``: the central box hidden (the lung fields);
- ``hot10``: the hottest 10 % of the backbone's own classic CAM for its top-scoring class hidden;
- ``random10``: the same area hidden at a random place (the reference for ``hot10``).

Per class (one-vs-rest) and macro: the ROC AUC with a 95 % CI from a bootstrap over *patients* (the
same resamples for every condition and backbone, so the differences are paired), and the difference
to the original with its paired CI. Plain sentences flag what a reader should worry about: a class
whose AUC stays close to the original with the centre hidden ("the model does not need the lung
fields": DeGrave et al., 2021, found exactly that for COVID-19 datasets), borders whose hiding costs
AUC, and whether the heat map's region matters more than a random one.

``shortcut_audit(exp)`` returns the strict-JSON dict stored as ``runs.SHORTCUTS`` (read through
``runs.records.Shortcuts``); ``format_audit`` prints it. Images are read from their original files
(``data.imageio.read_image``); unreadable ones are skipped with a warning and listed.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from covidviz import runs
from covidviz.cam.methods import DEFAULT_METHOD, compute_cams
from covidviz.cam.occlusion import BORDER, CENTRE, border_mask, centre_mask, hide, random_region_mask, top_fraction_mask
from covidviz.cam.whatif import batch_logits
from covidviz.data.imageio import ImageDecodeError, read_image
from covidviz.io import to_json_ready
from covidviz.models import probabilities
from covidviz.stats.metrics import PatientBootstrap, _f, has_both_outcomes, percentile_ci, rank_auc

log = logging.getLogger(__name__)

AUDIT_VERSION = 1
CONDITIONS = ("original", "borders", "centre", "hot10", "random10")
CONDITION_LABELS = {"original": "original", "borders": "borders hidden", "centre": "centre hidden",
                    "hot10": "top-10 % heat hidden", "random10": "random 10 % hidden"}
MAX_IMAGES = 200
FRACTION = 0.10
CLOSE = 0.05      # a condition's AUC within this of the original's "stays close"
MIN_AUC = 0.65    # below this the original has too little signal for a verdict
BATCH = 16        # test images per step (each becomes 1 CAM forward + 4 altered images per backbone)
MAX_SKIPPED_LISTED = 20


def _split_rows(images: pd.DataFrame, split: str, max_images: int, seed: int) -> np.ndarray:
    rows = images.index[images["split"].astype(str).str.lower() == split].to_numpy()
    if len(rows) == 0:
        raise ValueError(f"no {split} images: nothing to audit")
    if len(rows) > max_images:
        rows = np.sort(np.random.default_rng(seed).choice(rows, size=max_images, replace=False))
    return rows


def read_pixels(images: pd.DataFrame, rows, prep) -> tuple[list[int], np.ndarray, list[dict]]:
    """Model pixels (N, S, S) of the table rows that decode; the rest are skipped (logged, returned)."""
    kept, pix, skipped = [], [], []
    for r in rows:
        path = images.loc[r, "path"]
        try:
            pix.append(prep.to_model_pixels(read_image(path)))
            kept.append(int(r))
        except (ImageDecodeError, OSError, ValueError) as exc:
            log.warning("shortcut audit: skipping unreadable image %s (%s)", path, exc)
            skipped.append({"path": str(path), "reason": str(exc)})
    s = int(prep.image_size)
    return kept, (np.stack(pix) if pix else np.zeros((0, s, s), np.uint8)), skipped


def _score(model, pixels: np.ndarray, prep, task: str, shared: dict[str, np.ndarray], fraction: float,
           seed: int, batch: int) -> dict[str, np.ndarray]:
    """(N, C) probabilities per condition for one backbone. ``shared``: the altered images that do not
    depend on the model (borders, centre, random), computed once for all backbones."""
    out = {c: [] for c in CONDITIONS}
    for s in range(0, len(pixels), batch):
        chunk = pixels[s:s + batch]
        cam = compute_cams(model, prep.to_tensor(chunk), None, (DEFAULT_METHOD,))[DEFAULT_METHOD]
        out["original"].append(probabilities(cam.logits.astype(np.float64), task))
        hot = np.stack([hide(p, top_fraction_mask(cam.low_res[i], fraction, p.shape, seed=seed))
                        for i, p in enumerate(chunk)])
        altered = [shared["borders"][s:s + batch], shared["centre"][s:s + batch], hot, shared["random10"][s:s + batch]]
        logits = batch_logits(model, np.concatenate(altered), prep, batch_size=4 * batch)
        probs = probabilities(logits.astype(np.float64), task)
        for k, cond in enumerate(("borders", "centre", "hot10", "random10")):
            out[cond].append(probs[k * len(chunk):(k + 1) * len(chunk)])
    return {c: np.concatenate(v) for c, v in out.items()}


def _cell(y, s, s0, boot_k, boot_0) -> dict:
    """AUC of one condition with its CI, and its paired difference to the original with its CI."""
    if not has_both_outcomes(y):
        return {"auc": None, "ci_low": None, "ci_high": None, "diff": None, "diff_ci_low": None, "diff_ci_high": None}
    auc, auc0 = rank_auc(y, s), rank_auc(y, s0)
    lo, hi, _ = percentile_ci(boot_k)
    dlo, dhi, _ = percentile_ci(boot_k - boot_0)
    return {"auc": auc, "ci_low": lo, "ci_high": hi, "diff": _f(auc - auc0), "diff_ci_low": dlo, "diff_ci_high": dhi}


def _macro(per_class: dict, names, defined, bs, k) -> dict:
    if not defined:
        return {"auc": None, "ci_low": None, "ci_high": None, "diff": None, "diff_ci_low": None, "diff_ci_high": None}
    auc = float(np.mean([per_class[names[j]][CONDITIONS[k]]["auc"] for j in defined]))
    auc0 = float(np.mean([per_class[names[j]]["original"]["auc"] for j in defined]))
    mk, m0 = bs[k][defined].mean(axis=0), bs[0][defined].mean(axis=0)
    lo, hi, _ = percentile_ci(mk)
    dlo, dhi, _ = percentile_ci(mk - m0)
    return {"auc": _f(auc), "ci_low": lo, "ci_high": hi, "diff": _f(auc - auc0), "diff_ci_low": dlo, "diff_ci_high": dhi}


def verdicts(arch: str, per_class: dict, names, close: float = CLOSE, min_auc: float = MIN_AUC) -> list[str]:
    """Plain sentences for one backbone: lung fields not needed, borders used, heat map vs random."""
    out = []
    for cls in names:
        row = per_class.get(cls) or {}
        o = (row.get("original") or {}).get("auc")
        if o is None or o < min_auc:
            continue
        c, b = row.get("centre") or {}, row.get("borders") or {}
        h, r = row.get("hot10") or {}, row.get("random10") or {}
        if c.get("auc") is not None and c["auc"] >= o - close:
            ci = "" if c.get("ci_low") is None else f" [{c['ci_low']:.2f}-{c['ci_high']:.2f}]"
            out.append(f"{arch}, {cls}: the test AUC stays {c['auc']:.2f}{ci} with the centre of every film hidden "
                       f"(original {o:.2f}): the model does not need the lung fields to rank {cls}; look for a "
                       "shortcut outside them (markers, borders, hospital-specific processing).")
        if b.get("diff") is not None and b["diff"] <= -close and (b.get("diff_ci_high") is not None and b["diff_ci_high"] < 0):
            out.append(f"{arch}, {cls}: hiding the film's borders lowers the test AUC from {o:.2f} to {b['auc']:.2f}: "
                       "the model uses the outer strip of the films (markers, text, collimation edges; on tightly "
                       "framed films also the outermost lung) for this class.")
        if h.get("diff") is not None and r.get("diff") is not None:
            if h["diff"] <= r["diff"] - close and (h.get("diff_ci_high") is not None and h["diff_ci_high"] < 0):
                out.append(f"{arch}, {cls}: hiding the top-10 % heat-map region lowers the test AUC to {h['auc']:.2f}, "
                           f"a random 10 % only to {r['auc']:.2f}: the heat maps point at what the score uses.")
            elif h["diff"] > r["diff"] - close / 2 and abs(h["diff"]) < close:
                out.append(f"{arch}, {cls}: hiding the top-10 % heat-map region ({h['auc']:.2f}) costs no more than a "
                           f"random 10 % ({r['auc']:.2f}): the heat maps do not show what the score depends on.")
    return out


def shortcut_audit(exp: runs.Experiment, *, archs=None, max_images: int = MAX_IMAGES, n_boot: int = 1000,
                   seed: int = 0, fraction: float = FRACTION, border: float = BORDER, centre: float = CENTRE,
                   split: str = "test", images: pd.DataFrame | None = None, batch: int = BATCH) -> dict:
    """The audit of ``exp``'s backbones (``archs``, default all) on ``split`` (JSON-ready dict).

    ``images``: another table with the experiment's columns (``path``, ``labels``, ``patient_id``,
    ``split``), e.g. an external test set; default the experiment's own. Layout::

        {"version", "seconds", "split", "n_images", "n_patients", "n_boot", "seed", "max_images",
         "fraction", "border", "centre", "heatmap": {"method", "target"}, "names", "task",
         "conditions": [...], "condition_labels": {...}, "image_ids": [...],
         "n_skipped", "skipped": [{"path", "reason"}] (first 20),
         "backbones": {arch: {"per_class": {cls: {"n_pos", cond: {auc, ci_low, ci_high, diff, diff_ci_low,
                                                                diff_ci_high}}},
                              "macro": {cond: {...}}, "verdicts": [sentences]}},
         "verdicts": [every backbone's sentences]}
    """
    t0 = time.time()
    table = (exp.images() if images is None else images).reset_index(drop=True)
    labels, prep = exp.labels, exp.preprocessing
    names, task = list(labels.names), labels.task
    archs = list(archs or exp.backbones)
    rows = _split_rows(table, split, max_images, seed)
    kept, pixels, skipped = read_pixels(table, rows, prep)
    if len(kept) == 0:
        raise ValueError(f"none of the {len(rows)} {split} images could be read: nothing to audit")
    sub = table.loc[kept]
    onehot = labels.onehot(sub["labels"].to_numpy())
    pids = sub["patient_id"].to_numpy() if "patient_id" in sub.columns else np.arange(len(sub))

    shape = pixels.shape[1:]
    bm, cm = border_mask(shape, border), centre_mask(shape, centre)
    shared = {"borders": np.stack([hide(p, bm) for p in pixels]),
              "centre": np.stack([hide(p, cm) for p in pixels]),
              "random10": np.stack([hide(p, random_region_mask(shape, fraction, seed=seed + int(r)))
                                    for p, r in zip(pixels, kept)])}
    boot = PatientBootstrap(pids, n_boot, seed)
    result = {"version": AUDIT_VERSION, "split": split, "n_images": len(kept), "n_patients": boot.n_patients,
              "n_boot": int(n_boot), "seed": int(seed), "max_images": int(max_images), "fraction": float(fraction),
              "border": float(border), "centre": float(centre),
              "heatmap": {"method": DEFAULT_METHOD, "target": "top-scoring class"},
              "names": names, "task": task, "conditions": list(CONDITIONS), "condition_labels": dict(CONDITION_LABELS),
              "image_ids": [str(v) for v in (sub["image_id"] if "image_id" in sub.columns else sub["path"])],
              "n_skipped": len(skipped), "skipped": skipped[:MAX_SKIPPED_LISTED], "backbones": {}, "verdicts": []}
    for arch in archs:
        model = exp.load_model(arch)
        scores = _score(model, pixels, prep, task, shared, fraction, seed, batch)
        bs = boot.aucs(onehot, [scores[c] for c in CONDITIONS])  # (K, C, B), paired resamples
        per_class, defined = {}, []
        for j, cls in enumerate(names):
            y = onehot[:, j]
            per_class[cls] = {"n_pos": int(np.sum(y > 0))}
            for k, cond in enumerate(CONDITIONS):
                per_class[cls][cond] = _cell(y, scores[cond][:, j], scores["original"][:, j], bs[k, j], bs[0, j])
            if has_both_outcomes(y):
                defined.append(j)
        macro = {cond: _macro(per_class, names, defined, bs, k) for k, cond in enumerate(CONDITIONS)}
        says = verdicts(arch, per_class, names)
        result["backbones"][arch] = {"per_class": per_class, "macro": macro, "verdicts": says}
        result["verdicts"].extend(says)
        log.info("shortcut audit of %s on %d %s images done", arch, len(kept), split)
    result["seconds"] = round(time.time() - t0, 1)
    return to_json_ready(result)


def run_audit(path_or_exp, *, save: bool = True, **kw) -> dict:
    """Audit an experiment (folder or ``Experiment``) and store it as ``runs.SHORTCUTS``."""
    exp = path_or_exp if isinstance(path_or_exp, runs.Experiment) else runs.read_experiment(path_or_exp)
    result = shortcut_audit(exp, **kw)
    if save:
        exp.save_json(runs.SHORTCUTS, result)
    return result


# ---------------------------------------------------------------------- text

def _fmt(d: dict | None) -> str:
    if not d or d.get("auc") is None:
        return "n/a"
    ci = "" if d.get("ci_low") is None else f" [{d['ci_low']:.2f}-{d['ci_high']:.2f}]"
    return f"{d['auc']:.3f}{ci}"


def format_audit(result: dict, labels) -> str:
    """Plain-text tables (one per backbone: class x condition, AUC [95 % CI]) and the verdicts."""
    names = list(labels.names) if hasattr(labels, "names") else list(labels)
    conds = list(result.get("conditions") or CONDITIONS)
    heads = [(result.get("condition_labels") or CONDITION_LABELS).get(c, c) for c in conds]
    w0 = max([len("macro"), len("class")] + [len(n) for n in names]) + 2
    cols = [max(len(h), 20) + 2 for h in heads]
    lines = [f"Shortcut audit: test ROC AUC [95% CI, patient bootstrap x{result.get('n_boot', '?')}] with parts of "
             f"each film hidden, on {result.get('n_images', '?')} {result.get('split', 'test')} images "
             f"({result.get('n_patients', '?')} patients)"
             + (f"; {result['n_skipped']} unreadable skipped" if result.get("n_skipped") else "")]
    lines.append(f"(borders: outer {100 * result.get('border', BORDER):.0f} % strip; centre: central box "
                 f"{100 * result.get('centre', CENTRE):.0f} % of each side; top-10 % heat: each model's own CAM for "
                 "its top class; fill: the film's own blurred background)")
    for arch, rec in (result.get("backbones") or {}).items():
        lines.append("")
        lines.append(f"[{arch}]")
        lines.append("class".ljust(w0) + "n_pos".rjust(6) + "  " + "".join(h.ljust(c) for h, c in zip(heads, cols)))
        per_class = rec.get("per_class") or {}
        for name in names + ["macro"]:
            row = (rec.get("macro") or {}) if name == "macro" else (per_class.get(name) or {})
            n_pos = "" if name == "macro" else str(row.get("n_pos", ""))
            cells = [_fmt(row.get(c)) for c in conds]
            lines.append(name.ljust(w0) + n_pos.rjust(6) + "  " + "".join(v.ljust(c) for v, c in zip(cells, cols)))
    if result.get("verdicts"):
        lines.append("")
        lines.append("Shortcut verdicts:")
        lines.extend("- " + s for s in result["verdicts"])
    return "\n".join(lines)
