"""The blurred-background fill: how covidviz hides part of a film without adding a new feature.

Hidden pixels are filled with the film's own heavily blurred background (a Gaussian of ``BLUR`` of the
longer side), never black: a black patch is itself a strong new feature, and a blur of the hidden
region itself would keep its opacity. The background is made from the pixels of a chosen source only
(normalised convolution), so nothing of what is hidden leaks back into the fill.

One definition, three users: the what-ifs and the shortcut audit (``covidviz.cam.occlusion``, which
re-exports these names) and the ``lung-mask`` model input (``Preprocessing.to_model_pixels``), which is
why it lives in the data layer. ``resize_map`` (bilinear resize of a float map) lives here for the same
reason; ``covidviz.cam.overlay`` re-exports it.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

BLUR = 1 / 8  # Gaussian sigma of the fill, as a fraction of the image's longer side


def resize_map(heat: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float (h, w) map to ``shape`` (values keep their scale)."""
    import torch
    import torch.nn.functional as F

    heat = np.asarray(heat, dtype=np.float32)
    if heat.ndim != 2:
        raise ValueError(f"expected a 2-D map, got shape {heat.shape}")
    if heat.shape == tuple(shape):
        return heat
    t = torch.from_numpy(np.ascontiguousarray(heat))[None, None]
    return F.interpolate(t, size=tuple(shape), mode="bilinear", align_corners=False)[0, 0].numpy()


def _area_down(a: np.ndarray, f: int) -> np.ndarray:
    if f <= 1:
        return a
    import torch
    import torch.nn.functional as F

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
    region (so the kept content is not smeared around it). What the what-ifs and the audit test."""
    region = np.asarray(region, bool)
    return fill(gray, ~region, blurred_background(gray, exclude=region, sigma=sigma))


def keep_only_sealed(gray: np.ndarray, region: np.ndarray, sigma: float | None = None) -> np.ndarray:
    """Keep only ``region`` and fill everything else with the blurred background made from the region
    ITSELF: the result depends on the region's pixels (and its outline) only, so nothing outside it
    (a hospital marker, text, a collimation edge) reaches it, not even blurred. ``keep_only`` makes
    its fill from the rest instead, which is right for a what-if but lets a bright corner marker leak
    in as a faint smudge (15-30 gray levels on phantoms at 64 px); this is the ``lung-mask`` input."""
    region = np.asarray(region, bool)
    if not region.any():
        raise ValueError("empty region: nothing to keep")
    return fill(gray, ~region, blurred_background(gray, exclude=~region, sigma=sigma))
