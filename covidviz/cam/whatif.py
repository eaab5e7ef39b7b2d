"""Occlusion what-ifs: test a heat map instead of trusting it.

A heat map shows what correlates with the score, not what the score depends on. Here one image is
altered in a few controlled ways and every backbone scores the altered copies; the change of the
explained class's probability says what the score needs:

- ``hide_hot``: the hottest 5 / 10 / 20 % of the backbone's own heat map hidden;
- ``keep_hot``: only the hottest region kept, everything else hidden (does the region alone carry it?);
- ``hide_border`` / ``hide_centre``: the outer strip (text markers, rulers, collimation edges, lead
  letters) vs the centre of the film (the lung fields), of similar area;
- ``hide_box``: a box the user draws (fractions of the image); ``hide_mask``: any mask (tests, lesions).

Every condition carries its random reference: ``RANDOM_DRAWS`` regions of the same area hidden at random
places (for ``keep_hot``: a random region of the same area kept), which tells "it dropped because of
*that* region" from "it drops whenever that much is hidden" (``covidviz.cam.whatif_effects`` reads the
band). Besides the (calibrated) probability every image gets the class's exact log-odds (``log_odds``),
the scale a saturated probability is read on. (``hide_random``, a row of random regions alone, is still
a kind the readings know; the panel no longer makes such rows.)

The regions and how they are hidden (the blurred background of the rest, never black) are
``covidviz.cam.occlusion``'s; the rows' titles and plain readings are ``covidviz.views.whatif``'s. Here:
the inputs (``Scorer``: the models that score; ``WhatIfRequest``: the image and class; ``PanelDesign``:
which what-ifs), the records (``WhatIfRow``, ``WhatIfPanel``) and the scoring.

Cost: every altered image of the panel, the random regions and the original go through each backbone in
ONE batched forward pass (under the model's CAM lock, eval mode, no gradient); with the page's heat maps
given, nothing else runs. ``bench/whatif.py`` measures it. Streamlit-free.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from covidviz.anatomy.inputs import model_pixels
from covidviz.cam.methods import DEFAULT_METHOD, CamResult, compute_cams, evaluating
from covidviz.cam.occlusion import (
    BORDER,
    CENTRE,
    border_mask,
    box_mask,
    centre_mask,
    check_fraction,
    hide,
    keep_only,
    random_region_mask,
    top_fraction_mask,
)
from covidviz.cam.overlay import resize_map
from covidviz.data.labels import MULTICLASS
from covidviz.models import probabilities

log = logging.getLogger(__name__)

FRACTIONS = (0.05, 0.10, 0.20)   # shares of the image hidden under the hottest heat
KEEP_FRACTION = 0.20             # the region kept alone in the keep_hot row
RANDOM_DRAWS = 10                # random same-size regions behind each condition's band (>= 10: issue 24)
MAX_BATCH = 32                   # images per forward pass (bounds memory at large input sizes)

HIDE_HOT, HIDE_RANDOM, KEEP_HOT = "hide_hot", "hide_random", "keep_hot"
HIDE_BORDER, HIDE_CENTRE, HIDE_BOX, HIDE_MASK = "hide_border", "hide_centre", "hide_box", "hide_mask"
KINDS = (HIDE_HOT, HIDE_RANDOM, KEEP_HOT, HIDE_BORDER, HIDE_CENTRE, HIDE_BOX, HIDE_MASK)
BOX_REGION = "the box"           # what a hide_box row hides (named in its reading)


# ------------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------------

def _probs(logits: np.ndarray, class_idx: int, task: str, temperature) -> np.ndarray:
    p = probabilities(np.asarray(logits, np.float64), task)
    if temperature is not None:
        from covidviz.stats.calibration import apply_temperature

        p = apply_temperature(p, temperature, task)
    return np.asarray(p, np.float64)[:, int(class_idx)]


def log_odds(logits: np.ndarray, class_idx: int, task: str, temperature=None) -> np.ndarray:
    """log(p / (1 - p)) of ``class_idx`` per row of ``logits`` (N, C), p the (calibrated) probability,
    computed from the logits so it stays finite where p rounds to 0 or 1: multi-class (softmax of z / T)
    z_k / T - logsumexp of the other classes' z / T; multi-label (sigmoid per class) z_k / T_k."""
    from scipy.special import logsumexp

    z = np.atleast_2d(np.asarray(logits, np.float64))
    k = int(class_idx)
    if task == MULTICLASS:
        t = 1.0 if temperature is None else float(np.asarray(temperature, np.float64).reshape(-1)[0])
        z = z / t
        return z[:, k] - logsumexp(np.delete(z, k, axis=1), axis=1)
    t = 1.0 if temperature is None else float(np.broadcast_to(np.asarray(temperature, np.float64), (z.shape[1],))[k])
    return z[:, k] / t


