"""Class activation maps: the methods (``methods``), their display (``overlay``), how well they point
at a known lesion (``localisation``) and how to test them by hiding regions (``occlusion``: the masks
and the fill; ``whatif``: scoring the altered images). The common names are re-exported here."""

from covidviz.cam.methods import (
    DEFAULT_LAYER,
    DEFAULT_METHOD,
    GRADIENT_METHODS,
    METHOD_HELP,
    METHOD_NAMES,
    METHODS,
    CamResult,
    compute_cam,
    compute_cams,
    evaluating,
    model_lock,
    no_evidence,
    offered_methods,
)
from covidviz.cam.overlay import (
    COLORMAPS,
    DEFAULT_COLORMAP,
    OVERLAY_ALPHA,
    colormap_lut,
    describe_grid,
    overlay,
    resize_map,
)
from covidviz.models import LAYER_NAMES, layer_names

__all__ = ["COLORMAPS", "DEFAULT_COLORMAP", "DEFAULT_LAYER", "DEFAULT_METHOD", "GRADIENT_METHODS", "LAYER_NAMES",
           "METHODS", "METHOD_HELP", "METHOD_NAMES", "OVERLAY_ALPHA", "CamResult", "colormap_lut", "compute_cam",
           "compute_cams", "describe_grid", "evaluating", "layer_names", "model_lock", "no_evidence", "offered_methods",
           "overlay", "resize_map"]
