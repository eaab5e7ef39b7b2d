"""Compare backbones: which backbone to trust, for which finding, at which threshold, and where they differ.

One class selector (a class or the macro average) drives every section: ROC and PR curves (AUC with its 95% CI),
the per-class table with paired DeLong tests (CSV), the operating point (validation presets or a free threshold,
marked on the ROC; confusion matrices, rates, PPV/NPV at another prevalence), calibration, the disagreement gallery,
subgroup AUCs with confounding warnings, the evidence on the lungs, the shortcut audit, training curves. A "Test set"
selector (``train.py evaluate``) moves curves, table, counts and lung shares to another site (+ internal vs external).
Widgets and layout only (numbers, tables, texts: ``views.compare*``, ``views.external``, ``views.shortcuts``). Runs alone.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from covidviz import runs, ui
from covidviz.data.labels import MULTICLASS
from covidviz.ui import external as external_ui
from covidviz.views import compare
from covidviz.views import compare_figures as figures
from covidviz.views import compare_gallery as gallery_view
from covidviz.views import compare_operating as operating
from covidviz.views.style import analyse_command, arch_label, backbone_colours, tables_per_row

WARN = ":material/warning:"


def grid(frames: list) -> list:
    """One container per table, as many side by side as fit a 1280 px window (``tables_per_row``)."""
    n, per_row = len(frames), tables_per_row(frames)
    return [col for start in range(0, n, per_row) for col in st.columns(per_row)[:n - start]]


def header(exp, analysis, archs: list[str]) -> tuple:
    st.title(f"Compare backbones: {exp.name}")
    st.caption(compare.header_caption(analysis, exp.labels))
    if warnings := compare.confounding_for(analysis):
        st.warning(compare.confounding_banner(len(warnings)), icon=WARN)
    pair = compare.default_pair(archs)
    if len(archs) < 2:
        st.info(compare.one_backbone_text(archs[0]), icon=":material/info:")
    elif len(archs) > 2:
        chosen = st.selectbox("Pair to compare", compare.pair_options(archs), key=ui.scoped(exp, "cmp_pair"),
                              format_func=compare.pair_label, help=compare.PAIR_HELP)
        pair = compare.parse_pair(chosen)
    cls = st.selectbox("Class", compare.class_options(exp.labels.names), key=ui.scoped(exp, "cmp_class"),
                       help=compare.CLASS_HELP)
    return cls, pair, *external_ui.test_set_choice(exp, analysis, archs)  # + (external set, backbones, source)


def curves(exp, analysis, archs, cls, colours, points, ext=None) -> None:
    st.header("ROC and precision–recall" + (f" on {ext.name}" if ext else ""))
    st.caption(compare.CURVES_CAPTION)
    if compare.missing_roc(analysis, archs, cls):
        st.info(f"{cls}: no ROC curve, since the test set has only positives or only negatives for it.")
    if ext is None and (base := compare.baseline_text(analysis, cls)):
        st.caption(base)
    left, right = st.columns(2)
    left.plotly_chart(figures.roc_figure(analysis, archs, cls, colours, points), width="stretch", key=ui.scoped(exp, "cmp_roc"))
    if cls == compare.MACRO:
        right.info(compare.mean_ap_text(analysis, archs))
    else:
        right.plotly_chart(figures.pr_figure(analysis, archs, cls, colours), width="stretch", key=ui.scoped(exp, "cmp_pr"))


def class_table(exp, analysis, archs, pair, ext=None) -> None:
    st.header(f"Per-class AUC on {ext.name}" if ext else "Per-class AUC and paired tests")
    table = compare.class_table(analysis, archs, list(exp.labels.names), pair=pair)
    if pair:
        st.caption(compare.difference_caption(*pair, len(exp.labels.names)))
    st.table(compare.display_table(table, archs))
    st.download_button("Download the table as CSV", table.to_csv(float_format="%.6g").encode(), key=ui.scoped(exp, "cmp_csv"),
                       file_name=f"{exp.name}-{ext.name if ext else 'test'}-per-class-auc.csv", mime="text/csv",
                       icon=":material/download:")


def operating_point(exp, analysis, archs, cls, ext=None) -> dict:
    """Draws the section; returns arch -> the operating point (for the ROC marker)."""
    st.header("Operating point")
    if cls == compare.MACRO:
        st.info("Thresholds are per class: choose a class above to set an operating point.")
        return {}
    onehot, probs = ui.compare_test(exp)[:2] if ext is None else external_ui.site_arrays(exp, ext.name)
    j = list(exp.labels.names).index(cls)
    y = onehot[:, j]
    preset = st.radio("Threshold", operating.preset_options(), key=ui.scoped(exp, "cmp_preset"), horizontal=True,
                      format_func=operating.preset_label)
    threshold = st.slider(f"Custom threshold: call {cls} when its probability ≥", 0.0, 1.0, 0.5, 0.001,
                          format="%.3f", key=ui.scoped(exp, "cmp_threshold"), disabled=preset != operating.CUSTOM)
    # Keyed per class too: the slider starts at this class's test prevalence, never another class's.
    prevalence = st.slider(f"Prevalence of {cls} in the population you care about (%)", 0.1, 99.9,
                           operating.default_prevalence_percent(y), 0.1, format="%.1f%%",
                           key=ui.scoped(exp, f"cmp_prevalence::{cls}"), help=operating.prevalence_help(y)) / 100.0
    scores = {a: probs[a][:, j] for a in archs}
    points, missing = operating.operating_points(analysis, archs, cls, y, scores, preset, threshold, prevalence)
    st.caption(operating.preset_caption(preset))
    if missing:
        st.warning(operating.missing_threshold_text(preset, missing, cls), icon=WARN)
    st.markdown(operating.rates_heading(y, cls, ext.name if ext else "test"))
    st.table(operating.rates_table(points, prevalence=prevalence))
    frames = [None if points[a]["tp"] is None else operating.confusion_frame(points[a], cls) for a in archs]
    for col, arch, frame in zip(grid(frames), archs, frames):
        col.markdown(f"**{arch_label(arch)}** — confusion matrix at threshold {operating.threshold_text(points[arch])}")
        if frame is None:
            col.caption("No threshold.")
        else:
            col.table(frame)
    if exp.labels.task == MULTICLASS and ext is None:
        argmax_confusion(analysis, archs)
    return points


def argmax_confusion(analysis, archs) -> None:
    with st.expander("All classes at once: confusion matrix of the most probable class (no threshold)"):
        shown = [operating.argmax_confusion(analysis, arch) for arch in archs]
        for col, one in zip(grid([s and s[0] for s in shown]), shown):
            if one is not None:
                col.markdown(one[1])
                col.table(one[0])


def calibration(exp, analysis, archs, cls, colours) -> None:
    st.header("Calibration")
    if not compare.has_calibration(analysis, archs):
        st.info("No calibration: the experiment has no validation images to fit a temperature on.")
        return
    task = exp.labels.task
    per_class = compare.calibration_class(task, cls)
    st.caption(compare.reliability_caption(task, cls))
    st.plotly_chart(figures.reliability_figure(analysis, archs, per_class, colours, task), width="stretch",
                    key=ui.scoped(exp, "cmp_reliability"))
    st.table(compare.calibration_table(analysis, archs, cls=per_class))


def _pick(key: str, row: int) -> None:
    st.session_state[key] = row


def gallery(exp, archs, pair, cls, points) -> None:
    st.header("Where the backbones disagree")
    task = exp.labels.task
    if not pair:
        st.info("The disagreement gallery needs two backbones.")
        return
    if gallery_view.needs_class(task, cls):
        st.info("In a multi-label experiment each finding is decided separately: choose a class above.")
        return
    onehot, probs, rows = ui.compare_test(exp)
    left, right = st.columns([2, 1])
    kind = left.radio("Show", list(gallery_view.KINDS), key=ui.scoped(exp, "cmp_gallery_kind"), horizontal=True,
                      format_func=gallery_view.KINDS.get)
    confident = right.slider("'Confidently' means a probability of at least", 0.5, 0.99, 0.8, 0.01,
                             key=ui.scoped(exp, "cmp_confident"))
    frame, rule = gallery_view.select(onehot, probs, pair, task, list(exp.labels.names), cls, points, confident, kind)
    st.caption(gallery_view.summary(frame, len(onehot), rule))
    if not len(frame):
        st.success("No such test images.")
        return
    options, pick = gallery_view.pick_options(frame, rows, exp.images()["image_id"]), ui.scoped(exp, "cmp_pick")
    if st.session_state.get(pick) not in options:
        st.session_state.pop(pick, None)
    picked = st.selectbox("Image for the heatmaps", list(options), key=pick, index=None,
                          placeholder="Choose an image (or press Heatmaps under it)", format_func=options.get)
    if picked is not None:
        heatmaps(exp, pair, picked, gallery_view.explained_classes(task, probs, rows, picked, pair, exp.labels.names, cls))
    st.markdown(f"A = {arch_label(pair[0])}, B = {arch_label(pair[1])}. ✗ marks a wrong call.")
    tiles(exp, gallery_view.tiles(frame, rows), pick)


def tiles(exp, shown: list[tuple[int, str]], pick: str) -> None:
    """The gallery's thumbnails, ``gallery_view.PER_ROW`` a row, each with its caption and Heatmaps button."""
    thumbs, n = ui.thumbnails(exp), gallery_view.PER_ROW
    for start in range(0, len(shown), n):
        for col, (row, text) in zip(st.columns(n), shown[start:start + n]):
            col.image(np.asarray(thumbs[row]), width="stretch")
            col.caption(text)
            col.button("Heatmaps", key=ui.scoped(exp, f"cmp_heat_{row}"), on_click=_pick, args=(pick, row))


