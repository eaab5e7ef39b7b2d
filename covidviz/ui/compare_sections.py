"""The Compare page's sections that follow the "Test set" choice beyond the curves: calibration, the
disagreement gallery (with its heat maps) and the subgroups, each on the chosen external set when one is
chosen (its stored calibration and subgroup rows, its images and thumbnails), and the caption that a
section staying on the internal test split carries (widgets only; numbers and texts: ``views.compare*``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import streamlit as st

from covidviz.ui import external as external_ui
from covidviz.ui.cache import thumbnails as experiment_thumbnails
from covidviz.ui.compare_cache import compare_heatmap, compare_test
from covidviz.ui.state import scoped
from covidviz.ui.widgets import plotly_chart
from covidviz.views import compare
from covidviz.views import compare_figures as figures
from covidviz.views import compare_gallery as gallery_view
from covidviz.views.external import SiteMetrics
from covidviz.views.style import arch_label

WARN = ":material/warning:"


def internal_only(analysis, ext, what: str = "This section") -> None:
    """The caption of a section that stays on the internal test split while an external set is chosen."""
    if text := compare.internal_only_caption(analysis, ext, what):
        st.caption(text)


def below_chance(*frames) -> None:
    """The caption under AUC tables where a cell is marked worse than chance."""
    if text := compare.below_chance_note(*frames):
        st.caption(text)


# ---------------------------------------------------------------- calibration

def calibration(exp, analysis, archs, cls, colours, ext=None) -> None:
    st.header(compare.section_title("Calibration", ext))
    source = analysis if ext is None else SiteMetrics(ext)
    if not compare.has_calibration(source, archs):
        st.info("No calibration: the experiment has no validation images to fit a temperature on."
                if ext is None else f"No calibration stored for {ext.name}: re-run `train.py evaluate` for it.")
        internal_only(analysis, ext)
        return
    task = exp.labels.task
    per_class = compare.calibration_class(task, cls)
    st.caption(compare.reliability_caption(task, cls, ext))
    plotly_chart(figures.reliability_figure(source, archs, per_class, colours, task), width="stretch",
                    key=scoped(exp, "cmp_reliability"))
    st.table(compare.calibration_table(source, archs, cls=per_class, where="test" if ext is None else ext.name))


# ---------------------------------------------------------------- the disagreement gallery

@dataclass(frozen=True)
class GallerySet:
    """The images the gallery reads: the internal test split or an external set."""

    onehot: np.ndarray
    probs: dict
    rows: np.ndarray        # row of each image in its images table (and its thumbnails)
    image_ids: list
    thumbs: np.ndarray
    site: str | None        # None: the experiment's own images
    where: str              # "test" or the set's name, as the captions say it

    def key(self, exp, name: str) -> str:
        """Widget keys per set: row 3 of one set is not row 3 of another."""
        return scoped(exp, name if self.site is None else f"{name}@{self.site}")


def gallery_set(exp, ext=None) -> GallerySet | None:
    if ext is None:
        onehot, probs, rows = compare_test(exp)
        return GallerySet(onehot, probs, rows, list(exp.images()["image_id"]), experiment_thumbnails(exp), None, "test")
    arrays, images = external_ui.site_arrays(exp, ext.name), external_ui.site_images(exp, ext.name)
    if arrays is None or images is None:
        return None
    table, thumbs = images
    return GallerySet(arrays[0], arrays[1], np.arange(len(table)), list(table["image_id"].astype(str)), thumbs,
                      ext.name, ext.name)


def _pick(key: str, row: int) -> None:
    st.session_state[key] = row


def gallery(exp, archs, pair, cls, points, ext=None) -> None:
    st.header(compare.section_title("Where the backbones disagree", ext))
    task = exp.labels.task
    if not pair:
        st.info("The disagreement gallery needs two backbones.")
        return
    if gallery_view.needs_class(task, cls):
        st.info("In a multi-label experiment each finding is decided separately: choose a class above.")
        return
    data = gallery_set(exp, ext)
    if data is None or any(a not in data.probs for a in pair):
        st.info(f"{ext.name} has no scores of both backbones: re-run `train.py evaluate` for it.")
        return
    left, right = st.columns([2, 1])
    kind = left.radio("Show", list(gallery_view.KINDS), key=scoped(exp, "cmp_gallery_kind"), horizontal=True,
                      format_func=gallery_view.KINDS.get)
    confident = right.slider("'Confidently' means a probability of at least", 0.5, 0.99, 0.8, 0.01,
                             key=scoped(exp, "cmp_confident"))
    frame, rule = gallery_view.select(data.onehot, data.probs, pair, task, list(exp.labels.names), cls, points,
                                      confident, kind)
    st.caption(gallery_view.summary(frame, len(data.onehot), rule, data.where))
    if not len(frame):
        st.success(f"No such {data.where} images.")
        return
    options, pick = gallery_view.pick_options(frame, data.rows, data.image_ids), data.key(exp, "cmp_pick")
    if st.session_state.get(pick) not in options:
        st.session_state.pop(pick, None)
    picked = st.selectbox("Image for the heatmaps", list(options), key=pick, index=None,
                          placeholder="Choose an image (or press Heatmaps under it)", format_func=options.get)
    if picked is not None:
        heatmaps(exp, data, pair, picked, gallery_view.explained_classes(task, data.probs, data.rows, picked, pair,
                                                                         exp.labels.names, cls))
    st.markdown(f"A = {arch_label(pair[0])}, B = {arch_label(pair[1])}. ✗ marks a wrong call.")
    tiles(exp, data, gallery_view.tiles(frame, data.rows), pick)


def tiles(exp, data: GallerySet, shown: list[tuple[int, str]], pick: str) -> None:
    """The gallery's thumbnails, ``gallery_view.PER_ROW`` a row, each with its caption and Heatmaps button."""
    n = gallery_view.PER_ROW
    for start in range(0, len(shown), n):
        for col, (row, text) in zip(st.columns(n), shown[start:start + n]):
            col.image(np.asarray(data.thumbs[row]), width="stretch")
            col.caption(text)
            col.button("Heatmaps", key=data.key(exp, f"cmp_heat_{row}"), on_click=_pick, args=(pick, row))


