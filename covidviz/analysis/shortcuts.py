"""Shortcut audit: does the test AUC survive hiding the lungs? Does it collapse without the borders?

A heat map is one image's correlation; this is the test-set version of the Diagnose page's what-ifs
(``covidviz.cam.whatif``). For every backbone the test images (at most ``max_images``, a seeded
choice) are scored seven ways, each altered image filled with its own blurred background:

- ``original``: the film as it is;
- ``borders``: the outer strip hidden (text markers, rulers, collimation edges, lead letters);
- ``centre``: the central box hidden (roughly the lung fields);
- ``lungs_hidden``: the film's own lung fields hidden (``covidviz.analysis.lungs``: the dataset's
  annotator masks when it ships them, else the segmenter);
- ``lungs_only``: everything but the lung fields hidden (only the lungs kept), filled from the lungs
  themselves (``keep_only_sealed``, the ``lung-mask`` input's fill): a fill made from the rest of the
  film would carry a blurred corner marker or text into the film the model scores;
- ``hot10``: the hottest 10 % of the backbone's own classic CAM for its top-scoring class hidden;
- ``random10``: the same area hidden at a random place (the reference for ``hot10``).

The two lung conditions are scored on the films with usable lung fields only (a segmentation of
quality below ``anatomy.QUALITY_OK`` is left out and counted); their cells carry ``base``, the
original AUC on those same films, and their difference is to it.

Per class (one-vs-rest) and macro: the ROC AUC with a 95 % CI from a bootstrap over *patients* (the
same resamples for every condition and backbone, so the differences are paired), and the difference
to the original with its paired CI. Plain sentences flag what a reader should worry about: a class
whose AUC stays close to the original with the lungs hidden ("the model does not need the lung
fields": DeGrave et al., 2021, found exactly that for COVID-19 datasets; the centre box stands in
for the lungs in audits written before the lung conditions), one whose AUC falls with only the lungs
kept (it relies on what lies outside them), borders whose hiding costs AUC, and whether the heat
map's region matters more than a random one.

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
from covidviz.analysis.lungs import LOW_QUALITY, NO_MASK, lung_source, read_films
from covidviz.analysis.report import auc_ci
from covidviz.anatomy import QUALITY_OK
from covidviz.cam.methods import DEFAULT_METHOD, compute_cams
from covidviz.cam.occlusion import (
    BORDER,
    CENTRE,
    border_mask,
    centre_mask,
    hide,
    random_region_mask,
    top_fraction_mask,
)
from covidviz.cam.whatif import batch_logits
from covidviz.data.background import keep_only_sealed
from covidviz.io import to_json_ready
from covidviz.models import probabilities
from covidviz.stats.metrics import PatientBootstrap, _f, has_both_outcomes, percentile_ci, rank_auc

log = logging.getLogger(__name__)

AUDIT_VERSION = 2  # 2: the lung conditions (lungs_hidden, lungs_only), "base" in every cell, "lungs"
CONDITIONS = ("original", "borders", "centre", "lungs_hidden", "lungs_only", "hot10", "random10")
LUNG_CONDITIONS = ("lungs_hidden", "lungs_only")  # scored on the films with usable lung fields only
CONDITION_LABELS = {"original": "original", "borders": "borders hidden", "centre": "centre hidden",
                    "lungs_hidden": "lungs hidden", "lungs_only": "only the lungs kept",
                    "hot10": "top-10 % heat hidden", "random10": "random 10 % hidden"}
MAX_IMAGES = 200
FRACTION = 0.10
CLOSE = 0.05      # a condition's AUC within this of the original's "stays close"
MIN_AUC = 0.65    # below this the original has too little signal for a verdict
BATCH = 16        # test images per step (each becomes 1 CAM forward + 6 altered images per backbone)
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
    films = read_films(images, rows, prep, lungs=False, what="shortcut audit")
    return films.rows, films.pixels, films.skipped


def _score(model, pixels: np.ndarray, prep, task: str, shared: dict[str, np.ndarray], fraction: float,
           seed: int, batch: int) -> dict[str, np.ndarray]:
    """(N, C) probabilities per condition for one backbone. ``shared``: the altered images that do not
    depend on the model (borders, centre, the lung conditions, random), computed once for all backbones;
    ``hot10`` is made here from the backbone's own CAM."""
    conds = ["hot10", *shared]
    out = {c: [] for c in ["original", *conds]}
    for s in range(0, len(pixels), batch):
        chunk = pixels[s:s + batch]
        cam = compute_cams(model, prep.to_tensor(chunk), None, (DEFAULT_METHOD,))[DEFAULT_METHOD]
        out["original"].append(probabilities(cam.logits.astype(np.float64), task))
        hot = np.stack([hide(p, top_fraction_mask(cam.low_res[i], fraction, p.shape, seed=seed))
                        for i, p in enumerate(chunk)])
        altered = [hot, *(shared[c][s:s + batch] for c in conds[1:])]
        logits = batch_logits(model, np.concatenate(altered), prep, batch_size=4 * batch)
        probs = probabilities(logits.astype(np.float64), task)
        for k, cond in enumerate(conds):
            out[cond].append(probs[k * len(chunk):(k + 1) * len(chunk)])
    return {c: np.concatenate(v) for c, v in out.items()}


