"""Occlusion what-ifs: test a heat map instead of trusting it.

A heat map shows what correlates with the score, not what the score depends on. Here one image is
altered in a few controlled ways and every backbone scores the altered copies; the change of the
explained class's probability says what the score needs:

- ``hide_hot``: the hottest 5 / 10 / 20 % of the backbone's own heat map hidden;
- ``hide_random``: the same area hidden at random places (a few draws: mean and spread), the
  reference that tells "it dropped because of *that* region" from "it drops whenever anything is hidden";
- ``keep_hot``: only the hottest region kept, everything else hidden (does the region alone carry it?);
- ``hide_border`` / ``hide_centre``: the outer strip (text markers, rulers, collimation edges, lead
  letters) vs the centre of the film (the lung fields), of similar area;
- ``hide_box``: a box the user draws (fractions of the image); ``hide_mask``: any mask (tests, lesions).

Hidden pixels are filled with the image's own heavily blurred background (a Gaussian of 1/8 of the
image side, computed from the pixels that stay *outside* the region under test), never black: a black
patch is itself a strong new feature, and a blur of the region itself would keep its opacity.

Cost: every altered image of the panel goes through each backbone in ONE batched forward pass (under
the model's CAM lock, eval mode, no gradient); with the page's heat maps given, nothing else runs.
``bench/whatif.py`` measures it against one bare forward pass.

Streamlit-free; the masks and the fill are small functions tested on their own.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from covidviz.cam.localisation import box_fractions, random_heat
from covidviz.cam.methods import DEFAULT_METHOD, CamResult, compute_cams, evaluating
from covidviz.cam.overlay import resize_map
from covidviz.data.labels import MULTICLASS
from covidviz.models import probabilities

log = logging.getLogger(__name__)

FRACTIONS = (0.05, 0.10, 0.20)   # shares of the image hidden under the hottest heat
KEEP_FRACTION = 0.20             # the region kept alone in the keep_hot row
RANDOM_DRAWS = 3                 # random placements behind each hide_random row
BORDER = 0.15                    # width of the outer strip, as a fraction of each side (~51 % of the film)
CENTRE = 0.65                    # side of the central box, as a fraction of each side (~42 %: the lung fields)
BLUR = 1 / 8                     # Gaussian sigma of the fill, as a fraction of the image side
RANDOM_GRID = 4                  # random regions: top of a 4x4 noise grid, upsampled (1-4 blobs, like a CAM's)
SMALL, LARGE = 0.05, 0.15        # probability changes read as "stays" (< SMALL) and "drops/rises" (>= LARGE)
MAX_BATCH = 32                   # images per forward pass (bounds memory at large input sizes)

HIDE_HOT, HIDE_RANDOM, KEEP_HOT = "hide_hot", "hide_random", "keep_hot"
HIDE_BORDER, HIDE_CENTRE, HIDE_BOX, HIDE_MASK = "hide_border", "hide_centre", "hide_box", "hide_mask"
KINDS = (HIDE_HOT, HIDE_RANDOM, KEEP_HOT, HIDE_BORDER, HIDE_CENTRE, HIDE_BOX, HIDE_MASK)


# ------------------------------------------------------------------------------------------------
# masks: bool (H, W), True = the region under test
# ------------------------------------------------------------------------------------------------

def _shape(shape) -> tuple[int, int]:
    h, w = (int(shape), int(shape)) if np.ndim(shape) == 0 else (int(shape[0]), int(shape[1]))
    if h < 1 or w < 1:
        raise ValueError(f"invalid image shape {shape}")
    return h, w


def _check_fraction(fraction: float) -> float:
    f = float(fraction)
    if not 0.0 < f < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    return f


def top_fraction_mask(heat: np.ndarray, fraction: float, shape=None, seed: int = 0) -> np.ndarray:
    """The ``fraction`` of pixels where ``heat`` is highest: exactly ``round(fraction * H * W)`` of them.

    ``heat`` (any size) is resized bilinearly to ``shape`` (default: its own). Ties (flat parts of a
    rectified map) go first to pixels near hot areas (a blurred copy of the map), then at random from
    ``seed``, so the region stays compact and the count exact.
    """
    f = _check_fraction(fraction)
    heat = np.nan_to_num(np.asarray(heat, np.float32))
    h, w = _shape(heat.shape if shape is None else shape)
    heat = resize_map(heat, (h, w))
    k = int(round(f * h * w))
    near = ndimage.gaussian_filter(heat, sigma=max(h, w) / 16.0, mode="nearest")
    rand = np.random.default_rng(seed).random(h * w)
    order = np.lexsort((rand, -near.ravel(), -heat.ravel()))  # last key first: heat, then near, then random
    mask = np.zeros(h * w, dtype=bool)
    mask[order[:k]] = True
    return mask.reshape(h, w)


def random_region_mask(shape, fraction: float, grid: int | tuple[int, int] = RANDOM_GRID, seed: int = 0) -> np.ndarray:
    """A region of exactly the same area as ``top_fraction_mask(.., fraction)`` at a random place: the
    top ``fraction`` of a random map with a CAM's texture (``random_heat`` on ``grid`` cells), so it
    looks like a heat map's blobs, not like salt and pepper."""
    h, w = _shape(shape)
    return top_fraction_mask(random_heat(h, w, grid=grid, seed=seed), fraction, (h, w), seed=seed)


