"""Cached loaders of the Self-organizing map page (shared by every session; keyed like ``ui.cache``)."""

from __future__ import annotations

import streamlit as st

from covidviz import runs
from covidviz.ui.cache import _experiment, _stamp, _thumbnails
from covidviz.ui.external import site_stamp


@st.cache_data(show_spinner=False, max_entries=16)
def _som(path: str, stamp: int, arch: str) -> dict | None:
    exp = _experiment(path, stamp)
    if not (exp.has_artifact(runs.SOM, arch) and exp.has_artifact(runs.SOM_INFO, arch)):
        return None
    arrays = exp.load_arrays(runs.SOM, arch)
    arrays.pop("weights", None)  # the page never needs them; keeps the cached copy small
    return {"arrays": arrays, "info": exp.som_info(arch)}


def som_result(exp: runs.Experiment, arch: str) -> dict | None:
    """``{"arrays": som.npz without weights, "info": runs.records.SomInfo}`` of a backbone, or None if not
    analysed."""
    return _som(str(exp.path), _stamp(exp.path), arch)


@st.cache_data(show_spinner=False, max_entries=16)
def _som_mosaic(path: str, stamp: int, arch: str) -> str | None:
    from covidviz.views.som_figure import prototype_mosaic

    som = _som(path, stamp, arch)
    if som is None:
        return None
    a = som["arrays"]
    return prototype_mosaic(a["hex_xy"], _thumbnails(path, stamp), a["prototype"])


def som_mosaic(exp: runs.Experiment, arch: str) -> str | None:
    """Data-URI PNG of every node's prototype thumbnail at its hexagon (cached per experiment)."""
    return _som_mosaic(str(exp.path), _stamp(exp.path), arch)


@st.cache_resource(show_spinner=False, max_entries=8)  # ~2 x (N x classes) floats each
def _som_nodes(path: str, stamp: int, arch: str, splits: tuple[str, ...] | None):
    from covidviz.views.som import node_data

    som = _som(path, stamp, arch)
    if som is None:
        return None
    exp = _experiment(path, stamp)
    a = som["arrays"]
    return node_data(exp.images(), exp.labels, exp.probabilities(arch), a["node"], len(a["hex_xy"]),
                     list(splits) if splits else None)


def som_nodes(exp: runs.Experiment, arch: str, splits=None):
    """``views.som.NodeData`` of a backbone's SOM counting the images of ``splits`` (None: all), or None
    if not analysed. Shared by every session: read only."""
    return _som_nodes(str(exp.path), _stamp(exp.path), arch, tuple(splits) if splits else None)



@st.cache_data(show_spinner="Placing the external images on the map…", max_entries=32)
def _som_external(path: str, stamp: int, site: str, stamp_site: int, arch: str):
    from covidviz.runs.external import list_external
    from covidviz.views.external import find_set, place_on_som

    exp = _experiment(path, stamp)
    ext = find_set(list_external(path)[0], site)
    if ext is None or arch not in ext.archs or not exp.has_artifact(runs.SOM, arch):
        return None
    return place_on_som(exp.load_arrays(runs.SOM, arch), ext.features(arch))[0]


def som_external(exp: runs.Experiment, arch: str, sites) -> dict:
    """site -> best-matching SOM node of each of its images on this backbone's stored map (``som_place``,
    nothing refitted), for the ``sites`` that have features of this backbone."""
    nodes = {s: _som_external(str(exp.path), _stamp(exp.path), s, site_stamp(exp.path, s), arch) for s in sites}
    return {s: n for s, n in nodes.items() if n is not None}
