"""How well a heat map points at a finding, and how faithful it is to the model.

- ``pointing_game``: is the map's peak on the lesion (within a tolerance)? (Zhang et al., 2016.)
- ``energy_inside``: the share of the map's positive energy inside the lesion ("energy-based pointing
  game", Wang et al., 2020): unlike the pointing game it sees a second, wrong blob.
- ``box_to_mask``: an annotation box given in fractions of the image (NIH ``BBox_List_2017.csv``,
  rescaled) -> pixel mask, so boxes and the phantoms' pixel masks are scored the same way.
- ``deletion_curve`` / ``deletion_auc``: delete the most salient pixels first (replace them with a
  blurred copy of the image) and follow the target's probability; a map that finds what the model
  uses makes it fall fast, i.e. a *lower* area means a more faithful map (Petsiuk et al., 2018).
  Unlike the two scores above it needs no annotation, only the model.
- ``random_heat``: the chance baseline every score should be compared with.

Maps of any size are resized to the mask (or input) size first, so a 224-px CAM can be scored
against a box on the 1024-px original.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from covidviz.cam.methods import evaluating
from covidviz.cam.overlay import resize_map
from covidviz.models import probabilities


def box_fractions(box) -> tuple[float, float, float, float]:
    """``(x, y, w, h)`` of a ``{"x", "y", "w", "h"}`` box in fractions, checked: all finite, positive size."""
    try:
        x, y, w, h = (float(box[k]) for k in ("x", "y", "w", "h"))
    except KeyError as exc:
        raise ValueError(f"box needs keys x, y, w, h (fractions); missing {exc}") from None
    if not all(np.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
        raise ValueError(f"invalid box {dict(box)}")
    return x, y, w, h


def box_to_mask(box: Mapping[str, float], height: int, width: int) -> np.ndarray:
    """{"x", "y", "w", "h"} as fractions of the width/height (top-left corner and size) -> bool
    (height, width) mask. The box is clipped to the image and covers at least one pixel."""
    x, y, w, h = box_fractions(box)
    c0 = int(np.clip(np.floor(x * width), 0, width - 1))
    r0 = int(np.clip(np.floor(y * height), 0, height - 1))
    c1 = int(np.clip(np.ceil((x + w) * width), c0 + 1, width))
    r1 = int(np.clip(np.ceil((y + h) * height), r0 + 1, height))
    mask = np.zeros((height, width), dtype=bool)
    mask[r0:r1, c0:c1] = True
    return mask


def _prepare(heat, mask) -> tuple[np.ndarray, np.ndarray]:
    mask = np.asarray(mask).astype(bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    if not mask.any():
        raise ValueError("empty mask: nothing to localise")
    return resize_map(np.nan_to_num(np.asarray(heat, dtype=np.float32)), mask.shape), mask


def pointing_game(heat: np.ndarray, mask: np.ndarray, tolerance_px: float | None = None) -> bool:
    """True when the map's maximum lies in the mask or within ``tolerance_px`` pixels of it.

    Default tolerance: 15 px at 224 px (Zhang et al.), scaled with the mask's size. A flat map has no
    peak and misses; when several pixels share the maximum, most of them must be on target (so a
    plateau cannot win by the scan order).
    """
    heat, mask = _prepare(heat, mask)
    if tolerance_px is None:
        tolerance_px = 15.0 * max(mask.shape) / 224.0
    top = heat.max()
    if not np.isfinite(top) or top <= heat.min():
        return False
    peaks = heat >= top
    dist = ndimage.distance_transform_edt(~mask)  # distance of every pixel to the nearest mask pixel
    return bool(np.mean(dist[peaks] <= tolerance_px) > 0.5)


def energy_inside(heat: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of the map's positive energy (sum of its positive values) inside the mask; NaN for
    a map with no positive value (nothing to attribute)."""
    heat, mask = _prepare(heat, mask)
    pos = np.clip(heat, 0.0, None).astype(np.float64)
    total = pos.sum()
    return float(pos[mask].sum() / total) if total > 0 else float("nan")


def random_heat(height: int, width: int, grid: int | tuple[int, int] = 7, seed: int = 0) -> np.ndarray:
    """A random map with CAM's texture: uniform noise on a ``grid`` (the CAM layer's resolution, e.g.
    7x7 at 224 px) upsampled bilinearly, in [0, 1]. The chance baseline for the scores above."""
    gh, gw = (grid, grid) if isinstance(grid, int) else grid
    low = np.random.default_rng(seed).random((gh, gw)).astype(np.float32)
    return resize_map(low, (height, width))


