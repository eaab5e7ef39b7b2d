"""Cached loaders of the Latent space page (shared by every session; keyed like ``ui.cache``)."""

from __future__ import annotations

import numpy as np
import streamlit as st

from covidviz import runs
from covidviz.anatomy.inputs import model_input
from covidviz.cam import DEFAULT_COLORMAP, OVERLAY_ALPHA, compute_cam, overlay
from covidviz.data.imageio import ImageDecodeError, read_image
from covidviz.data.table import SPLITS
from covidviz.ui.cache import _experiment, _model, _stamp
from covidviz.ui.external import site_stamp
from covidviz.views.external import set_order as external_set_order
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


@st.cache_data(show_spinner="Placing the external images on the map…", max_entries=32)
def _latent_external(path: str, stamp: int, site: str, stamp_site: int, arch: str) -> dict | None:
    from covidviz.runs.external import list_external
    from covidviz.views import external

    exp = _experiment(path, stamp)
    ext = external.find_set(list_external(path)[0], site)
    if ext is None or arch not in ext.archs or not exp.has_artifact(runs.PROJECTIONS, arch):
        return None
    images = ext.images()
    _, probs = external.site_arrays(images, {arch: ext.predictions(arch)}, exp.labels)
    return {"coords": external.place_on_maps(exp.load_arrays(runs.PROJECTIONS, arch), ext.features(arch)),
            "image_id": images["image_id"].astype(str).to_numpy(), "labels": images["labels"].astype(str).to_numpy(),
            "probs": probs[arch]}


def latent_external(exp: runs.Experiment, arch: str, sites) -> dict[str, dict]:
    """site -> its images placed on this backbone's stored maps (``{"coords": method -> (M, 2), "image_id",
    "labels", "probs"}``; ``views.external.place_on_maps``, nothing refitted), for the sites that have them."""
    placed = {s: _latent_external(str(exp.path), _stamp(exp.path), s, site_stamp(exp.path, s), arch) for s in sites}
    return {s: p for s, p in placed.items() if p is not None}


@st.cache_resource(show_spinner="Drawing the map…", max_entries=24)
def _latent_figure(path: str, stamp: int, arch: str, method: str, colour_by: str, cls: str | None,
                   height: int, sites: tuple = ()):
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
    elif colour_by == "set":
        order = external_set_order([s for s, _ in sites])
    title = f"{arch_label(arch)} · {latent.METHOD_NAMES.get(method, method)}"
    fig = latent.base_figure(coords, table, probs, names, colour_by, values, order, title, height, reserve=len(sites))
    placed = {s: p for s, st_ in sites if (p := _latent_external(path, stamp, s, st_, arch)) is not None}
    fig.add_traces(latent.external_traces(placed, method, names, colour_by, used=latent.used_colours(fig)))
    return latent.figure_dict(fig)


def latent_figure(exp: runs.Experiment, arch: str, method: str, colour_by: str, cls: str | None,
                  height: int = 620, sites=()) -> dict:
    """The O(N) base map as a plotly figure dict, built once per (backbone, map, colouring, external sets
    shown: ``sites``, placed without refitting); shared, so callers add overlays to a shallow copy
    (``{**fig, "data": fig["data"] + [...]}``)."""
    return _latent_figure(str(exp.path), _stamp(exp.path), arch, method, colour_by,
                          cls if colour_by == "outcome" else None, height,
                          tuple((s, site_stamp(exp.path, s)) for s in sites))


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
        inp = model_input(pre, gray)  # the experiment's model input (a lung input's crop or mask included)
        res = compute_cam(model, pre.to_tensor(inp.pixels), int(cls_idx) if cls_idx is not None else None, method=method)
    except Exception as exc:  # a model that cannot load must not take the page down
        return gray, f"No heatmap: the {arch_label(arch)} model could not be run ({type(exc).__name__}: {exc}).", probs, None
    return gray, "", probs, overlay(inp.seen(gray), res.normalised[0], alpha=OVERLAY_ALPHA, colormap=DEFAULT_COLORMAP)


def latent_detail(exp: runs.Experiment, arch: str, row: int, cls_idx: int | None, method: str = "cam"):
    return _latent_detail(str(exp.path), _stamp(exp.path), arch, int(row), cls_idx, method)
