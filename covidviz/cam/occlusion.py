"""Occlusion: the regions a what-if hides and how it hides them.

The masks (bool (H, W), True = the region under test) and the fill: hidden pixels are filled with the
image's own heavily blurred background (a Gaussian of 1/8 of the image side, computed from the pixels
that stay *outside* the region under test), never black: a black patch is itself a strong new feature,
and a blur of the region itself would keep its opacity. Small functions, each tested on its own; the
what-ifs that score the altered images are ``covidviz.cam.whatif``'s, the shortcut audit
(``covidviz.analysis.shortcuts``) uses the same masks and fill.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from covidviz.cam.localisation import box_fractions, random_heat
from covidviz.cam.overlay import resize_map

BORDER = 0.15                    # width of the outer strip, as a fraction of each side (~51 % of the film)
CENTRE = 0.65                    # side of the central box, as a fraction of each side (~42 %: the lung fields)
BLUR = 1 / 8                     # Gaussian sigma of the fill, as a fraction of the image side
RANDOM_GRID = 4                  # random regions: top of a 4x4 noise grid, upsampled (1-4 blobs, like a CAM's)


# ------------------------------------------------------------------------------------------------
# masks: bool (H, W), True = the region under test
# ------------------------------------------------------------------------------------------------

def _shape(shape) -> tuple[int, int]:
    h, w = (int(shape), int(shape)) if np.ndim(shape) == 0 else (int(shape[0]), int(shape[1]))
    if h < 1 or w < 1:
        raise ValueError(f"invalid image shape {shape}")
    return h, w


def check_fraction(fraction: float) -> float:
    """``fraction`` as a float, or a ValueError unless it is strictly between 0 and 1."""
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
    f = check_fraction(fraction)
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