_EMPTY = {"auc": None, "ci_low": None, "ci_high": None, "diff": None, "diff_ci_low": None, "diff_ci_high": None,
          "base": None}


def _cell(y, s, s0, boot_k, boot_0) -> dict:
    """AUC of one condition with its CI, and its paired difference to the original (``base``: the
    original's AUC on the same films) with its CI."""
    if not has_both_outcomes(y):
        return dict(_EMPTY)
    auc, auc0 = rank_auc(y, s), rank_auc(y, s0)
    lo, hi, _ = percentile_ci(boot_k)
    dlo, dhi, _ = percentile_ci(boot_k - boot_0)
    return {"auc": auc, "ci_low": lo, "ci_high": hi, "diff": _f(auc - auc0), "diff_ci_low": dlo, "diff_ci_high": dhi,
            "base": _f(auc0)}


def _macro(cells: list[dict], bk: np.ndarray, b0: np.ndarray, defined: list[int]) -> dict:
    """Macro average of one condition over the ``defined`` classes (their cells and (C, B) resamples)."""
    if not defined:
        return dict(_EMPTY)
    auc = float(np.mean([cells[j]["auc"] for j in defined]))
    auc0 = float(np.mean([cells[j]["base"] for j in defined]))
    mk, m0 = bk[defined].mean(axis=0), b0[defined].mean(axis=0)
    lo, hi, _ = percentile_ci(mk)
    dlo, dhi, _ = percentile_ci(mk - m0)
    return {"auc": _f(auc), "ci_low": lo, "ci_high": hi, "diff": _f(auc - auc0), "diff_ci_low": dlo, "diff_ci_high": dhi,
            "base": _f(auc0)}


def _ci(c: dict) -> str:
    return "" if c.get("ci_low") is None else f" [{c['ci_low']:.2f}-{c['ci_high']:.2f}]"


def _falls(c: dict, close: float) -> bool:
    """The condition's AUC is clearly below the original's: by ``close`` or more, its CI below zero."""
    return (c.get("diff") is not None and c["diff"] <= -close and c.get("diff_ci_high") is not None
            and c["diff_ci_high"] < 0)


def _base(c: dict) -> float:
    """The original films' AUC a condition's cell is compared with (``base``; older audits: from ``diff``)."""
    return c["base"] if c.get("base") is not None else c["auc"] - (c.get("diff") or 0.0)


# The shortcut signs an audit row can show (``shortcut_signs``), each in a few words for a badge.
SIGNS = {"lungs_not_needed": "ranked with the lungs hidden",
         "outside_lungs": "needs what lies outside the lungs",
         "centre_not_needed": "ranked with the centre hidden",
         "borders": "uses the film's borders"}


def shortcut_signs(row: dict, close: float = CLOSE, min_auc: float = MIN_AUC) -> list[str]:
    """The shortcut signs (``SIGNS`` keys, in the order ``verdicts`` says them) of one class's audit row
    (condition -> cell): the AUC stays within ``close`` of the original with the lungs hidden (with the
    centre hidden, for an audit without the lung conditions), falls clearly with only the lungs kept, or
    falls clearly with the borders hidden. None for a class whose original AUC is below ``min_auc``."""
    o = (row.get("original") or {}).get("auc")
    if o is None or o < min_auc:
        return []
    hidden, only = row.get("lungs_hidden") or {}, row.get("lungs_only") or {}
    c, b = row.get("centre") or {}, row.get("borders") or {}
    out = []
    if hidden.get("auc") is not None or only.get("auc") is not None:
        if hidden.get("auc") is not None and hidden["auc"] >= _base(hidden) - close:
            out.append("lungs_not_needed")
        if only.get("auc") is not None and _falls(only, close):
            out.append("outside_lungs")
    elif c.get("auc") is not None and c["auc"] >= o - close:
        out.append("centre_not_needed")
    if _falls(b, close):
        out.append("borders")
    return out


def _not_needed(arch: str, cls: str, cell: dict, hidden: str, original: float) -> str:
    """The sentence for a score that survives the lung fields (or the centre box) hidden."""
    return (f"{arch}, {cls}: the test AUC stays {cell['auc']:.2f}{_ci(cell)} {hidden} (original {original:.2f}): the "
            f"model does not need the lung fields to rank {cls}; look for a shortcut outside them (markers, borders, "
            "hospital-specific processing).")


