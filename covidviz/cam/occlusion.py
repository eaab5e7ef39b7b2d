"""Occlusion: the regions a what-if hides and how it hides them.

The masks (bool (H, W), True = the region under test) and the fill: hidden pixels are filled with the
image's own heavily blurred background (a Gaussian of 1/8 of the image side, computed from the pixels
that stay *outside* the region under test), never black: a black patch is itself a strong new feature,
and a blur of the region itself would keep its opacity. Small functions, each tested on its own; the
what-ifs that score the altered images are ``covidviz.cam.whatif``'s, the shortcut audit
(``covidviz.analysis.shortcuts``) uses the same masks and fill. The fill itself (``blurred_background``,
``fill``, ``hide``, ``keep_only``) is defined in ``covidviz.data.background`` and re-exported here: the
``lung-mask`` model input (``covidviz.data.preprocess``) uses it too.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import ndimage

from covidviz.cam.localisation import box_fractions, random_heat
from covidviz.cam.overlay import resize_map
from covidviz.data.background import BLUR, blurred_background, fill, hide, keep_only  # noqa: F401 (re-exported)

BORDER = 0.15                    # width of the outer strip, as a fraction of each side (~51 % of the film)
CENTRE = 0.65                    # side of the central box, as a fraction of each side (~42 %: the lung fields)
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