def border_mask(shape, width: float = BORDER) -> np.ndarray:
    """The outer strip, ``width`` of each side deep (where markers, text and collimation edges sit)."""
    h, w = _shape(shape)
    if not 0.0 < width < 0.5:
        raise ValueError(f"border width must be in (0, 0.5), got {width}")
    dh, dw = max(1, int(round(width * h))), max(1, int(round(width * w)))
    mask = np.ones((h, w), dtype=bool)
    mask[dh:h - dh, dw:w - dw] = False
    return mask


def centre_mask(shape, side: float = CENTRE) -> np.ndarray:
    """The central box, ``side`` of each dimension wide (the lung fields on a frontal film)."""
    h, w = _shape(shape)
    if not 0.0 < side < 1.0:
        raise ValueError(f"centre side must be in (0, 1), got {side}")
    sh, sw = max(1, int(round(side * h))), max(1, int(round(side * w)))
    r0, c0 = (h - sh) // 2, (w - sw) // 2
    mask = np.zeros((h, w), dtype=bool)
    mask[r0:r0 + sh, c0:c0 + sw] = True
    return mask


def box_mask(shape, box: Mapping[str, float]) -> np.ndarray:
    """A user box ``{"x", "y", "w", "h"}`` (top-left corner and size, fractions of the image) -> mask,
    clipped to the image and at least one pixel (``cam.localisation.box_to_mask``'s convention)."""
    h, w = _shape(shape)
    x, y, bw, bh = box_fractions(box)
    # Edges snapped to whole pixels with a tolerance: 0.1 + 0.2 of 100 px is row 30, not 31.
    tol = 1e-6
    c0 = int(np.clip(np.floor(x * w + tol), 0, w - 1))
    r0 = int(np.clip(np.floor(y * h + tol), 0, h - 1))
    c1 = int(np.clip(np.ceil((x + bw) * w - tol), c0 + 1, w))
    r1 = int(np.clip(np.ceil((y + bh) * h - tol), r0 + 1, h))
    mask = np.zeros((h, w), dtype=bool)
    mask[r0:r1, c0:c1] = True
    return mask


# ------------------------------------------------------------------------------------------------
# the fill
# ------------------------------------------------------------------------------------------------

