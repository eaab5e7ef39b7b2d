"""Cached loaders of the Compare backbones page (shared by every session; keyed like ``ui.cache``)."""

from __future__ import annotations

import streamlit as st

from covidviz import runs
from covidviz.anatomy.inputs import model_input
from covidviz.cam import DEFAULT_COLORMAP, OVERLAY_ALPHA, compute_cam, overlay
from covidviz.data.imageio import ImageDecodeError, read_image
from covidviz.runs.external import list_external
from covidviz.runs.lungs import LUNGS, LungShares, read_lungs
from covidviz.runs.sources import SOURCES, SourceEvidence, read_sources
from covidviz.ui.cache import _experiment, _model, _stamp
from covidviz.ui.external import site_stamp
from covidviz.ui.state import scoped  # noqa: F401  (re-exported as ``ui.scoped`` for the Compare page's widget keys)
from covidviz.views.external import find_set


def _analysis_stamp(exp: runs.Experiment) -> int:
    """analysis.json's modification time: re-analysing (which leaves the manifest alone) is picked up."""
    try:
        return exp.artifact_path(runs.ANALYSIS).stat().st_mtime_ns
    except OSError:
        return 0


@st.cache_data(show_spinner=False, max_entries=16)
def _compare_analysis(path: str, stamp: int, analysis_stamp: int = 0) -> runs.Analysis | None:
    # A fresh read (not the shared Experiment's memoised copy), so a rewritten file is seen; pickled
    # by st.cache_data, so every session gets its own copy of the frozen Analysis and its dicts.
    return runs.read_experiment(path).analysis()


def compare_analysis(exp: runs.Experiment) -> runs.Analysis | None:
    """The experiment's analysis, typed (None when not analysed yet); raises ``runs.RunFormatError``
    when analysis.json cannot be read."""
    return _compare_analysis(str(exp.path), _stamp(exp.path), _analysis_stamp(exp))


def _lungs_stamp(exp: runs.Experiment) -> tuple:
    """Each backbone's lungs.json modification time (0: absent): a new analysis is picked up."""
    out = []
    for arch in exp.backbones:
        try:
            out.append(exp.artifact_path(LUNGS, arch).stat().st_mtime_ns)
        except OSError:
            out.append(0)
    return tuple(out)


@st.cache_data(show_spinner=False, max_entries=16)
def _compare_lungs(path: str, stamp: int, lungs_stamp: tuple = ()) -> dict[str, LungShares]:
    exp = runs.read_experiment(path)
    return {arch: rec for arch in exp.backbones if (rec := read_lungs(exp, arch)) is not None}


def compare_lungs(exp: runs.Experiment) -> dict[str, LungShares]:
    """arch -> its lung-weight analysis (``runs.lungs.LungShares``), for the backbones that have one;
    raises ``runs.RunFormatError`` when a stored file cannot be read."""
    return _compare_lungs(str(exp.path), _stamp(exp.path), _lungs_stamp(exp))


def _sources_stamp(exp: runs.Experiment) -> int:
    """sources.json's modification time (0: absent): a new analysis is picked up."""
    try:
        return exp.artifact_path(SOURCES).stat().st_mtime_ns
    except OSError:
        return 0


@st.cache_data(show_spinner=False, max_entries=16)
def _compare_sources(path: str, stamp: int, sources_stamp: int = 0) -> SourceEvidence | None:
    return read_sources(runs.read_experiment(path))


def compare_sources(exp: runs.Experiment) -> SourceEvidence | None:
    """The experiment's source probe and within-source AUCs (``runs.sources.SourceEvidence``), None when
    not analysed; raises ``runs.RunFormatError`` when the stored file cannot be read."""
    return _compare_sources(str(exp.path), _stamp(exp.path), _sources_stamp(exp))


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


def _image_path(path: str, stamp: int, row: int, site: str | None) -> str:
    """The original file of row ``row`` of the experiment's images, or of the external set ``site``'s."""
    if site is None:
        return str(_experiment(path, stamp).images().iloc[row]["path"])
    ext = find_set(list_external(path)[0], site)
    if ext is None:
        raise OSError(f"the external set {site} is gone")
    images = ext.images()
    if "path" not in images:
        raise OSError(f"the external set {site} does not record its images' files")
    return str(images.iloc[row]["path"])


@st.cache_data(show_spinner="Computing heatmaps…", max_entries=64)
def _compare_heatmap(path: str, stamp: int, arch: str, row: int, cls_idx: int | None, site: str | None = None,
                     site_stamp: int = 0):
    """(CAM overlay RGB uint8 or None, explained class index or None, message)."""
    exp = _experiment(path, stamp)
    try:
        gray = read_image(_image_path(path, stamp, row, site))
    except (ImageDecodeError, OSError, ValueError) as exc:
        return None, None, f"The original image cannot be read ({exc})."
    pre = exp.preprocessing
    inp = model_input(pre, gray)  # the experiment's model input (a lung input's crop or mask included)
    res = compute_cam(_model(path, stamp, arch), pre.to_tensor(inp.pixels),
                      None if cls_idx is None else int(cls_idx), method="cam")
    flat = "" if float(res.raw[0].max()) > 0 else "The map is flat: no positive evidence for this class anywhere."
    return (overlay(inp.seen(gray), res.normalised[0], alpha=OVERLAY_ALPHA, colormap=DEFAULT_COLORMAP),
            int(res.class_idx[0]), flat)


def compare_heatmap(exp: runs.Experiment, arch: str, row: int, cls_idx: int | None, site: str | None = None):
    """(overlay RGB or None, explained class, message) of one image (images.parquet row; of the external
    set ``site``'s images.parquet when given) for class ``cls_idx`` (None: the backbone's top class); message
    says why there is no map, or that it is flat."""
    return _compare_heatmap(str(exp.path), _stamp(exp.path), arch, int(row), cls_idx, site,
                            site_stamp(exp.path, site) if site else 0)


