"""Class activation maps: the methods (``methods``), their display (``overlay``) and how well they
point at a known lesion (``localisation``). The common names are re-exported here."""

from covidviz.cam.methods import (
    GRADIENT_METHODS,
    METHOD_HELP,
    METHOD_NAMES,
    METHODS,
    CamResult,
    compute_cam,
    compute_cams,
    evaluating,
    model_lock,
)
from covidviz.cam.overlay import COLORMAPS, DEFAULT_COLORMAP, OVERLAY_ALPHA, colormap_lut, overlay, resize_map

__all__ = ["COLORMAPS", "DEFAULT_COLORMAP", "GRADIENT_METHODS", "METHODS", "METHOD_HELP", "METHOD_NAMES",
           "OVERLAY_ALPHA", "CamResult", "colormap_lut", "compute_cam", "compute_cams", "evaluating",
           "model_lock", "overlay", "resize_map"]
