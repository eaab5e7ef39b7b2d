"""Heat-map display: colour maps (no matplotlib), map resizing and overlays on a grayscale film.

The app's one choice of colour map and opacity per view lives here too (``DEFAULT_COLORMAP``,
``OVERLAY_ALPHA``), so the Diagnose, Compare and Latent pages draw heatmaps alike.
"""

from __future__ import annotations

import numpy as np

from covidviz.data.background import resize_map  # noqa: F401 (re-exported: the one map resize, defined low for data/)

COLORMAPS = ("jet", "inferno", "viridis", "cividis")
DEFAULT_COLORMAP = "jet"   # the look of the CAM literature and the paper; Diagnose lets the user change it
OVERLAY_ALPHA = 0.45       # heat map opacity over the film, every page


# Anchor colours sampled evenly from matplotlib's perceptually uniform maps (no matplotlib here);
# linear interpolation between 10 anchors stays within a few RGB levels of the originals.
_ANCHORS = {
    "inferno": ["#000004", "#1b0c41", "#4a0c6b", "#781c6d", "#a52c60", "#cf4446", "#ed6925", "#fb9b06",
                "#f7d13d", "#fcffa4"],
    "viridis": ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58",
                "#b5de2b", "#fde725"],
    # cividis: designed to read the same for the common colour-vision deficiencies.
    "cividis": ["#00224e", "#123570", "#3b496c", "#575d6d", "#707173", "#8a8678", "#a59c74", "#c3b369",
                "#e1cc55", "#fee838"],
}
# matplotlib's jet, piecewise linear per channel (the look the CAM literature and the paper used).
_JET = {
    0: ([0, 0.35, 0.66, 0.89, 1], [0, 0, 1, 1, 0.5]),
    1: ([0, 0.125, 0.375, 0.64, 0.91, 1], [0, 0, 1, 1, 0, 0]),
    2: ([0, 0.11, 0.34, 0.65, 1], [0.5, 1, 1, 0, 0]),
}


def colormap_lut(name: str) -> np.ndarray:
    """(256, 3) uint8 lookup table for one of ``COLORMAPS``."""
    t = np.linspace(0.0, 1.0, 256)
    if name == "jet":
        rgb = np.stack([np.interp(t, *_JET[c]) for c in range(3)], 1)
    elif name in _ANCHORS:
        anchors = np.array([[int(h[i:i + 2], 16) for i in (1, 3, 5)] for h in _ANCHORS[name]]) / 255.0
        pos = np.linspace(0.0, 1.0, len(anchors))
        rgb = np.stack([np.interp(t, pos, anchors[:, c]) for c in range(3)], 1)
    else:
        raise ValueError(f"unknown colormap {name!r}; choose from {', '.join(COLORMAPS)}")
    return np.round(rgb * 255).astype(np.uint8)


def describe_grid(grid: tuple[int, int] | int, image_size: int | tuple[int, int]) -> str:
    """How coarse a heat map is, for a caption: ``describe_grid((8, 8), 64)`` -> "8×8 cells, each 8 px".

    ``grid``: the map's cells (``CamResult.grid``, or ``ManifestBackbone.cam_grid``); ``image_size``: the
    model input it covers (``Preprocessing.image_size``). Cell sizes that are not whole pixels are
    given to one decimal ("7×7 cells, each 9.1 px"); non-square cells as "each 8×16 px".
    """
    gh, gw = (grid, grid) if isinstance(grid, int) else (int(grid[0]), int(grid[1]))
    ih, iw = (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))
    if min(gh, gw, ih, iw) <= 0:
        raise ValueError(f"grid {grid} and image size {image_size} must be positive")

    def px(v: float) -> str:
        return f"{v:.0f}" if abs(v - round(v)) < 0.05 else f"{v:.1f}"

    ch, cw = ih / gh, iw / gw
    cell = px(ch) if px(ch) == px(cw) else f"{px(ch)}×{px(cw)}"
    noun = "cell" if gh * gw == 1 else "cells"
    return f"{gh}×{gw} {noun}, each {cell} px"


def overlay(gray: np.ndarray, heat: np.ndarray, alpha: float = OVERLAY_ALPHA, colormap: str = DEFAULT_COLORMAP) -> np.ndarray:
    """Blend a [0, 1] heat map (any size; resized to the image) in ``colormap`` over a grayscale
    uint8 (H, W) film: RGB uint8 (H, W, 3). ``alpha`` is the heat map's opacity."""
    gray = np.asarray(gray)
    if gray.ndim != 2:
        raise ValueError(f"expected a grayscale (H, W) image, got shape {gray.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError("alpha must be in [0, 1]")
    lut = colormap_lut(colormap)
    h = np.nan_to_num(resize_map(heat, gray.shape), nan=0.0)
    colour = lut[np.round(np.clip(h, 0.0, 1.0) * 255).astype(np.int64)].astype(np.float32)
    base = np.repeat(gray.astype(np.float32)[..., None], 3, axis=2)
    return np.clip((1.0 - alpha) * base + alpha * colour + 0.5, 0, 255).astype(np.uint8)