@dataclass(frozen=True)
class Scorer:
    """What scores an image: every backbone (arch -> ``Classifier``, e.g. ``Predictor.models``), the
    experiment's ``Preprocessing``, its task and class names, and the calibration temperatures (arch ->
    ``Predictor.temperature(arch)``, so "before" matches the probability the page shows; None or a
    missing backbone: the model's own probabilities)."""

    models: Mapping[str, torch.nn.Module]
    prep: Any
    task: str = MULTICLASS
    names: Sequence[str] | None = None
    temperatures: Mapping[str, float | None] | None = None

    @property
    def archs(self) -> list[str]:
        return list(self.models)

    def temperature(self, arch: str):
        return (self.temperatures or {}).get(arch)

    def class_name(self, class_idx: int, given: str | None = None) -> str:
        """``given``, else the class's name, else "class N"; a ValueError when there is no model."""
        if not self.models:
            raise ValueError("no models given")
        if given is None:
            given = self.names[class_idx] if self.names is not None else f"class {class_idx}"
        return str(given)

    def model_pixels(self, image: np.ndarray) -> np.ndarray:
        """A uint8 (H, W) film as the uint8 (S, S) model input (unchanged when it already is one)."""
        image = np.asarray(image)
        if image.ndim != 2 or image.dtype != np.uint8:
            raise ValueError(f"expected a (H, W) uint8 grayscale image, got {image.dtype} {image.shape}")
        s = int(self.prep.image_size)
        return image if image.shape == (s, s) else model_pixels(self.prep, image)

    def probs(self, arch: str, logits: np.ndarray, class_idx: int) -> np.ndarray:
        """The (calibrated) probability of ``class_idx`` per row of ``logits``."""
        return _probs(logits, class_idx, self.task, self.temperature(arch))

    def log_odds(self, arch: str, logits: np.ndarray, class_idx: int) -> np.ndarray:
        """The (calibrated) log-odds of ``class_idx`` per row of ``logits`` (``log_odds``)."""
        return log_odds(logits, class_idx, self.task, self.temperature(arch))


@dataclass(frozen=True)
class WhatIfRequest:
    """One image and the class to explain, with what the page already has for it.

    ``image``: uint8 grayscale, the model input (S, S) (``Diagnosis.pixels``) or the decoded film
    (resized by the scorer's ``prep``). ``class_name``: default the scorer's name of ``class_idx``.
    ``heats``: arch -> the heat map of THIS class (a ``CamResult`` or a 2-D array of any size); a
    backbone without one gets a classic CAM (one forward). ``before``: arch -> the class's probability
    on the original as the page shows it (with the same temperature), which saves scoring the original
    again; by default it is scored in the same batch as the altered images."""

    image: np.ndarray = field(repr=False)
    class_idx: int
    class_name: str | None = None
    heats: Mapping[str, np.ndarray | CamResult] | None = None
    before: Mapping[str, float] | None = None


@dataclass(frozen=True)
class PanelDesign:
    """Which what-ifs a panel holds: ``hide_hot`` per fraction, ``keep_hot`` at ``keep_fraction`` (None:
    no such row), the border strip (``border`` of each side) and the central box (``centre`` of each
    side), and a ``hide_box`` row when ``box`` (``{"x", "y", "w", "h"}`` fractions of the image) is
    given; every row with ``draws`` random same-size regions (its band). ``seed`` places them."""

    fractions: Sequence[float] = FRACTIONS
    keep_fraction: float | None = KEEP_FRACTION
    draws: int = RANDOM_DRAWS
    border: float = BORDER
    centre: float = CENTRE
    box: Mapping[str, float] | None = None
    seed: int = 0


