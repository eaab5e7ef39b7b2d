"""Cached loaders shared by every session: experiments, their tables, models and page artefacts.

``Experiment`` objects and models live in ``st.cache_resource`` (one shared object, never copied),
tables in ``st.cache_data``. Every key holds the experiment folder *and* its manifest's modification
time, so re-training into the same name (``--overwrite``) or re-analysing is picked up without a
restart. What is computed here is computed by ``covidviz.views``; this module only caches it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from covidviz import runs
from covidviz.cam import OVERLAY_ALPHA, compute_cam, overlay
from covidviz.data.imageio import ImageDecodeError, read_image
from covidviz.data.table import SPLITS
from covidviz.views import overview as overview_view
from covidviz.views.style import arch_label


def _stamp(path: str | Path) -> int:
    """Manifest modification time: part of every cache key, so a re-trained experiment is re-read."""
    try:
        return (Path(path) / runs.MANIFEST).stat().st_mtime_ns
    except OSError:
        return 0


# ---------------------------------------------------------------- cached loaders

@st.cache_resource(show_spinner=False, max_entries=32)
def _experiment(path: str, stamp: int) -> runs.Experiment:
    return runs.read_experiment(path)


def load_experiment(path: str | Path) -> runs.Experiment:
    """The shared ``Experiment`` for a folder (its lazily read tables are shared by all sessions)."""
    return _experiment(str(path), _stamp(path))


@st.cache_data(show_spinner=False, max_entries=32)
def _images(path: str, stamp: int) -> pd.DataFrame:
    return _experiment(path, stamp).images()


def images_table(exp: runs.Experiment) -> pd.DataFrame:
    """images.parquet of an experiment (a private copy: callers may modify it)."""
    return _images(str(exp.path), _stamp(exp.path))


@st.cache_data(show_spinner=False, max_entries=64)
def _predictions(path: str, stamp: int, arch: str) -> pd.DataFrame:
    return _experiment(path, stamp).predictions(arch)


def predictions_table(exp: runs.Experiment, arch: str) -> pd.DataFrame:
    return _predictions(str(exp.path), _stamp(exp.path), arch)


@st.cache_data(show_spinner=False, max_entries=64)
def _history(path: str, stamp: int, arch: str) -> list[dict]:
    return _experiment(path, stamp).history(arch)


def history(exp: runs.Experiment, arch: str) -> list[dict]:
    return _history(str(exp.path), _stamp(exp.path), arch)


@st.cache_resource(show_spinner=False, max_entries=8)
def _thumbnails(path: str, stamp: int) -> np.ndarray:
    return _experiment(path, stamp).thumbnails()


def thumbnails(exp: runs.Experiment) -> np.ndarray:
    """(N, 64, 64) uint8 thumbnails, memory-mapped and row-aligned with ``images_table``."""
    return _thumbnails(str(exp.path), _stamp(exp.path))


@st.cache_resource(show_spinner="Loading model…", max_entries=8)
def _model(path: str, stamp: int, arch: str):
    return _experiment(path, stamp).load_model(arch)


def load_model(exp: runs.Experiment, arch: str):
    """The best-validation model in eval mode; one copy per process (models are large)."""
    return _model(str(exp.path), _stamp(exp.path), arch)


@st.cache_data(show_spinner=False, max_entries=32)
def _dataset_tables(path: str, stamp: int) -> dict:
    exp = _experiment(path, stamp)
    return overview_view.dataset_tables(exp.images(), exp.labels)


@st.cache_data(show_spinner=False, max_entries=32)
def _examples(path: str, stamp: int, split: str, per_label: int) -> dict[str, tuple[list[int], int]]:
    exp = _experiment(path, stamp)
    return overview_view.example_rows(exp.images(), exp.labels, split, per_label)


def example_rows(exp: runs.Experiment, split: str = "test", per_label: int = 8) -> dict[str, tuple[list[int], int]]:
    """Label -> (first ``per_label`` images.parquet rows of ``split`` with that label, how many there are)."""
    return _examples(str(exp.path), _stamp(exp.path), split, per_label)


def dataset_tables(exp: runs.Experiment) -> dict:
    """Dataset-card tables ``label_split``, ``patients``, ``source_label`` and ``leaked_patients``."""
    return _dataset_tables(str(exp.path), _stamp(exp.path))


# ---- latent page ----

@st.cache_resource(show_spinner=False, max_entries=16)
def _latent_maps(path: str, stamp: int, arch: str):
    from covidviz.views import latent

    return latent.load_maps(_experiment(path, stamp), arch)


def latent_maps(exp: runs.Experiment, arch: str):
    """``covidviz.latent.Maps`` (coords per method + quality) of one analysed backbone (shared: read only)."""
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
        thr, _ = latent.youden_threshold(exp, arch, cls)
        values, order = latent.outcomes(exp.images(), probs, names, cls, thr), list(latent.OUTCOMES)
    elif colour_by in ("label", "prediction"):
        order = names + [latent.NO_FINDING]
    elif colour_by == "split":
        order = list(SPLITS)
    title = f"{arch_label(arch)} · {latent.METHOD_NAMES.get(method, method)}"
    return latent.base_figure(coords, table, probs, names, colour_by, values, order, title, height).to_dict()


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
    return gray, "", probs, overlay(gray, res.normalised[0], alpha=OVERLAY_ALPHA)


def latent_detail(exp: runs.Experiment, arch: str, row: int, cls_idx: int | None, method: str = "cam"):
    return _latent_detail(str(exp.path), _stamp(exp.path), arch, int(row), cls_idx, method)


# ---- som page ----

@st.cache_data(show_spinner=False, max_entries=16)
def _som(path: str, stamp: int, arch: str) -> dict | None:
    exp = _experiment(path, stamp)
    if not (exp.has_artifact(runs.SOM, arch) and exp.has_artifact(runs.SOM_INFO, arch)):
        return None
    arrays = exp.load_arrays(runs.SOM, arch)
    arrays.pop("weights", None)  # the page never needs them; keeps the cached copy small
    return {"arrays": arrays, "info": exp.load_json(runs.SOM_INFO, arch)}


def som_result(exp: runs.Experiment, arch: str) -> dict | None:
    """``{"arrays": som.npz without weights, "info": som.json}`` of a backbone, or None if not analysed."""
    return _som(str(exp.path), _stamp(exp.path), arch)


@st.cache_data(show_spinner=False, max_entries=16)
def _som_mosaic(path: str, stamp: int, arch: str) -> str | None:
    from covidviz.views.som import prototype_mosaic

    som = _som(path, stamp, arch)
    if som is None:
        return None
    a = som["arrays"]
    return prototype_mosaic(a["hex_xy"], _thumbnails(path, stamp), a["prototype"])


def som_mosaic(exp: runs.Experiment, arch: str) -> str | None:
    """Data-URI PNG of every node's prototype thumbnail at its hexagon (cached per experiment)."""
    return _som_mosaic(str(exp.path), _stamp(exp.path), arch)