def heatmaps(exp, pair, row: int, explain: dict[str, int]) -> None:
    for col, arch in zip(st.columns(len(pair)), pair):
        heat, explained, problem = ui.compare_heatmap(exp, arch, row, explain[arch])
        with col:
            if heat is None:
                st.warning(f"{arch_label(arch)}: {problem} Showing the thumbnail instead.", icon=WARN)
                st.image(np.asarray(ui.thumbnails(exp)[row]), width=256)
                continue
            if problem:
                st.info(f"{arch_label(arch)}: {problem}")
            st.image(heat, width="stretch", caption=gallery_view.heatmap_caption(
                arch, exp.labels.names[explained], exp.labels.task))


def subgroups(exp, analysis, archs, cls, colours) -> None:
    st.header("Subgroups")
    sentences = compare.confounding_for(analysis)
    for s in sentences:
        st.warning(compare.confounding_warning(s), icon=WARN)
    if not sentences:
        st.caption(compare.NO_CONFOUNDING)
    if source := compare.source_baseline_text(analysis):
        st.caption(source)
    if cls == compare.MACRO:
        st.info("Subgroup AUCs are per class: choose a class above.")
        return
    table = compare.subgroup_table(analysis, archs, cls)
    if table.empty:
        st.info("No subgroup attribute (source, sex, age, view) has two or more groups in the test split.")
        return
    st.caption(compare.SUBGROUP_CAPTION)
    st.plotly_chart(figures.subgroup_figure(table, archs, colours, cls), width="stretch", key=ui.scoped(exp, "cmp_subgroups"))
    with st.expander("Subgroup table"):
        st.table(compare.subgroup_display(table, archs))