# ------------------------------------------------------------------------------------------------
# results
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WhatIfRow:
    """One what-if: what was altered, the altered image and every backbone's probability before -> after.

    ``images[arch]`` is what ``arch`` saw (the first draw for ``hide_random``); rows that do not depend
    on the heat map (random, border, centre, box) hold the same array for every backbone
    (``shared_image``). ``after`` is the mean over the draws, ``spread`` their standard deviation (0 for
    one image). ``random[arch]``: the probabilities with same-size regions hidden at random places (the
    row's band; empty without), ``reference`` their mean. ``z_before``/``z_draws``/``z_random``: the same
    as log-odds (``log_odds``). ``masks[arch]``: the region hidden for ``arch`` (bool, model input size;
    for ``keep_hot`` the rest of the image). ``region`` names what a ``hide_box``/``hide_mask`` row hid.
    Titles and readings: ``covidviz.views.whatif``; bands and contradictions: ``cam.whatif_effects``.
    """

    kind: str
    fraction: float                    # share of the image altered (hidden), measured on the mask
    images: dict[str, np.ndarray] = field(repr=False)   # arch -> uint8 (S, S)
    before: dict[str, float]
    after: dict[str, float]
    spread: dict[str, float]
    draws: dict[str, list[float]]
    class_name: str                    # the explained class
    region: str = BOX_REGION
    reference: dict[str, float] | None = None
    target: float | None = None        # the requested fraction (hide_hot / hide_random / keep_hot)
    random: dict[str, list[float]] = field(default_factory=dict)
    z_before: dict[str, float] = field(default_factory=dict)
    z_draws: dict[str, list[float]] = field(default_factory=dict)
    z_random: dict[str, list[float]] = field(default_factory=dict)
    masks: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def archs(self) -> list[str]:
        return list(self.before)

    @property
    def shared_image(self) -> bool:
        imgs = list(self.images.values())
        return all(i is imgs[0] for i in imgs)

    @property
    def image(self) -> np.ndarray:
        """The altered image of the first backbone (the only one when ``shared_image``)."""
        return next(iter(self.images.values()))

    @property
    def n_draws(self) -> int:
        """Images behind each backbone's ``after`` (the random placements of a ``hide_random`` row)."""
        return len(next(iter(self.draws.values())))

    @property
    def n_random(self) -> int:
        """Random same-size regions behind each backbone's band (0: none)."""
        return len(next(iter(self.random.values()), []))

    def change(self, arch: str) -> float:
        return self.after[arch] - self.before[arch]

    def to_dict(self) -> dict:
        """Plain JSON types (no images)."""
        return {"kind": self.kind, "fraction": self.fraction, "target": self.target, "class_name": self.class_name,
                "region": self.region, "before": dict(self.before), "after": dict(self.after),
                "spread": dict(self.spread), "draws": {a: list(v) for a, v in self.draws.items()},
                "reference": None if self.reference is None else dict(self.reference),
                "random": {a: list(v) for a, v in self.random.items()}, "z_before": dict(self.z_before),
                "z_draws": {a: list(v) for a, v in self.z_draws.items()},
                "z_random": {a: list(v) for a, v in self.z_random.items()}}


@dataclass(frozen=True)
class WhatIfPanel:
    """All what-ifs of one image for one explained class."""

    class_idx: int
    class_name: str
    pixels: np.ndarray = field(repr=False)   # uint8 (S, S): the unaltered model input
    before: dict[str, float]                 # arch -> probability of the class on the original
    rows: list[WhatIfRow]
    z_before: dict[str, float] = field(default_factory=dict)   # arch -> its log-odds

    @property
    def archs(self) -> list[str]:
        return list(self.before)

    def row(self, kind: str, fraction: float | None = None) -> WhatIfRow | None:
        """The row of ``kind`` (at the requested ``fraction`` for the heat-map rows), or None."""
        for r in self.rows:
            if r.kind == kind and (fraction is None or (r.target is not None and abs(r.target - fraction) < 1e-9)):
                return r
        return None