# ---- compare page ----

@st.cache_data(show_spinner=False, max_entries=16)
def _compare_analysis(path: str, stamp: int):
    from covidviz.views import compare

    return compare.load_analysis(_experiment(path, stamp))


def compare_analysis(exp: runs.Experiment) -> dict | None:
    """analysis.json of an experiment (None when not analysed yet); a private copy."""
    return _compare_analysis(str(exp.path), _stamp(exp.path))


@st.cache_resource(show_spinner=False, max_entries=8)
def _compare_test(path: str, stamp: int):
    from covidviz.views import compare

    exp = _experiment(path, stamp)
    probs = {a: exp.probabilities(a) for a in exp.backbones}
    onehot, test_probs, rows = compare.test_arrays(exp.images(), exp.labels, probs)
    for arr in (onehot, rows, *test_probs.values()):
        arr.setflags(write=False)
    return onehot, test_probs, rows


def compare_test(exp: runs.Experiment):
    """(test one-hot, arch -> test probabilities, images.parquet rows of the test images): shared, read-only."""
    return _compare_test(str(exp.path), _stamp(exp.path))


@st.cache_data(show_spinner="Computing heatmaps…", max_entries=64)
def _compare_heatmap(path: str, stamp: int, arch: str, row: int, cls_idx: int | None):
    """(CAM overlay RGB uint8 or None, explained class index or None, message)."""
    exp = _experiment(path, stamp)
    image_path = str(exp.images().iloc[row]["path"])
    try:
        gray = read_image(image_path)
    except (ImageDecodeError, OSError, ValueError) as exc:
        return None, None, f"The original image cannot be read ({exc})."
    pre = exp.preprocessing
    res = compute_cam(_model(path, stamp, arch), pre.to_tensor(pre.to_model_pixels(gray)),
                      None if cls_idx is None else int(cls_idx), method="cam")
    flat = "" if float(res.raw[0].max()) > 0 else "The map is flat: no positive evidence for this class anywhere."
    return overlay(gray, res.normalised[0], alpha=OVERLAY_ALPHA), int(res.class_idx[0]), flat


def compare_heatmap(exp: runs.Experiment, arch: str, row: int, cls_idx: int | None):
    """(overlay RGB or None, explained class, message) of one image (images.parquet row) for class
    ``cls_idx`` (None: the backbone's top class); message says why there is no map, or that it is flat."""
    return _compare_heatmap(str(exp.path), _stamp(exp.path), arch, int(row), cls_idx)


# ---- diagnose page ----

@st.cache_resource(show_spinner="Loading the models…", max_entries=4)
def _diagnose_predictor(path: str, stamp: int):
    from covidviz.inference import Predictor

    exp = _experiment(path, stamp)
    # The models are the shared cached ones (one copy per backbone per process, for every session).
    return Predictor(exp, models={a: _model(path, stamp, a) for a in exp.backbones})


def diagnose_predictor(exp: runs.Experiment):
    """The shared ``covidviz.diagnose.Predictor`` of an experiment (models + analysis artefacts)."""
    return _diagnose_predictor(str(exp.path), _stamp(exp.path))