def _area_down(a: np.ndarray, f: int) -> np.ndarray:
    if f <= 1:
        return a
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]
    size = (max(1, -(-a.shape[0] // f)), max(1, -(-a.shape[1] // f)))
    return F.adaptive_avg_pool2d(t, size)[0, 0].numpy()


def blurred_background(gray: np.ndarray, exclude: np.ndarray | None = None, sigma: float | None = None) -> np.ndarray:
    """The image's heavily blurred background, float32 (H, W) in gray levels.

    A Gaussian blur of ``sigma`` pixels (default ``BLUR`` of the longer side) in which the pixels of
    ``exclude`` take no part (normalised convolution): where the region under test is hidden, the fill
    is made from what surrounds it, so none of its own content (a marker, an opacity) leaks back. Far
    inside a large excluded region it falls back to the mean of the rest. Computed at a reduced
    resolution (a blur this heavy has no finer detail), so it costs a few milliseconds.
    """
    img = np.asarray(gray, np.float32)
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {img.shape}")
    h, w = img.shape
    sigma = float(sigma) if sigma is not None else BLUR * max(h, w)
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    weight = np.ones((h, w), np.float32)
    if exclude is not None:
        exclude = np.asarray(exclude, bool)
        if exclude.shape != (h, w):
            raise ValueError(f"mask shape {exclude.shape} differs from the image's {(h, w)}")
        weight[exclude] = 0.0
    if not weight.any():
        raise ValueError("nothing is left outside the region to make a background from")
    fallback = float(img[weight > 0].mean())
    f = max(1, int(sigma // 4))
    s = sigma / f
    num = ndimage.gaussian_filter(_area_down(img * weight, f), s, mode="reflect")
    den = ndimage.gaussian_filter(_area_down(weight, f), s, mode="reflect")
    eps = 1e-3
    small = (num + eps * fallback) / (den + eps)
    return resize_map(small.astype(np.float32), (h, w))


def fill(gray: np.ndarray, hidden: np.ndarray, background: np.ndarray) -> np.ndarray:
    """``gray`` with the ``hidden`` pixels replaced by ``background``: uint8 (H, W)."""
    gray = np.asarray(gray)
    hidden = np.asarray(hidden, bool)
    if hidden.shape != gray.shape or np.shape(background) != gray.shape:
        raise ValueError(f"image {gray.shape}, mask {hidden.shape} and background {np.shape(background)} differ")
    bg = np.clip(np.rint(background), 0, 255).astype(np.uint8)
    return np.where(hidden, bg, gray.astype(np.uint8))


def hide(gray: np.ndarray, region: np.ndarray, sigma: float | None = None) -> np.ndarray:
    """Hide ``region``: fill it with the blurred background of everything else."""
    return fill(gray, region, blurred_background(gray, exclude=region, sigma=sigma))


def keep_only(gray: np.ndarray, region: np.ndarray, sigma: float | None = None) -> np.ndarray:
    """Keep only ``region``: fill everything else with its own blurred background, made without the
    region (so the kept content is not smeared around it)."""
    region = np.asarray(region, bool)
    return fill(gray, ~region, blurred_background(gray, exclude=region, sigma=sigma))


# ------------------------------------------------------------------------------------------------
# results
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WhatIfRow:
    """One what-if: what was altered, the altered image and every backbone's probability before -> after.

    ``images[arch]`` is what ``arch`` saw (the first draw for ``hide_random``); rows that do not depend
    on the heat map (random, border, centre, box) hold the same array for every backbone
    (``shared_image``). ``after`` is the mean over the draws, ``spread`` their standard deviation (0 for
    one image). ``reference`` (``hide_hot`` rows): the ``hide_random`` mean at the same fraction.
    """

    kind: str
    label: str                         # "Hottest 10 % of the heat map hidden"
    fraction: float                    # share of the image altered (hidden), measured on the mask
    images: dict[str, np.ndarray] = field(repr=False)   # arch -> uint8 (S, S)
    before: dict[str, float]
    after: dict[str, float]
    spread: dict[str, float]
    draws: dict[str, list[float]]
    readings: dict[str, str]           # arch -> one plain sentence
    reference: dict[str, float] | None = None
    target: float | None = None        # the requested fraction (hide_hot / hide_random / keep_hot)

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

    def change(self, arch: str) -> float:
        return self.after[arch] - self.before[arch]

    def to_dict(self) -> dict:
        """Plain JSON types (no images)."""
        return {"kind": self.kind, "label": self.label, "fraction": self.fraction, "target": self.target,
                "before": dict(self.before), "after": dict(self.after), "spread": dict(self.spread),
                "draws": {a: list(v) for a, v in self.draws.items()}, "readings": dict(self.readings),
                "reference": None if self.reference is None else dict(self.reference)}


@dataclass(frozen=True)
class WhatIfPanel:
    """All what-ifs of one image for one explained class."""

    class_idx: int
    class_name: str
    pixels: np.ndarray = field(repr=False)   # uint8 (S, S): the unaltered model input
    before: dict[str, float]                 # arch -> probability of the class on the original
    rows: list[WhatIfRow]

    @property
    def archs(self) -> list[str]:
        return list(self.before)

    def row(self, kind: str, fraction: float | None = None) -> WhatIfRow | None:
        """The row of ``kind`` (at the requested ``fraction`` for the heat-map rows), or None."""
        for r in self.rows:
            if r.kind == kind and (fraction is None or (r.target is not None and abs(r.target - fraction) < 1e-9)):
                return r
        return None

    def table(self) -> list[dict]:
        """One dict per (row, backbone): ``kind, label, arch, fraction, before, after, change, spread,
        reading`` (for a dataframe)."""
        return [{"kind": r.kind, "label": r.label, "arch": a, "fraction": r.fraction, "before": r.before[a],
                 "after": r.after[a], "change": r.change(a), "spread": r.spread[a], "reading": r.readings[a]}
                for r in self.rows for a in r.archs]


# ------------------------------------------------------------------------------------------------
# plain readings
# ------------------------------------------------------------------------------------------------

def _pct(f: float) -> str:
    return f"{100 * f:.0f} %"


def _move(cls: str, before: float, after: float, spread: float = 0.0) -> str:
    d = after - before
    sd = f" ± {spread:.2f}" if spread > 0.005 else ""
    if abs(d) < SMALL:
        return f"The {cls} score stays {before:.2f}" if f"{before:.2f}" == f"{after:.2f}" and not sd else \
            f"The {cls} score stays about the same ({before:.2f} -> {after:.2f}{sd})"
    verb = "drops" if d < 0 else "rises"
    little = " a little" if abs(d) < LARGE else ""
    return f"The {cls} score {verb}{little} from {before:.2f} to {after:.2f}{sd}"


def _where(kind: str, fraction: float | None, region: str) -> str:
    if kind == HIDE_HOT:
        return f"with the hottest {_pct(fraction)} of its heat map hidden"
    if kind == HIDE_RANDOM:
        return f"with a random {_pct(fraction)} of the image hidden (mean of the draws)"
    if kind == KEEP_HOT:
        return f"with only the hottest {_pct(fraction)} of its heat map kept"
    if kind == HIDE_BORDER:
        return "with the borders of the film hidden"
    if kind == HIDE_CENTRE:
        return "with the lungs hidden"
    if kind in (HIDE_BOX, HIDE_MASK):
        return f"with {region} hidden"
    raise ValueError(f"unknown what-if kind {kind!r}; choose from {', '.join(KINDS)}")


def reading(kind: str, cls: str, before: float, after: float, *, fraction: float | None = None,
            spread: float = 0.0, reference: float | None = None, region: str = "the box") -> str:
    """One plain sentence for one backbone's what-if (``region`` names a ``hide_mask``/``hide_box`` area).

    Changes below ``SMALL`` read as "stays", from ``LARGE`` as a clear drop or rise. A clear *rise* is
    never read as "not needed": the filled-in patch itself moved the score (a smooth patch in a lung can
    look like a hazy opacity), so that row does not show what the score depends on.
    """
    where = _where(kind, fraction, region)
    d = after - before
    low = before < 0.5 and after < 0.5 and abs(d) < LARGE   # nothing much to explain either way
    move = f"{_move(cls, before, after, spread)} {where}"
    if kind == HIDE_RANDOM:
        return f"{move}: the reference for hiding the heat map's own region."
    if d >= LARGE and kind != KEEP_HOT:
        return (f"{move}: the filled-in area itself pushes the score up (a smooth patch can look like a hazy "
                "opacity), so this what-if does not show what the score needs.")
    if kind == HIDE_HOT:
        if reference is not None and d <= -SMALL and (reference - before) <= d + SMALL:
            return (f"{move}, but hiding the same area at random places does about as much ({reference:.2f}): "
                    "the drop is not specific to the highlighted region.")
        if d <= -LARGE:
            return f"{move}: the score depends on the region the heat map highlights."
        if d <= -SMALL:
            return f"{move}: the highlighted region carries part of the score."
        if d >= SMALL:
            return f"{move}: the highlighted region was holding the score down, not up."
        return f"{move}: " + ("hiding it changes little." if low else
                             "the score does not depend on the region the heat map highlights.")
    if kind == KEEP_HOT:
        if low:
            return f"{move}: the region alone does not make a {cls} call either."
        if d >= LARGE:
            return (f"{move}: that region alone carries the score, and the filled-in rest pushes it further up "
                    "(read with care).")
        if d > -SMALL:
            return f"{move}: that region alone carries the score."
        if d > -LARGE:
            return f"{move}: that region carries most of the score, the rest of the image adds some."
        return f"{move}: the region alone does not carry the score; the model also needs the rest of the image."
    if kind == HIDE_BORDER:
        if d <= -LARGE:
            return (f"{move}: the model uses the borders (where markers, text and collimation edges sit) for this "
                    "image, a possible shortcut.")
        if d <= -SMALL:
            return f"{move}: part of the score comes from the borders (markers, text, collimation edges)."
        return f"{move}: " + ("hiding them changes little." if low else "the score does not depend on the borders of the film.")
    if kind == HIDE_CENTRE:
        if low:
            return f"{move}: hiding them changes little."
        if d > -SMALL:
            return f"{move}: the model is not using the lungs for this image."
        if d > -LARGE:
            return f"{move}: the lungs carry only part of the score."
        return f"{move}: the score depends on the lung fields."
    # HIDE_BOX / HIDE_MASK
    if d <= -LARGE:
        return f"{move}: the model uses what is in {region}."
    if d <= -SMALL:
        return f"{move}: part of the score comes from {region}."
    if d >= SMALL:
        return f"{move}: what is in {region} was holding the score down."
    return f"{move}: " + ("hiding it changes little." if low else f"the model does not need {region}.")


# ------------------------------------------------------------------------------------------------
# running what-ifs: every altered image of a backbone in one batched forward
# ------------------------------------------------------------------------------------------------

def _device(model: torch.nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _probs(logits: np.ndarray, class_idx: int, task: str, temperature) -> np.ndarray:
    p = probabilities(np.asarray(logits, np.float64), task)
    if temperature is not None:
        from covidviz.stats.calibration import apply_temperature

        p = apply_temperature(p, temperature, task)
    return np.asarray(p, np.float64)[:, int(class_idx)]


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
    key: int              # row index
    arch: str | None      # None: the same image for every backbone
    image: np.ndarray


def _model_pixels(image: np.ndarray, prep) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"expected a (H, W) uint8 grayscale image, got {image.dtype} {image.shape}")
    s = int(prep.image_size)
    return image if image.shape == (s, s) else prep.to_model_pixels(image)


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


def _originals(models, pixels, prep, class_idx, task, temperatures, heats, need_heat: bool, known=None):
    """Probability of the class on the original and the heat map per backbone: one CAM forward for each
    backbone whose map is not given (a ``CamResult`` of another class counts as not given); otherwise
    the known probability, or None (scored later in the batch of altered images)."""
    before, maps = {}, {}
    for arch, model in models.items():
        temp = (temperatures or {}).get(arch)
        given = (heats or {}).get(arch)
        if isinstance(given, CamResult) and int(given.class_idx[0]) != int(class_idx):
            log.info("what-if: the %s heat map explains class %d, not %d; computing the right one",
                     arch, int(given.class_idx[0]), int(class_idx))
            given = None
        if given is None and need_heat:
            cam = compute_cams(model, prep.to_tensor(pixels), int(class_idx), (DEFAULT_METHOD,))[DEFAULT_METHOD]
            maps[arch] = np.asarray(cam.low_res[0], np.float32)
            before[arch] = float(_probs(cam.logits, class_idx, task, temp)[0])
        else:
            if given is not None:
                maps[arch] = _heat_of(given)
            known_p = (known or {}).get(arch)
            before[arch] = None if known_p is None else float(known_p)  # None: scored with the altered images
    return before, maps


def _score_jobs(models, pixels, prep, class_idx, task, temperatures, jobs: list[_Job], before: dict) -> dict:
    """{arch: {job index: probability}}; the original is added to the batch where its score is missing."""
    scores = {}
    for arch, model in models.items():
        idx = [i for i, j in enumerate(jobs) if j.arch in (None, arch)]
        stack = [jobs[i].image for i in idx]
        if before[arch] is None:
            stack.append(pixels)
        p = _probs(batch_logits(model, np.stack(stack), prep), class_idx, task, (temperatures or {}).get(arch))
        if before[arch] is None:
            before[arch] = float(p[-1])
        scores[arch] = dict(zip(idx, p.tolist()))
    return scores


def _row(kind, label, fraction, target, jobs_of_row, scores, before, cls, archs, region="the box", reference=None):
    images, after, spread, draws, readings = {}, {}, {}, {}, {}
    for arch in archs:
        mine = [(i, j) for i, j in jobs_of_row if j.arch in (None, arch)]
        vals = [scores[arch][i] for i, _ in mine]
        images[arch] = mine[0][1].image
        draws[arch] = [float(v) for v in vals]
        after[arch] = float(np.mean(vals))
        spread[arch] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
        ref = None if reference is None else reference.get(arch)
        readings[arch] = reading(kind, cls, before[arch], after[arch], fraction=target if target else fraction,
                                 spread=spread[arch], reference=ref, region=region)
    return WhatIfRow(kind=kind, label=label, fraction=float(fraction), images=images, before=dict(before),
                     after=after, spread=spread, draws=draws, readings=readings, reference=reference, target=target)


def _check(models, class_idx, class_name, names):
    if not models:
        raise ValueError("no models given")
    if class_name is None:
        class_name = names[class_idx] if names is not None else f"class {class_idx}"
    return str(class_name)


def what_if_panel(models: Mapping[str, torch.nn.Module], image: np.ndarray, prep, class_idx: int, *,
                  task: str = MULTICLASS, names: Sequence[str] | None = None, class_name: str | None = None,
                  heats: Mapping[str, np.ndarray | CamResult] | None = None, temperatures: Mapping | None = None,
                  box: Mapping[str, float] | None = None, fractions: Sequence[float] = FRACTIONS,
                  keep_fraction: float | None = KEEP_FRACTION, draws: int = RANDOM_DRAWS, border: float = BORDER,
                  centre: float = CENTRE, seed: int = 0, before: Mapping[str, float] | None = None) -> WhatIfPanel:
    """Every what-if of one image for the class ``class_idx``, all backbones.

    ``models``: arch -> ``Classifier`` (e.g. ``Predictor.models``). ``image``: uint8 grayscale, either the
    model input (S, S) (``Diagnosis.pixels``) or the decoded film (resized by ``prep``, the experiment's
    ``Preprocessing``). ``heats``: arch -> the heat map of THIS class the page already has (a
    ``CamResult`` or a 2-D array of any size); a backbone without one gets a classic CAM (one forward).
    ``temperatures``: arch -> the calibration temperature (``Predictor.temperature(arch)``) so "before"
    matches the probability the page shows; None: the model's own probabilities. ``box``: the user's box
    ``{"x", "y", "w", "h"}`` in fractions (adds a ``hide_box`` row; see also ``box_what_if``).
    ``before``: arch -> the class's probability on the original as the page shows it (with the same
    temperature), which saves scoring the original again; by default it is scored in the same batch.

    Rows, in order: ``hide_hot`` per fraction, ``hide_random`` per fraction (``draws`` placements),
    ``keep_hot`` (``keep_fraction``; None to skip), ``hide_border``, ``hide_centre``, then ``hide_box``.
    Each backbone scores all its altered images in one batched forward pass.
    """
    cls = _check(models, class_idx, class_name, names)
    archs = list(models)
    pixels = _model_pixels(image, prep)
    shape = pixels.shape
    fractions = [_check_fraction(f) for f in fractions]
    if draws < 1:
        raise ValueError("draws must be at least 1")
    need_heat = bool(fractions) or keep_fraction is not None
    before, maps = _originals(models, pixels, prep, class_idx, task, temperatures, heats, need_heat, before)

    jobs: list[_Job] = []
    specs: list[tuple] = []   # (kind, label, target, [job indices], region-mask for the measured fraction)

    def add(kind, label, target, images: list[tuple[str | None, np.ndarray]], mask):
        first = len(jobs)
        jobs.extend(_Job(len(specs), a, img) for a, img in images)
        specs.append((kind, label, target, list(range(first, len(jobs))), mask))

    for f in fractions:
        per = [(a, top_fraction_mask(maps[a], f, shape, seed=seed)) for a in archs]
        add(HIDE_HOT, f"Hottest {_pct(f)} of the heat map hidden", f, [(a, hide(pixels, m)) for a, m in per], per[0][1])
    for f in fractions:
        masks = [random_region_mask(shape, f, seed=seed + 1000 * (d + 1) + int(round(1000 * f))) for d in range(draws)]
        add(HIDE_RANDOM, f"Random {_pct(f)} hidden ({draws} draw{'s' if draws > 1 else ''})", f,
            [(None, hide(pixels, m)) for m in masks], masks[0])
    if keep_fraction is not None:
        kf = _check_fraction(keep_fraction)
        per = [(a, top_fraction_mask(maps[a], kf, shape, seed=seed)) for a in archs]
        add(KEEP_HOT, f"Only the hottest {_pct(kf)} kept", kf, [(a, keep_only(pixels, m)) for a, m in per], ~per[0][1])
    bm, cm = border_mask(shape, border), centre_mask(shape, centre)
    add(HIDE_BORDER, "Borders hidden (outer strip)", None, [(None, hide(pixels, bm))], bm)
    add(HIDE_CENTRE, "Centre hidden (lung fields)", None, [(None, hide(pixels, cm))], cm)
    if box is not None:
        xm = box_mask(shape, box)
        add(HIDE_BOX, "Your box hidden", None, [(None, hide(pixels, xm))], xm)

    scores = _score_jobs(models, pixels, prep, class_idx, task, temperatures, jobs, before)
    random_means = {target: {a: float(np.mean([scores[a][i] for i in idx])) for a in archs}
                    for kind, _, target, idx, _ in specs if kind == HIDE_RANDOM}
    rows = [_row(kind, label, float(np.mean(mask)), target, [(i, jobs[i]) for i in idx], scores, before, cls, archs,
                 reference=random_means.get(target) if kind == HIDE_HOT else None)
            for kind, label, target, idx, mask in specs]
    return WhatIfPanel(class_idx=int(class_idx), class_name=cls, pixels=pixels, before=dict(before), rows=rows)


def mask_what_if(models: Mapping[str, torch.nn.Module], image: np.ndarray, prep, class_idx: int,
                 mask: np.ndarray, *, task: str = MULTICLASS, names: Sequence[str] | None = None,
                 class_name: str | None = None, temperatures: Mapping | None = None, region: str = "the region",
                 label: str | None = None, kind: str = HIDE_MASK, before: Mapping[str, float] | None = None) -> WhatIfRow:
    """Hide one region (bool mask at any size, resized to the model input) and score every backbone on the
    altered image (with the original in the same batch unless ``before`` gives its probabilities)."""
    cls = _check(models, class_idx, class_name, names)
    pixels = _model_pixels(image, prep)
    m = np.asarray(mask)
    if m.shape != pixels.shape:
        m = resize_map(m.astype(np.float32), pixels.shape) >= 0.5
    m = m.astype(bool)
    if not m.any():
        raise ValueError("the mask is empty: nothing to hide")
    b = {a: (None if before is None or before.get(a) is None else float(before[a])) for a in models}
    jobs = [_Job(0, None, hide(pixels, m))]
    scores = _score_jobs(models, pixels, prep, class_idx, task, temperatures, jobs, b)
    return _row(kind, label or f"{region[:1].upper()}{region[1:]} hidden", float(m.mean()), None, [(0, jobs[0])],
                scores, b, cls, list(models), region=region)


def box_what_if(models: Mapping[str, torch.nn.Module], image: np.ndarray, prep, class_idx: int,
                box: Mapping[str, float], **kw) -> WhatIfRow:
    """The ``hide_box`` row alone (for a page redrawing it as the user moves the box): one image per
    backbone (two with the original, unless ``before`` is given). ``box``: ``{"x", "y", "w", "h"}``
    fractions of the image (top-left corner and size)."""
    pixels = _model_pixels(image, prep)
    return mask_what_if(models, pixels, prep, class_idx, box_mask(pixels.shape, box), region="the box",
                        label="Your box hidden", kind=HIDE_BOX, **kw)