def _lung_verdicts(arch: str, cls: str, hidden: dict, only: dict, signs: list[str], close: float) -> list[str]:
    """The sentences the mask conditions support (``hidden``: lungs hidden; ``only``: only the lungs kept)."""
    out = []
    if "lungs_not_needed" in signs:
        out.append(_not_needed(arch, cls, hidden, "with the lungs hidden", _base(hidden)))
    if "outside_lungs" in signs:
        out.append(f"{arch}, {cls}: with only the lungs kept the test AUC falls from {_base(only):.2f} to "
                   f"{only['auc']:.2f}{_ci(only)}: the model relies on what lies outside the lungs (markers, "
                   "borders, the rest of the film).")
    elif (only.get("auc") is not None and hidden.get("auc") is not None and _falls(hidden, close)
          and only.get("diff") is not None and only["diff"] > -close):
        out.append(f"{arch}, {cls}: the test AUC falls to {hidden['auc']:.2f}{_ci(hidden)} with the lungs hidden and "
                   f"stays {only['auc']:.2f} with only the lungs kept: the score needs the lung fields.")
    return out


def verdicts(arch: str, per_class: dict, names, close: float = CLOSE, min_auc: float = MIN_AUC) -> list[str]:
    """Plain sentences for one backbone: lung fields not needed (from the lung conditions when the audit
    has them, else from the centre box), what lies outside the lungs used, borders used (the
    ``shortcut_signs``), the lungs needed, heat map vs random."""
    out = []
    for cls in names:
        row = per_class.get(cls) or {}
        o = (row.get("original") or {}).get("auc")
        if o is None or o < min_auc:
            continue
        signs = shortcut_signs(row, close, min_auc)
        c, b = row.get("centre") or {}, row.get("borders") or {}
        h, r = row.get("hot10") or {}, row.get("random10") or {}
        hidden, only = row.get("lungs_hidden") or {}, row.get("lungs_only") or {}
        if hidden.get("auc") is not None or only.get("auc") is not None:
            out.extend(_lung_verdicts(arch, cls, hidden, only, signs, close))
        elif "centre_not_needed" in signs:
            out.append(_not_needed(arch, cls, c, "with the centre of every film hidden", o))
        if "borders" in signs:
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


def _lung_images(pixels: np.ndarray, fields) -> dict[str, np.ndarray]:
    """The two lung conditions' images (a film without usable fields stays as it is: scored, then dropped)."""
    hidden = np.stack([hide(p, f.mask) if f.ok else p for p, f in zip(pixels, fields)])
    only = np.stack([keep_only_sealed(p, f.mask) if f.ok and f.mask.any() else p for p, f in zip(pixels, fields)])
    return {"lungs_hidden": hidden, "lungs_only": only}


def _condition_cells(scores: dict, conds, onehot, pids, films_ok, bs, n_boot: int, seed: int):
    """Per condition: (cells per class, macro). ``films_ok``: the films the lung conditions are scored on;
    the others use every film and the resamples ``bs`` (K, C, B), paired across conditions."""
    c = onehot.shape[1]
    out = {}
    for k, cond in enumerate(conds):
        sel = films_ok if cond in LUNG_CONDITIONS else None
        if sel is None or sel.all():
            y, s, s0, bk, b0 = onehot, scores[cond], scores["original"], bs[k], bs[0]
        else:
            y, s, s0 = onehot[sel], scores[cond][sel], scores["original"][sel]
            b0, bk = PatientBootstrap(pids[sel], n_boot, seed).aucs(y, [s0, s])
        cells = [_cell(y[:, j], s[:, j], s0[:, j], bk[j], b0[j]) for j in range(c)]
        defined = [j for j in range(c) if cells[j]["auc"] is not None]
        out[cond] = (cells, _macro(cells, bk, b0, defined))
    return out


