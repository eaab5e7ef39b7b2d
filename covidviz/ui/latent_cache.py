"""Cached loaders of the Latent space page (shared by every session; keyed like ``ui.cache``)."""

from __future__ import annotations

import numpy as np
import streamlit as st

from covidviz import runs
from covidviz.cam import DEFAULT_COLORMAP, OVERLAY_ALPHA, compute_cam, overlay
from covidviz.data.imageio import ImageDecodeError, read_image
from covidviz.data.table import SPLITS
from covidviz.ui.cache import _experiment, _model, _stamp
from covidviz.views.style import NO_FINDING, arch_label


@st.cache_resource(show_spinner=False, max_entries=16)
def _latent_maps(path: str, stamp: int, arch: str):
    from covidviz.views import latent

    return latent.load_maps(_experiment(path, stamp), arch)


def latent_maps(exp: runs.Experiment, arch: str):
    """``views.latent.Maps`` (coords per method + quality) of one analysed backbone (shared: read only)."""
    return _latent_maps(str(exp.path), _stamp(exp.path), arch)


@st.cache_resource(show_spinner=False, max_entries=16)
def _latent_points(path: str, stamp: int, arch: str):
    from covidviz.views import latent

    exp = _experiment(path, stamp)
    probs = exp.probabilities(arch)
    probs.setflags(write=False)
    return latent.point_table(exp.images(), probs, list(exp.labels.names), exp.labels.task), probs


def latent_points(exp: runs.Experiment, arch: str):
    """(point table, probabilities (N, C)) of one backbone: shared read-only objects, do not modify."""
    return _latent_points(str(exp.path), _stamp(exp.path), arch)


@st.cache_resource(show_spinner="Drawing the map…", max_entries=24)
def _latent_figure(path: str, stamp: int, arch: str, method: str, colour_by: str, cls: str | None,
                   height: int):
    from covidviz.views import latent

    exp = _experiment(path, stamp)
    names = list(exp.labels.names)
    table, probs = _latent_points(path, stamp, arch)
    coords = _latent_maps(path, stamp, arch).coords[method]
    values, order = None, None
    if colour_by == "outcome" and cls:
        thr, _ = latent.youden_threshold(exp.analysis(), arch, cls)
        values, order = latent.outcomes(exp.images(), probs, names, cls, thr), list(latent.OUTCOMES)
    elif colour_by in ("label", "prediction"):
        order = names + [NO_FINDING]
    elif colour_by == "split":
        order = list(SPLITS)
    title = f"{arch_label(arch)} · {latent.METHOD_NAMES.get(method, method)}"
    return latent.figure_dict(latent.base_figure(coords, table, probs, names, colour_by, values, order, title, height))


def latent_figure(exp: runs.Experiment, arch: str, method: str, colour_by: str, cls: str | None,
                  height: int = 620) -> dict:
    """The O(N) base map as a plotly figure dict, built once per (backbone, map, colouring); shared, so
    callers add overlays to a shallow copy (``{**fig, "data": fig["data"] + [...]}``)."""
    return _latent_figure(str(exp.path), _stamp(exp.path), arch, method, colour_by,
                          cls if colour_by == "outcome" else None, height)


@st.cache_data(show_spinner="Computing heatmaps…", max_entries=64)
def _latent_detail(path: str, stamp: int, arch: str, row: int, cls_idx: int | None, method: str):
    """(full image uint8 (H, W) or None, why not, probabilities (C,), CAM overlay RGB or None)."""
    exp = _experiment(path, stamp)
    probs = np.asarray(_latent_points(path, stamp, arch)[1][row])
    image_path = str(exp.images().iloc[row]["path"])
    try:
        gray = read_image(image_path)
    except (ImageDecodeError, OSError, ValueError) as exc:
        return None, f"The original image cannot be read ({exc}); showing its thumbnail.", probs, None
    try:
        model = _model(path, stamp, arch)
        pre = exp.preprocessing
        x = pre.to_tensor(pre.to_model_pixels(gray))
        res = compute_cam(model, x, int(cls_idx) if cls_idx is not None else None, method=method)
    except Exception as exc:  # a model that cannot load must not take the page down
        return gray, f"No heatmap: the {arch_label(arch)} model could not be run ({type(exc).__name__}: {exc}).", probs, None
    return gray, "", probs, overlay(gray, res.normalised[0], alpha=OVERLAY_ALPHA, colormap=DEFAULT_COLORMAP)


def latent_detail(exp: runs.Experiment, arch: str, row: int, cls_idx: int | None, method: str = "cam"):
    return _latent_detail(str(exp.path), _stamp(exp.path), arch, int(row), cls_idx, method)