@dataclass(frozen=True)
class DeletionCurve:
    fractions: np.ndarray  # (steps+1,) share of pixels deleted, 0 .. 1
    scores: np.ndarray     # (steps+1,) the target class's probability at each step
    auc: float             # trapezoidal area under scores(fractions); lower = more faithful


def _baseline(x: torch.Tensor, kind, sigma: float | None) -> torch.Tensor:
    if isinstance(kind, torch.Tensor):  # a caller-supplied counterfactual, e.g. a normal twin film
        base = kind.to(x.device, x.dtype)
        base = base[None] if base.ndim == 3 else base
        if base.shape != x.shape:
            raise ValueError(f"baseline image shape {tuple(base.shape)} differs from the input's {tuple(x.shape)}")
        return base
    if kind == "zero":      # 0 in normalised units: the ImageNet mean grey
        return torch.zeros_like(x)
    if kind == "mean":      # the image's own mean, per channel
        return x.mean((2, 3), keepdim=True).expand_as(x).clone()
    if kind == "blur":      # keeps the film's coarse brightness (fewer off-distribution edges)
        s = sigma if sigma is not None else max(x.shape[-2:]) / 16.0
        arr = x.detach().cpu().numpy()
        out = ndimage.gaussian_filter(arr, sigma=(0, 0, s, s), mode="nearest")
        return torch.from_numpy(out).to(x.device, x.dtype)
    raise ValueError(f"unknown deletion baseline {kind!r}; choose blur, mean or zero")


def deletion_curve(model: torch.nn.Module, x: torch.Tensor, heat: np.ndarray, class_idx: int, *,
                   task: str = "multiclass", steps: int = 20, baseline: str | torch.Tensor = "blur",
                   sigma: float | None = None, batch_size: int = 16, seed: int = 0) -> DeletionCurve:
    """Deletion curve of one image ``x`` ((3, H, W) or (1, 3, H, W), preprocessed) under ``heat``.

    At step i of ``steps`` the i/steps most salient pixels (ties in random order, from ``seed``) are
    replaced by ``baseline``: "blur" (a Gaussian-blurred copy, sigma H/16 by default), "mean", "zero",
    or an image tensor shaped like ``x``. Caveat for X-rays: every generic fill leaves an *opacity*
    opaque (a blurred hazy lesion is still a hazy lesion; a grey fill in dark lung is still an
    opacity), so the curve under-rates maps of diffuse findings; where a lesion-free version of the
    film exists (the phantoms' normal twin) pass it as the baseline.
    The model runs in eval mode under its CAM lock, without gradients.
    """
    if steps < 1:
        raise ValueError("steps must be at least 1")
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError("deletion_curve takes one image: (3, H, W) or (1, 3, H, W)")
    h, w = x.shape[-2:]
    sal = np.nan_to_num(resize_map(heat, (h, w))).reshape(-1)
    tiebreak = np.random.default_rng(seed).random(sal.size)
    order = np.lexsort((tiebreak, -sal))  # most salient first
    fractions = np.linspace(0.0, 1.0, steps + 1)
    counts = np.round(fractions * sal.size).astype(np.int64)
    rank = np.empty(sal.size, dtype=np.int64)
    rank[order] = np.arange(sal.size)

    scores = []
    with torch.inference_mode(False), evaluating(model), torch.no_grad():
        p = next(model.parameters())
        x = x.to(p.device, torch.float32).clone()
        base = _baseline(x, baseline, sigma)
        rank_t = torch.from_numpy(rank).to(p.device).view(1, 1, h, w)
        for start in range(0, len(counts), batch_size):
            ks = torch.as_tensor(counts[start:start + batch_size], device=p.device).view(-1, 1, 1, 1)
            deleted = (rank_t < ks).to(x.dtype)              # (b, 1, H, W)
            batch = x * (1 - deleted) + base * deleted
            probs = probabilities(model(batch), task)[:, int(class_idx)]
            scores.append(probs.float().cpu().numpy())
    scores = np.concatenate(scores)
    return DeletionCurve(fractions, scores, _trapezoid(scores, fractions))


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    # np.trapezoid is numpy >= 2 only (np.trapz is deprecated there); requirements allow 1.26.
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0)


def deletion_auc(model: torch.nn.Module, x: torch.Tensor, heat: np.ndarray, class_idx: int, *,
                 task: str = "multiclass", steps: int = 20, baseline: str | torch.Tensor = "blur",
                 **kw) -> float:
    """Area under the deletion curve (lower = the map is more faithful to the model)."""
    return deletion_curve(model, x, heat, class_idx, task=task, steps=steps, baseline=baseline, **kw).auc
