"""Lung fields of a frontal chest film: ``segment_lungs(gray) -> LungFields``.

The shipped U-Net (``lungs_unet.pt``, see docs/lungs.md for its data, numbers and licence) gives a
lung probability per pixel at ``INPUT_SIZE`` px; the post-processing keeps the two largest fields
(a single field that straddles the midline is cut at its narrowest column), fills holes, names
the sides and draws the result at the film's own size by interpolating the cleaned probabilities,
so outlines are smooth at any size.

Sides: on a standard frontal film (PA or AP, as displayed by convention) the patient faces the
viewer, so the patient's RIGHT lung is on the IMAGE LEFT and the patient's LEFT lung on the image
right. ``LungFields.right`` is the field whose centre lies further to the image left. A film that
was flipped before it reached us cannot be told apart here (the heart's side is not checked).

``quality`` in [0, 1] says whether the segmentation itself can be trusted (not whether the lungs
are healthy): the product of how decided the network is about the pixels it calls lung, and how
plausible the two fields are (both present, of lung-like size, side by side, of similar size and
height). Below ``QUALITY_OK`` treat the fields as missing; a blank film, noise, a lateral film or
a CT slice score low (docs/lungs.md has the measured distributions).

Thread-safe: the network is loaded once under a lock and then only read (eval mode, inference
mode, no module state is written), and everything else is per call.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from covidviz.anatomy.net import INPUT_SIZE, LungUNet, model_input

WEIGHTS = Path(__file__).with_name("lungs_unet.pt")
PROVENANCE = Path(__file__).with_name("lungs_unet.json")

QUALITY_OK = 0.5          # quality at or above this: the fields can be used
MIN_SIDE = 32             # smaller films are refused (a 1x1 "film" is an error, not a low score)
_MIN_FIELD = 0.015        # a lung field is at least this share of the film (smaller blobs are noise)
_EIGHT = np.ones((3, 3), dtype=bool)

_lock = threading.Lock()
_model: LungUNet | None = None


@dataclass(frozen=True)
class LungFields:
    """Lung fields at the film's size. ``left``/``right`` are the PATIENT's lungs (``right`` is on the
    image left of a standard frontal film); ``mask = left | right``. ``quality`` in [0, 1]: below
    ``QUALITY_OK`` the segmentation is not trustworthy; ``issues`` says why, in words."""

    mask: np.ndarray
    left: np.ndarray
    right: np.ndarray
    quality: float
    issues: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.quality >= QUALITY_OK


def load_model(path: str | Path = WEIGHTS) -> LungUNet:
    """Build the network from a weights file (``torch.load(weights_only=True)``), eval mode."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    model = LungUNet(tuple(blob["channels"]))
    model.load_state_dict({k: v.float() for k, v in blob["state_dict"].items()})
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    model.input_size = int(blob.get("input_size", INPUT_SIZE))
    return model


def _shared_model() -> tuple[LungUNet, int]:
    global _model
    if _model is None:
        with _lock:
            if _model is None:
                _model = load_model(WEIGHTS)
    return _model, _model.input_size


def _as_uint8(gray) -> np.ndarray:
    arr = np.asarray(gray)
    if arr.ndim == 3 and arr.shape[2] in (1, 3, 4):  # tolerate a grey film stored as RGB(A)
        grey = arr[..., :3].mean(axis=2) if arr.shape[2] >= 3 else arr[..., 0]
        arr = (grey + 0.5).astype(np.uint8) if arr.dtype == np.uint8 else grey
    if arr.ndim != 2:
        raise ValueError(f"segment_lungs needs a 2-D grey film, got an array of shape {arr.shape}")
    h, w = arr.shape
    if min(h, w) < MIN_SIDE:
        raise ValueError(f"film is {w}x{h} px; segment_lungs needs at least {MIN_SIDE}x{MIN_SIDE}")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype == bool:
        return arr.astype(np.uint8) * np.uint8(255)
    a = arr.astype(np.float64)
    finite = np.isfinite(a)
    if not finite.any():
        return np.zeros(arr.shape, np.uint8)
    lo, hi = float(a[finite].min()), float(a[finite].max())
    a = np.where(finite, a, lo)
    return np.clip((a - lo) / (hi - lo if hi > lo else 1.0) * 255 + 0.5, 0, 255).astype(np.uint8)


def predict_probability(gray, model: LungUNet | None = None, size: int | None = None) -> np.ndarray:
    """The network's lung probability at its input size (float32, (size, size)) for a uint8 film."""
    if model is None:
        model, size = _shared_model()
    size = size or getattr(model, "input_size", INPUT_SIZE)
    x = torch.from_numpy(model_input(_as_uint8(gray), size))[None, None]
    with torch.inference_mode():
        return torch.sigmoid(model(x))[0, 0].numpy()