def not_analysed(exp, problem: str = "") -> None:
    st.title(f"Compare backbones: {exp.name}")
    st.warning(problem or compare.NOT_ANALYSED, icon=WARN)
    st.markdown(f"Run this in `{ui.REPO}`, then reload the page:")
    st.code(analyse_command(exp.path, ui.REPO), language="bash")


def render(exp) -> None:
    try:
        analysis = ui.compare_analysis(exp)
    except runs.RunFormatError as exc:
        not_analysed(exp, f"The analysis of this experiment cannot be read ({exc}); run the analysis again.")
        return
    archs = [] if analysis is None else compare.analysed_backbones(analysis, list(exp.backbones))
    if not archs:
        not_analysed(exp)
        return
    if missing := [a for a in exp.backbones if a not in archs]:
        st.warning(compare.stale_text(missing, analyse_command(exp.path, ui.REPO)), icon=WARN)
    colours = backbone_colours(exp)
    cls, pair, ext, shown, source = header(exp, analysis, archs)
    curves_box = st.container()  # above the operating point's widgets: the ROC marks the operating points
    points = operating_point(exp, analysis, shown, cls, ext)
    with curves_box:
        curves(exp, source, shown, cls, colours, points, ext)
    class_table(exp, source, shown, pair if ext is None else None, ext)
    external_ui.internal_vs_external(exp, analysis, archs, ext)
    calibration(exp, analysis, archs, cls, colours)
    gallery(exp, archs, pair, cls, points)
    subgroups(exp, analysis, archs, cls, colours)
    ui.shortcut_section(exp, archs, ext)
    ui.training_curves(exp, archs, key=ui.scoped(exp, "cmp_training"))


ui.run_page("Compare backbones", render)
