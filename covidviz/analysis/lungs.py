"""Evidence on the lungs: how much of each class's heat-map weight lies inside the lung fields.

For every backbone and class, the class's classic CAM (the app's default map) is computed on each test
film (all of them, at most ``max_images``, a seeded choice: "where does the evidence for class k come
from", whichever the film's label) and scored against the film's lung fields on the model input:

- ``share``: the share of the map's positive weight inside the lungs (``cam.localisation.energy_inside``),
  averaged over the films, with a 95 % CI from a bootstrap over patients;
- ``chance``: the mean share of the model input the lungs cover on the same films: what a map spread
  evenly would score, and the chance that a random peak lands on the lungs;
- ``pointing``: the share of films whose map peaks inside the lungs (strictly: no tolerance), with its CI.

The same numbers on the class's positive films only are stored beside them (``positives``). A map with
no positive weight (nothing in the film speaks for the class) has no share and is counted (``n_flat``).

Lung fields come from the dataset when it ships them (the ``lung_mask`` column: annotator masks, e.g.
the COVID-19 Radiography Database's ``masks/``, resized to the film) and otherwise from the segmenter
(``covidviz.anatomy.segment_lungs``); films whose segmentation quality is below ``QUALITY_OK`` are left
out and counted. Either way the mask found at the film's size goes through the experiment's own
preprocessing (``cam.lungshare.model_mask``: the crop, then the resize), as lesion masks do in
``analysis.localisation``, so mask and map cover the same pixels. ``read_films`` is shared with the
shortcut audit, whose "lungs hidden" / "only the lungs kept" conditions use the same fields; it makes
the model pixels with ``anatomy.inputs.model_input`` (a lung input's segmentation is the one reused
here, and its crop is followed).

``lung_analysis(exp)`` returns ``{arch: result}``; ``run_lungs`` stores each as ``runs.lungs.LUNGS``
(layout: ``covidviz.runs.lungs``); ``format_lungs`` prints them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from covidviz import runs
from covidviz.anatomy import QUALITY_OK, segment_lungs
from covidviz.anatomy.inputs import ModelInput, model_input
from covidviz.cam import DEFAULT_LAYER, DEFAULT_METHOD, compute_cams
from covidviz.cam.localisation import energy_inside, pointing_game
from covidviz.cam.lungshare import model_mask
from covidviz.cam.overlay import resize_map
from covidviz.data.imageio import ImageDecodeError, read_image
from covidviz.io import to_json_ready
from covidviz.runs.lungs import ANNOTATOR, LUNGS, SEGMENTER
from covidviz.stats.metrics import PatientBootstrap, _f, percentile_ci

log = logging.getLogger(__name__)

LUNGS_VERSION = 1
MAX_IMAGES = 200
BATCH = 16
LOW_QUALITY, NO_MASK = "low quality", "no lung field"


@dataclass(frozen=True)
class FilmLungs:
    """One film's lung fields on the model input: ``mask`` bool (S, S), None when unusable (``problem``
    says why: ``LOW_QUALITY`` or ``NO_MASK``); ``source``: ``ANNOTATOR`` or ``SEGMENTER``."""

    mask: np.ndarray | None
    source: str
    quality: float
    problem: str = ""

    @property
    def ok(self) -> bool:
        return self.mask is not None


def _annotator_mask(path: str, shape: tuple[int, int]) -> np.ndarray:
    """An annotator's lung mask file -> bool mask at the film's size (masks are often smaller: the
    Radiography Database's are 256 px for 299 px films)."""
    m = read_image(path) > 127
    return resize_map(m.astype(np.float32), shape) > 0.5


def film_lungs(gray: np.ndarray, prep, lung_mask: str = "", inp: ModelInput | None = None) -> FilmLungs:
    """The lung fields of one film (uint8 (H, W)) on the model input of ``prep``: from ``lung_mask`` (an
    annotator's mask file) when given and readable, else from the segmenter. ``inp``: the film's
    ``ModelInput`` (its segmentation is reused and a lung input's crop followed; needed for lung-crop)."""
    shape = np.asarray(gray).shape[:2]
    region = None if inp is None else inp.region
    if lung_mask:
        try:
            film = _annotator_mask(lung_mask, shape)
        except (ImageDecodeError, OSError, ValueError) as exc:
            log.warning("lung mask %s unreadable (%s): segmenting the film instead", lung_mask, exc)
        else:
            mask = model_mask(film, prep, region)
            return FilmLungs(mask, ANNOTATOR, 1.0) if mask.any() else FilmLungs(None, ANNOTATOR, 0.0, NO_MASK)
    fields = inp.lungs if inp is not None and inp.lungs is not None else segment_lungs(gray)
    if fields.quality < QUALITY_OK:
        return FilmLungs(None, SEGMENTER, float(fields.quality), LOW_QUALITY)
    mask = model_mask(fields.mask, prep, region)
    return FilmLungs(mask, SEGMENTER, float(fields.quality)) if mask.any() else \
        FilmLungs(None, SEGMENTER, float(fields.quality), NO_MASK)


@dataclass(frozen=True)
class Films:
    """Readable films of a table: their rows, model pixels (N, S, S), lung fields (None: not asked for),
    and the unreadable ones (``{"path", "reason"}``)."""

    rows: list[int]
    pixels: np.ndarray
    lungs: list[FilmLungs] | None
    skipped: list[dict]


def read_films(images: pd.DataFrame, rows, prep, *, lungs: bool = True, what: str = "analysis") -> Films:
    """Decode the table rows (``path``; ``lung_mask`` when the table has it); unreadable films are
    skipped with a warning and listed. ``lungs``: also find each film's lung fields (``film_lungs``)."""
    kept, pix, fields, skipped = [], [], [], []
    has_masks = "lung_mask" in images.columns
    for r in rows:
        path = images.loc[r, "path"]
        try:
            gray = read_image(path)
            inp = model_input(prep, gray)
        except (ImageDecodeError, OSError, ValueError) as exc:
            log.warning("%s: skipping unreadable image %s (%s)", what, path, exc)
            skipped.append({"path": str(path), "reason": str(exc)})
            continue
        if lungs:
            try:
                fields.append(film_lungs(gray, prep, str(images.loc[r, "lung_mask"] or "") if has_masks else "", inp))
            except ValueError as exc:  # e.g. a film under the segmenter's 32 px
                log.warning("%s: no lung fields for %s (%s)", what, path, exc)
                fields.append(FilmLungs(None, SEGMENTER, 0.0, LOW_QUALITY))
        pix.append(inp.pixels)
        kept.append(int(r))
    s = int(prep.image_size)
    return Films(kept, np.stack(pix) if pix else np.zeros((0, s, s), np.uint8), fields if lungs else None, skipped)


def lung_source(fields: list[FilmLungs]) -> tuple[str, dict[str, int]]:
    """("annotator masks", "covidviz segmenter" or both joined by " and ", films per source)."""
    counts = {src: sum(f.source == src for f in fields) for src in (ANNOTATOR, SEGMENTER)}
    counts = {k: v for k, v in counts.items() if v}
    return " and ".join(counts) or SEGMENTER, counts


def map_on_lungs(heat: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(share of the map's positive weight inside ``mask``, 1.0 / 0.0: does its peak lie inside), both
    NaN for a map with no positive weight. ``heat`` of any size is resized to the mask."""
    share = energy_inside(heat, mask)
    if not np.isfinite(share):
        return float("nan"), float("nan")
    return float(share), float(pointing_game(heat, mask, tolerance_px=0.0))


def class_scores(model, pixels: np.ndarray, masks: list[np.ndarray], n_classes: int, prep,
                 batch: int = BATCH) -> tuple[np.ndarray, np.ndarray]:
    """(share, hit), each (N, C): every class's classic CAM on every film against its lung mask."""
    n = len(pixels)
    share, hit = np.full((n, n_classes), np.nan), np.full((n, n_classes), np.nan)
    for s in range(0, n, batch):
        x = prep.to_tensor(pixels[s:s + batch])
        for j in range(n_classes):
            raw = compute_cams(model, x, j, (DEFAULT_METHOD,))[DEFAULT_METHOD].raw
            for i, heat in enumerate(raw):
                share[s + i, j], hit[s + i, j] = map_on_lungs(heat, masks[s + i])
    return share, hit


def _boot_means(boot: PatientBootstrap, values: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """(K, B) bootstrap means of the K columns of ``values`` (N, K), each over its ``ok`` films."""
    v = np.where(ok, values, 0.0)
    w_ok = ok.astype(np.float64)
    out = []
    for w in boot.blocks():
        num, den = w @ v, w @ w_ok
        out.append(np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan))
    return np.concatenate(out).T if out else np.zeros((values.shape[1], 0))


def summarise(share: np.ndarray, hit: np.ndarray, area: np.ndarray, onehot: np.ndarray, names, boot) -> dict:
    """Per class ``{"all": CELL, "positives": CELL}`` (layout: ``covidviz.runs.lungs``)."""
    n = share.shape[0]
    cols, oks, keys = [], [], []
    for j, _ in enumerate(names):
        for films, keep in (("all", np.ones(n, bool)), ("positives", onehot[:, j] > 0)):
            ok = keep & np.isfinite(share[:, j])
            cols += [share[:, j], hit[:, j]]
            oks += [ok, ok]
            keys.append((j, films, keep, ok))
    bs = _boot_means(boot, np.stack(cols, 1), np.stack(oks, 1)) if cols else np.zeros((0, 0))
    out = {}
    for k, (j, films, keep, ok) in enumerate(keys):
        cell = {"n": int(ok.sum()), "n_flat": int((keep & ~np.isfinite(share[:, j])).sum())}
        if ok.any():
            lo, hi, _ = percentile_ci(bs[2 * k])
            plo, phi, _ = percentile_ci(bs[2 * k + 1])
            chance = _f(area[ok].mean())
            cell.update(share=_f(share[ok, j].mean()), ci_low=lo, ci_high=hi, chance=chance,
                        pointing=_f(hit[ok, j].mean()), pointing_ci_low=plo, pointing_ci_high=phi,
                        pointing_chance=chance)
        else:
            cell.update(share=None, ci_low=None, ci_high=None, chance=None, pointing=None, pointing_ci_low=None,
                        pointing_ci_high=None, pointing_chance=None)
        out.setdefault(names[j], {})[films] = cell
    return out


def _split_rows(images: pd.DataFrame, split: str, max_images: int, seed: int) -> np.ndarray:
    rows = images.index[images["split"].astype(str).str.lower() == split].to_numpy()
    if len(rows) > max_images:
        rows = np.sort(np.random.default_rng(seed).choice(rows, size=max_images, replace=False))
    return rows


def lung_analysis(exp: runs.Experiment, *, archs=None, max_images: int = MAX_IMAGES, n_boot: int = 1000,
                  seed: int = 0, split: str = "test", images: pd.DataFrame | None = None,
                  models: dict | None = None, batch: int = BATCH) -> dict:
    """``{arch: result}`` for ``exp``'s backbones (``archs``, default all) on ``split`` of ``images``
    (default the experiment's own table; an external set's table works too). ``models``: already
    loaded backbones by name. Empty when no film of the split can be read."""
    t0 = time.time()
    table = (exp.images() if images is None else images).reset_index(drop=True)
    labels, prep = exp.labels, exp.preprocessing
    names = list(labels.names)
    archs = list(archs or exp.backbones)
    rows = _split_rows(table, split, max_images, seed)
    films = read_films(table, rows, prep, what="lung analysis")
    fields = films.lungs or []
    use = [i for i, f in enumerate(fields) if f.ok]
    problems = [f.problem for f in fields]
    base = {"version": LUNGS_VERSION, "split": split, "n_candidates": int(len(rows)), "n_boot": int(n_boot),
            "seed": int(seed), "max_images": int(max_images), "quality_ok": float(QUALITY_OK),
            "n_unreadable": len(films.skipped), "n_low_quality": problems.count(LOW_QUALITY),
            "n_no_mask": problems.count(NO_MASK),
            "heatmap": {"method": DEFAULT_METHOD, "layer": DEFAULT_LAYER, "target": "each class"},
            "films": f"all {split} films", "names": names}
    if not use:
        log.warning("lung analysis: none of the %d %s films has usable lung fields", len(rows), split)
        return {}
    source, counts = lung_source([fields[i] for i in use])
    sub = table.loc[[films.rows[i] for i in use]]
    onehot = labels.onehot(sub["labels"].to_numpy())
    pids = sub["patient_id"].to_numpy() if "patient_id" in sub.columns else np.arange(len(sub))
    boot = PatientBootstrap(pids, n_boot, seed)
    pixels = films.pixels[use]
    masks = [fields[i].mask for i in use]
    area = np.array([m.mean() for m in masks], np.float64)
    ids = sub["image_id"] if "image_id" in sub.columns else sub["path"]
    out = {}
    for arch in archs:
        model = (models or {}).get(arch) or exp.load_model(arch)
        share, hit = class_scores(model, pixels, masks, len(names), prep, batch)
        out[arch] = to_json_ready({**base, "source": source, "sources": counts, "n_images": len(use),
                                   "n_patients": boot.n_patients,
                                   "per_class": summarise(share, hit, area, onehot, names, boot),
                                   "image_ids": [str(v) for v in ids],
                                   "seconds": round(time.time() - t0, 1)})
        log.info("lung analysis of %s on %d %s films (%s) done", arch, len(use), split, source)
    return out


def run_lungs(path_or_exp, *, save: bool = True, **kw) -> dict:
    """Analyse an experiment (folder or ``Experiment``) and store each backbone's ``runs.lungs.LUNGS``."""
    exp = runs.as_experiment(path_or_exp)
    result = lung_analysis(exp, **kw)
    if save:
        for arch, rec in result.items():
            exp.save_json(LUNGS, rec, arch)
    return result


# ---------------------------------------------------------------------- text

def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.0f} %"


def format_lungs(result: dict, names) -> str:
    """Plain text: per backbone, class x (share [CI], chance, pointing game) on all films."""
    names = list(names.names) if hasattr(names, "names") else list(names)
    if not result:
        return "Evidence on the lungs: no test film with usable lung fields."
    first = next(iter(result.values()))
    left_out = first.get("n_low_quality", 0) + first.get("n_no_mask", 0)
    lines = [f"Evidence on the lungs: share of each class's CAM weight inside the lungs on {first['n_images']} "
             f"{first['split']} films ({first['n_patients']} patients; lungs from the {first['source']}"
             + (f"; {left_out} films left out for low segmentation quality" if left_out else "") + ")"]
    w0 = max([len("class")] + [len(n) for n in names]) + 2
    for arch, rec in result.items():
        lines.append(f"[{arch}]")
        lines.append("class".ljust(w0) + "share [95% CI]".ljust(22) + "chance".ljust(9) + "peak in lungs")
        for cls in names:
            c = ((rec.get("per_class") or {}).get(cls) or {}).get("all") or {}
            ci = "" if c.get("ci_low") is None else f" [{100 * c['ci_low']:.0f}-{100 * c['ci_high']:.0f}]"
            lines.append(cls.ljust(w0) + (_pct(c.get("share")) + ci).ljust(22) + _pct(c.get("chance")).ljust(9)
                         + _pct(c.get("pointing")))
    return "\n".join(lines)