def heatmaps(exp, data: GallerySet, pair, row: int, explain: dict[str, int]) -> None:
    for col, arch in zip(st.columns(len(pair)), pair):
        heat, explained, problem = compare_heatmap(exp, arch, row, explain[arch], data.site)
        with col:
            if heat is None:
                st.warning(f"{arch_label(arch)}: {problem} Showing the thumbnail instead.", icon=WARN)
                st.image(np.asarray(data.thumbs[row]), width=256)
                continue
            if problem:
                st.info(f"{arch_label(arch)}: {problem}")
            st.image(heat, width="stretch", caption=gallery_view.heatmap_caption(
                arch, exp.labels.names[explained], exp.labels.task))


# ---------------------------------------------------------------- subgroups

def subgroups(exp, analysis, archs, cls, colours, ext=None) -> None:
    st.header(compare.section_title("Subgroups", ext))
    sentences = compare.confounding_for(analysis)
    if ext is not None:
        st.caption(compare.confounding_scope_text(ext))
    for s in sentences:
        st.warning(compare.confounding_warning(s), icon=WARN)
    if not sentences:
        st.caption(compare.NO_CONFOUNDING)
    if source := compare.source_baseline_text(analysis):
        st.caption(source)
    if cls == compare.MACRO:
        st.info("Subgroup AUCs are per class: choose a class above.")
        return
    table = compare.subgroup_table(analysis if ext is None else SiteMetrics(ext), archs, cls)
    if table.empty:
        st.info("No subgroup attribute (source, sex, age, view) has two or more groups in "
                + ("the test split." if ext is None else f"{ext.name}."))
        return
    st.caption(compare.SUBGROUP_CAPTION)
    plotly_chart(figures.subgroup_figure(table, archs, colours, cls, "Test" if ext is None else ext.name),
                    width="stretch", key=scoped(exp, "cmp_subgroups"))
    with st.expander("Subgroup table"):
        shown = compare.subgroup_display(table, archs)
        st.table(shown)
        below_chance(shown)