def _split_merged(comp: np.ndarray) -> list[np.ndarray]:
    """One field spanning both lungs (joined over the mediastinum): cut at the narrowest column of
    its middle third when that column is much narrower than the field; else keep it whole."""
    cols = np.flatnonzero(comp.any(axis=0))
    c0, c1 = cols[0], cols[-1]
    width = c1 - c0 + 1
    if width < 8:
        return [comp]
    counts = comp.sum(axis=0)
    mid = np.arange(c0 + width // 3, c1 - width // 3 + 1)
    cut = int(mid[np.argmin(counts[mid])])
    if counts[cut] > 0.35 * np.median(counts[c0:c1 + 1]):
        return [comp]
    a, b = comp.copy(), comp.copy()
    a[:, cut:] = False
    b[:, :cut + 1] = False
    return [x for x in (a, b) if x.any()]


def _fields(prob: np.ndarray) -> list[np.ndarray]:
    """The (at most two) lung fields at the network's size, holes filled, sorted image-left first."""
    s2 = prob.size
    lab, n = ndimage.label(prob > 0.5, structure=_EIGHT)
    if n == 0:
        return []
    areas = np.bincount(lab.ravel())[1:]
    order = np.argsort(areas)[::-1]
    comps = [lab == (i + 1) for i in order[:3] if areas[i] >= _MIN_FIELD * s2]
    if len(comps) == 1:
        comps = _split_merged(comps[0])
    comps = [ndimage.binary_fill_holes(c) for c in comps[:2]]
    comps.sort(key=lambda c: np.flatnonzero(c.any(axis=0)).mean())
    return comps


def _score(prob: np.ndarray, comps: list[np.ndarray]) -> tuple[float, list[str]]:
    """Quality in [0, 1] and the reasons it is low."""
    issues = []
    s2 = prob.size
    if not comps:
        return 0.0, ["no lung field found"]
    lung = np.logical_or.reduce(comps)
    # 1. decidedness: pixels the network is unsure about (0.2 < p < 0.8), relative to the lung area.
    # A clean result has only a 1-2 px rim of them (about 0.1 of the area); an unsure one many.
    unsure = float(((prob > 0.2) & (prob < 0.8)).sum()) / max(float(lung.sum()), 1.0)
    conf_inside = float(prob[lung].mean())
    decided = float(np.clip(1.0 - (unsure - 0.25) / 0.35, 0.0, 1.0)) * float(np.clip((conf_inside - 0.6) / 0.25, 0.0, 1.0))
    if decided < 0.5:
        issues.append("the network is unsure where the lungs are")
    # 2. plausibility of the fields
    plaus = 1.0
    if len(comps) < 2:
        issues.append("only one lung field found")
        plaus *= 0.2
    frac = float(lung.sum()) / s2
    if not 0.08 <= frac <= 0.65:
        issues.append(f"lung fields cover {frac:.0%} of the film")
        plaus *= float(np.clip(frac / 0.08, 0.0, 1.0) if frac < 0.08 else np.clip((0.85 - frac) / 0.2, 0.0, 1.0))
    if len(comps) == 2:
        a0, a1 = float(comps[0].sum()), float(comps[1].sum())
        ratio = min(a0, a1) / max(a0, a1)
        if ratio < 0.4:
            issues.append("the two lung fields differ much in size")
            plaus *= float(np.clip(ratio / 0.4, 0.0, 1.0))
        r0, r1 = (np.flatnonzero(c.any(axis=1)) for c in comps)
        overlap = (min(r0[-1], r1[-1]) - max(r0[0], r1[0]) + 1) / max(min(len(r0), len(r1)), 1)
        if overlap < 0.6:
            issues.append("the two lung fields are not side by side")
            plaus *= float(np.clip(overlap / 0.6, 0.0, 1.0))
        # each field taller than wide, as lungs are on a frontal film (a lateral film's are not)
        for c in comps:
            rows, cols = np.flatnonzero(c.any(axis=1)), np.flatnonzero(c.any(axis=0))
            aspect = len(rows) / max(len(cols), 1)
            if aspect < 1.0:
                issues.append("a lung field is wider than tall")
                plaus *= float(np.clip(aspect - 0.3, 0.0, 0.7) / 0.7)
                break
    return float(np.clip(decided * plaus, 0.0, 1.0)), issues


def _to_film(prob: np.ndarray, comps: list[np.ndarray], shape: tuple[int, int]) -> list[np.ndarray]:
    """Each field at the film's size: the network's probability inside a 2-px margin around the
    field (holes set to 1), bilinearly resized, thresholded at 0.5; a pixel both claim goes to the
    more probable one."""
    if not comps:
        return []
    maps = []
    for c in comps:
        near = ndimage.binary_dilation(c, structure=_EIGHT, iterations=2)
        p = np.where(near, prob, 0.0)
        p[c & (prob <= 0.5)] = 1.0  # filled holes
        maps.append(p)
    t = torch.from_numpy(np.stack(maps).astype(np.float32))[None]
    big = F.interpolate(t, size=shape, mode="bilinear", align_corners=False)[0].numpy()
    if len(comps) == 1:
        return [big[0] > 0.5]
    a, b = big[0], big[1]
    return [(a > 0.5) & (a >= b), (b > 0.5) & (b > a)]


def segment_lungs(gray, *, model: LungUNet | None = None) -> LungFields:
    """Lung fields of a frontal chest film given as a 2-D uint8 array (any size >= ``MIN_SIDE``;
    other numeric dtypes are min-max scaled to 0..255 first). Returns ``LungFields`` at the film's
    size. Raises ``ValueError`` for arrays that are not a 2-D image or are smaller than 32x32 px.
    ``model`` (from :func:`load_model`, or one being trained) replaces the shipped network."""
    film = _as_uint8(gray)
    if model is None:
        model, size = _shared_model()
    else:
        size = getattr(model, "input_size", INPUT_SIZE)
    prob = predict_probability(film, model, size)
    comps = _fields(prob)
    quality, issues = _score(prob, comps)
    h, w = film.shape
    big = _to_film(prob, comps, (h, w))
    empty = np.zeros((h, w), dtype=bool)
    if len(big) == 2:
        right, left = big  # image left = patient's right
    elif len(big) == 1:
        centre = np.flatnonzero(comps[0].any(axis=0)).mean()
        right, left = (big[0], empty) if centre < prob.shape[1] / 2 else (empty, big[0])
    else:
        right, left = empty, empty.copy()
    return LungFields(mask=left | right, left=left, right=right, quality=round(quality, 4), issues=tuple(issues))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean masks (1.0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s