def shortcut_audit(exp: runs.Experiment, *, archs=None, max_images: int = MAX_IMAGES, n_boot: int = 1000,
                   seed: int = 0, fraction: float = FRACTION, border: float = BORDER, centre: float = CENTRE,
                   split: str = "test", images: pd.DataFrame | None = None, batch: int = BATCH,
                   lungs: bool = True) -> dict:
    """The audit of ``exp``'s backbones (``archs``, default all) on ``split`` (JSON-ready dict).

    ``images``: another table with the experiment's columns (``path``, ``labels``, ``patient_id``,
    ``split``; ``lung_mask`` optional), e.g. an external test set; default the experiment's own.
    ``lungs=False`` leaves out the two lung conditions (no segmentation). Layout::

        {"version", "seconds", "split", "n_images", "n_patients", "n_boot", "seed", "max_images",
         "fraction", "border", "centre", "heatmap": {"method", "target"}, "names", "task",
         "conditions": [...], "condition_labels": {...}, "image_ids": [...],
         "n_skipped", "skipped": [{"path", "reason"}] (first 20),
         "lungs": {"source", "sources": {source: n}, "n_images", "n_skipped", "n_low_quality", "n_no_mask",
                   "quality_ok"} (absent without the lung conditions),
         "backbones": {arch: {"per_class": {cls: {"n_pos", cond: {auc, ci_low, ci_high, diff, diff_ci_low,
                                                                diff_ci_high, base}}},
                              "macro": {cond: {...}}, "verdicts": [sentences]}},
         "verdicts": [every backbone's sentences]}
    """
    t0 = time.time()
    table = (exp.images() if images is None else images).reset_index(drop=True)
    labels, prep = exp.labels, exp.preprocessing
    names, task = list(labels.names), labels.task
    archs = list(archs or exp.backbones)
    rows = _split_rows(table, split, max_images, seed)
    films = read_films(table, rows, prep, lungs=lungs, what="shortcut audit")
    kept, pixels, skipped = films.rows, films.pixels, films.skipped
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
    fields = films.lungs or []
    films_ok = np.array([f.ok for f in fields], bool)
    conds = [c for c in CONDITIONS if c not in LUNG_CONDITIONS or films_ok.any()]
    lung_info = None
    if lungs:
        problems = [f.problem for f in fields]
        source, counts = lung_source([f for f in fields if f.ok])
        lung_info = {"source": source, "sources": counts, "n_images": int(films_ok.sum()),
                     "n_skipped": int((~films_ok).sum()), "n_low_quality": problems.count(LOW_QUALITY),
                     "n_no_mask": problems.count(NO_MASK), "quality_ok": float(QUALITY_OK)}
        if films_ok.any():
            shared.update(_lung_images(pixels, fields))
        else:
            log.warning("shortcut audit: no %s film has usable lung fields; the lung conditions are left out", split)
    boot = PatientBootstrap(pids, n_boot, seed)
    result = {"version": AUDIT_VERSION, "split": split, "n_images": len(kept), "n_patients": boot.n_patients,
              "n_boot": int(n_boot), "seed": int(seed), "max_images": int(max_images), "fraction": float(fraction),
              "border": float(border), "centre": float(centre),
              "heatmap": {"method": DEFAULT_METHOD, "target": "top-scoring class"},
              "names": names, "task": task, "conditions": conds, "condition_labels": dict(CONDITION_LABELS),
              "image_ids": [str(v) for v in (sub["image_id"] if "image_id" in sub.columns else sub["path"])],
              "n_skipped": len(skipped), "skipped": skipped[:MAX_SKIPPED_LISTED], "backbones": {}, "verdicts": []}
    if lung_info is not None:
        result["lungs"] = lung_info
    for arch in archs:
        model = exp.load_model(arch)
        scores = _score(model, pixels, prep, task, shared, fraction, seed, batch)
        bs = boot.aucs(onehot, [scores[c] for c in conds])  # (K, C, B), paired resamples
        cells = _condition_cells(scores, conds, onehot, pids, films_ok if lungs else None, bs, n_boot, seed)
        per_class = {cls: {"n_pos": int(np.sum(onehot[:, j] > 0)), **{c: cells[c][0][j] for c in conds}}
                     for j, cls in enumerate(names)}
        macro = {c: cells[c][1] for c in conds}
        says = verdicts(arch, per_class, names)
        result["backbones"][arch] = {"per_class": per_class, "macro": macro, "verdicts": says}
        result["verdicts"].extend(says)
        log.info("shortcut audit of %s on %d %s images done", arch, len(kept), split)
    result["seconds"] = round(time.time() - t0, 1)
    return to_json_ready(result)


def run_audit(path_or_exp, *, save: bool = True, **kw) -> dict:
    """Audit an experiment (folder or ``Experiment``) and store it as ``runs.SHORTCUTS``."""
    return runs.measure_and_store(path_or_exp, shortcut_audit, runs.SHORTCUTS, save=save, **kw)


# ---------------------------------------------------------------------- text

def _fmt(d: dict | None) -> str:
    return auc_ci(d, digits=3)


def lung_note(result: dict) -> str:
    """Where the lung conditions' fields came from and how many films they leave out ('' without them)."""
    lungs = result.get("lungs") or {}
    if not any(c in LUNG_CONDITIONS for c in result.get("conditions") or ()):
        return ("lung conditions left out: no film had usable lung fields" if lungs else "")
    n_out = int(lungs.get("n_skipped") or 0)
    return (f"lungs hidden / only the lungs kept: lung fields from the {lungs.get('source') or 'covidviz segmenter'}, "
            f"on {lungs.get('n_images', '?')} films"
            + (f"; {n_out} left out (segmentation too uncertain)" if n_out else ""))


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
    if lung := lung_note(result):
        lines.append(f"({lung})")
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