# ------------------------------------------------------------------------------------------------
# running what-ifs: every altered image of a backbone in one batched forward
# ------------------------------------------------------------------------------------------------

def _device(model: torch.nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def batch_logits(model: torch.nn.Module, pixels: np.ndarray, prep, batch_size: int = MAX_BATCH) -> np.ndarray:
    """Logits (N, C) of uint8 model pixels (N, S, S): one forward per ``batch_size`` images, in eval
    mode under the model's CAM lock (``cam.evaluating``), without gradients."""
    pixels = np.asarray(pixels, np.uint8)
    out = []
    with torch.inference_mode(False), evaluating(model), torch.no_grad():
        dev = _device(model)
        for s in range(0, len(pixels), batch_size):
            out.append(model(prep.to_tensor(pixels[s:s + batch_size]).to(dev)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


@dataclass
class _Job:
    arch: str | None      # None: the same image for every backbone
    image: np.ndarray


@dataclass
class _Spec:
    kind: str
    target: float | None  # the requested fraction
    jobs: list[int]       # indices of the row's images in the job list
    fraction: float       # share of the image altered, measured on the mask
    masks: dict           # arch (None: every backbone) -> the hidden region
    region: str = BOX_REGION
    random: list[int] = field(default_factory=list)   # indices of its random same-size regions


def _heat_of(h) -> np.ndarray:
    """A 2-D map from what the caller has: a ``CamResult`` (its signed low-res map of image 0: no flat
    rectified plateau to break ties in) or an array."""
    if isinstance(h, CamResult):
        return np.asarray(h.low_res[0], np.float32)
    a = np.asarray(h, np.float32)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"a heat map must be 2-D, got shape {a.shape}")
    return a


def _originals(scorer: Scorer, pixels: np.ndarray, request: WhatIfRequest, need_heat: bool):
    """Probability of the class on the original and the heat map per backbone: one CAM forward for each
    backbone whose map is not given (a ``CamResult`` of another class counts as not given); otherwise
    the known probability, or None (scored with the altered images, as the log-odds always are)."""
    class_idx = int(request.class_idx)
    before, maps = {}, {}
    for arch, model in scorer.models.items():
        given = (request.heats or {}).get(arch)
        if isinstance(given, CamResult) and int(given.class_idx[0]) != class_idx:
            log.info("what-if: the %s heat map explains class %d, not %d; computing the right one",
                     arch, int(given.class_idx[0]), class_idx)
            given = None
        if given is None and need_heat:
            cam = compute_cams(model, scorer.prep.to_tensor(pixels), class_idx, (DEFAULT_METHOD,))[DEFAULT_METHOD]
            maps[arch] = np.asarray(cam.low_res[0], np.float32)
            before[arch] = float(scorer.probs(arch, cam.logits, class_idx)[0])
        else:
            if given is not None:
                maps[arch] = _heat_of(given)
            known_p = (request.before or {}).get(arch)
            before[arch] = None if known_p is None else float(known_p)  # None: scored with the altered images
    return before, maps


def _score_jobs(scorer: Scorer, pixels: np.ndarray, class_idx: int, jobs: list[_Job], before: dict):
    """({arch: {job index: (probability, log-odds)}}, {arch: log-odds of the original}); the original is
    scored in the same batch (its log-odds; its probability too where ``before`` has none)."""
    scores, z_before = {}, {}
    for arch, model in scorer.models.items():
        idx = [i for i, j in enumerate(jobs) if j.arch in (None, arch)]
        logits = batch_logits(model, np.stack([jobs[i].image for i in idx] + [pixels]), scorer.prep)
        p, z = scorer.probs(arch, logits, class_idx), scorer.log_odds(arch, logits, class_idx)
        if before[arch] is None:
            before[arch] = float(p[-1])
        z_before[arch] = float(z[-1])
        scores[arch] = {i: (float(pi), float(zi)) for i, pi, zi in zip(idx, p, z)}
    return scores, z_before


def _row(spec: _Spec, jobs: list[_Job], scores: dict, before: dict, z_before: dict, cls: str) -> WhatIfRow:
    images, after, spread, draws, z_draws, rand, z_rand, masks = {}, {}, {}, {}, {}, {}, {}, {}
    for arch in before:
        mine = [i for i in spec.jobs if jobs[i].arch in (None, arch)]
        vals = [scores[arch][i][0] for i in mine]
        images[arch] = jobs[mine[0]].image
        draws[arch] = vals
        z_draws[arch] = [scores[arch][i][1] for i in mine]
        after[arch] = float(np.mean(vals))
        spread[arch] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
        rand[arch] = [scores[arch][i][0] for i in spec.random]
        z_rand[arch] = [scores[arch][i][1] for i in spec.random]
        masks[arch] = spec.masks[arch] if arch in spec.masks else spec.masks[None]
    reference = {a: float(np.mean(v)) for a, v in rand.items()} if spec.random else None
    return WhatIfRow(kind=spec.kind, fraction=float(spec.fraction), images=images, before=dict(before), after=after,
                     spread=spread, draws=draws, class_name=cls, region=spec.region, reference=reference,
                     target=spec.target, random=rand, z_before=dict(z_before), z_draws=z_draws, z_random=z_rand,
                     masks=masks)


@lru_cache(maxsize=256)
def _random_mask(shape: tuple[int, int], target: float, seed: int) -> np.ndarray:
    """``random_region_mask``, kept: the panel's random regions are the same for every image of a size
    (seeded), and making 60 of them costs about a second of CPU (read-only: shared between calls)."""
    m = random_region_mask(shape, target, seed=seed)
    m.flags.writeable = False
    return m


class _Plan:
    """The images of a panel, in one list (``jobs``) with each row's share of it (``specs``)."""

    def __init__(self, pixels: np.ndarray, draws: int, seed: int):
        self.pixels, self.draws, self.seed = pixels, int(draws), int(seed)
        self.jobs: list[_Job] = []
        self.specs: list[_Spec] = []

    def _add_jobs(self, images) -> list[int]:
        first = len(self.jobs)
        self.jobs.extend(_Job(a, img) for a, img in images)
        return list(range(first, len(self.jobs)))

    def _random(self, target: float, keep: bool) -> list[int]:
        """``draws`` regions of ``target`` of the image at random places, hidden (or kept alone)."""
        shape, alter = self.pixels.shape, keep_only if keep else hide
        masks = [_random_mask(shape, target, self.seed + 1000 * (d + 1) + int(round(1000 * target)))
                 for d in range(self.draws)]
        return self._add_jobs((None, alter(self.pixels, m)) for m in masks)

    def add(self, kind: str, target: float | None, masks: dict, *, keep: bool = False, region: str = BOX_REGION):
        """One condition: ``masks`` (arch, or None for every backbone -> the region under test) hidden (or,
        ``keep``, kept alone), and its random band: the same area at random places, altered the same way."""
        alter = keep_only if keep else hide
        jobs = self._add_jobs((a, alter(self.pixels, m)) for a, m in masks.items())
        hidden = {a: ~m if keep else m for a, m in masks.items()}
        first = next(iter(hidden.values()))
        area = float(np.mean(next(iter(masks.values()))))  # the region under test (kept or hidden)
        n = self.pixels.size  # at least one pixel hidden, at least one left to fill it from
        rand = self._random(min(max(area, 1 / n), (n - 1) / n), keep) if self.draws else []
        self.specs.append(_Spec(kind, target, jobs, float(np.mean(first)), hidden, region, rand))


def what_if_panel(scorer: Scorer, request: WhatIfRequest, design: PanelDesign | None = None) -> WhatIfPanel:
    """Every what-if of ``request``'s image for its class, all of ``scorer``'s backbones.

    Rows, in order (``design``, default ``PanelDesign()``): ``hide_hot`` per fraction, ``keep_hot``
    (unless ``keep_fraction`` is None), ``hide_border``, ``hide_centre``, then ``hide_box`` (with a
    ``box``; see also ``box_what_if``); each with ``draws`` random same-size regions. Each backbone scores
    all its images (and the original) in one batched forward pass.
    """
    design = design or PanelDesign()
    cls = scorer.class_name(request.class_idx, request.class_name)
    archs = scorer.archs
    pixels = scorer.model_pixels(request.image)
    shape = pixels.shape
    fractions = [check_fraction(f) for f in design.fractions]
    if design.draws < 1:
        raise ValueError("draws must be at least 1")
    need_heat = bool(fractions) or design.keep_fraction is not None
    before, maps = _originals(scorer, pixels, request, need_heat)
    plan = _Plan(pixels, design.draws, design.seed)
    for f in fractions:
        plan.add(HIDE_HOT, f, {a: top_fraction_mask(maps[a], f, shape, seed=design.seed) for a in archs})
    if design.keep_fraction is not None:
        kf = check_fraction(design.keep_fraction)
        plan.add(KEEP_HOT, kf, {a: top_fraction_mask(maps[a], kf, shape, seed=design.seed) for a in archs}, keep=True)
    plan.add(HIDE_BORDER, None, {None: border_mask(shape, design.border)})
    plan.add(HIDE_CENTRE, None, {None: centre_mask(shape, design.centre)})
    if design.box is not None:
        plan.add(HIDE_BOX, None, {None: box_mask(shape, design.box)})
    scores, z_before = _score_jobs(scorer, pixels, request.class_idx, plan.jobs, before)
    rows = [_row(s, plan.jobs, scores, before, z_before, cls) for s in plan.specs]
    return WhatIfPanel(class_idx=int(request.class_idx), class_name=cls, pixels=pixels, before=dict(before), rows=rows,
                       z_before=z_before)


def mask_what_if(scorer: Scorer, request: WhatIfRequest, mask: np.ndarray, *, region: str = "the region",
                 kind: str = HIDE_MASK, draws: int = 0, seed: int = 0) -> WhatIfRow:
    """Hide one region (bool mask at any size, resized to the model input) and score every backbone on the
    altered image, the original (its log-odds; its probability too unless ``request.before`` gives it) and
    ``draws`` same-size random regions (the row's band), in one batch. ``region`` names it in the row's
    reading ("with the marker hidden")."""
    cls = scorer.class_name(request.class_idx, request.class_name)
    pixels = scorer.model_pixels(request.image)
    m = np.asarray(mask)
    if m.shape != pixels.shape:
        m = resize_map(m.astype(np.float32), pixels.shape) >= 0.5
    m = m.astype(bool)
    if not m.any():
        raise ValueError("the mask is empty: nothing to hide")
    if m.all():
        raise ValueError("the mask covers the whole image: nothing left to fill it from")
    known = request.before or {}
    b = {a: (None if known.get(a) is None else float(known[a])) for a in scorer.models}
    plan = _Plan(pixels, max(0, int(draws)), seed)
    plan.add(kind, None, {None: m}, region=region)
    scores, z_before = _score_jobs(scorer, pixels, request.class_idx, plan.jobs, b)
    return _row(plan.specs[0], plan.jobs, scores, b, z_before, cls)


def box_what_if(scorer: Scorer, request: WhatIfRequest, box: Mapping[str, float], draws: int = RANDOM_DRAWS,
                seed: int = 0) -> WhatIfRow:
    """The ``hide_box`` row alone, with its random band (for a page redrawing it as the user moves the
    box): per backbone one batch of the box hidden, ``draws`` random regions of its area and the original.
    ``box``: ``{"x", "y", "w", "h"}`` fractions of the image (top-left corner and size)."""
    pixels = scorer.model_pixels(request.image)
    return mask_what_if(scorer, request, box_mask(pixels.shape, box), region=BOX_REGION, kind=HIDE_BOX, draws=draws,
                        seed=seed)
