"""Compare backbones: which backbone to trust, for which finding, at which threshold, and where they differ.

Sections, all driven by one class selector (a class or the macro average): ROC and precision-recall
curves (AUC with its 95% patient-bootstrap CI in the legend), the per-class table with paired DeLong
tests (CSV download), the operating point (validation presets or a free threshold, marked on the ROC;
confusion matrix, sensitivity/specificity/PPV/NPV, PPV/NPV at another prevalence), calibration
before/after temperature scaling, the disagreement gallery with both backbones' heatmaps, subgroup
AUCs with confounding warnings, and the training curves. Widgets and layout only (numbers, tables and
figures: ``covidviz.views.compare*``). Runs under ``app.py`` or on its own.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from covidviz import runs, ui
from covidviz.data.labels import MULTICLASS
from covidviz.views import compare
from covidviz.views import compare_figures as figures
from covidviz.views import compare_gallery as gallery_view
from covidviz.views import compare_operating as operating
from covidviz.views.style import analyse_command, arch_label, backbone_colours, table_height

WARN = ":material/warning:"


def header(exp, analysis, archs: list[str]) -> tuple[str, tuple[str, str] | None]:
    st.title(f"Compare backbones: {exp.name}")
    st.caption(compare.header_caption(analysis, exp.labels))
    warnings = compare.confounding_for(analysis)
    if warnings:
        st.warning(compare.confounding_banner(len(warnings)), icon=WARN)
    pair = compare.default_pair(archs)
    if len(archs) < 2:
        st.info(compare.one_backbone_text(archs[0]), icon=":material/info:")
    elif len(archs) > 2:
        chosen = st.selectbox("Pair to compare", compare.pair_options(archs), key="cmp_pair", format_func=compare.pair_label,
                              help="The table's differences and the disagreement gallery compare two backbones.")
        pair = compare.parse_pair(chosen)
    cls = st.selectbox("Class", compare.class_options(exp.labels.names), key="cmp_class",
                       help="Drives every section: curves, operating point, calibration, gallery, subgroups.")
    return cls, pair


def curves(analysis, archs, cls, colours, points) -> None:
    st.header("ROC and precision–recall")
    st.caption(compare.CURVES_CAPTION)
    if compare.missing_roc(analysis, archs, cls):
        st.info(f"{cls}: no ROC curve, since the test split has only positives or only negatives for it.")
    if base := compare.baseline_text(analysis, cls):
        st.caption(base)
    left, right = st.columns(2)
    left.plotly_chart(figures.roc_figure(analysis, archs, cls, colours, points), width="stretch", key="cmp_roc")
    if cls == compare.MACRO:
        right.info(compare.mean_ap_text(analysis, archs))
    else:
        right.plotly_chart(figures.pr_figure(analysis, archs, cls, colours), width="stretch", key="cmp_pr")


def class_table(exp, analysis, archs, pair) -> None:
    st.header("Per-class AUC and paired tests")
    table = compare.class_table(analysis, archs, list(exp.labels.names), pair=pair)
    if pair:
        st.caption(compare.difference_caption(*pair, len(exp.labels.names)))
    shown = compare.display_table(table, archs)
    st.dataframe(shown, width="stretch", height=table_height(shown, 17),
                 column_config={"_index": st.column_config.Column(width="medium"),
                                "Test positives": st.column_config.Column("Positives", width="small")})
    st.download_button("Download the table as CSV", table.to_csv(float_format="%.6g").encode(), key="cmp_csv",
                       file_name=f"{exp.name}-per-class-auc.csv", mime="text/csv", icon=":material/download:")


def operating_point(exp, analysis, archs, cls) -> dict:
    """Draws the section; returns arch -> the operating point (for the ROC marker)."""
    st.header("Operating point")
    if cls == compare.MACRO:
        st.info("Thresholds are per class: choose a class above to set an operating point.")
        return {}
    onehot, probs, _ = ui.compare_test(exp)
    j = list(exp.labels.names).index(cls)
    y = onehot[:, j]
    preset = st.radio("Threshold", operating.preset_options(), key="cmp_preset", horizontal=True,
                      format_func=operating.preset_label)
    threshold = st.slider(f"Custom threshold: call {cls} when its probability ≥", 0.0, 1.0, 0.5, 0.001,
                          format="%.3f", key="cmp_threshold", disabled=preset != operating.CUSTOM)
    prevalence = st.slider(f"Prevalence of {cls} in the population you care about (%)", 0.1, 99.9,
                           operating.default_prevalence_percent(y), 0.1, format="%.1f%%", key="cmp_prevalence",
                           help=f"Test split: {operating.test_prevalence(y):.1%}. PPV and NPV depend on it; "
                                "sensitivity and specificity do not.") / 100.0
    scores = {a: probs[a][:, j] for a in archs}
    points, missing = operating.operating_points(analysis, archs, cls, y, scores, preset, threshold, prevalence)
    if preset != operating.CUSTOM:
        st.caption(operating.PRESET_CAPTION)
    if missing:
        st.warning(operating.missing_threshold_text(preset, missing, cls), icon=WARN)
    st.markdown(operating.rates_heading(y, cls))
    st.dataframe(operating.rates_table(points, prevalence=prevalence), width="stretch")
    for col, arch in zip(st.columns(len(archs)), archs):
        c = points[arch]
        col.markdown(f"**{arch_label(arch)}** — confusion matrix at threshold {operating.threshold_text(c)}")
        if c["tp"] is None:
            col.caption("No threshold.")
        else:
            col.dataframe(operating.confusion_frame(c, cls), width="stretch")
    if exp.labels.task == MULTICLASS:
        argmax_confusion(analysis, archs)
    return points


def argmax_confusion(analysis, archs) -> None:
    with st.expander("All classes at once: confusion matrix of the most probable class (no threshold)"):
        for col, arch in zip(st.columns(len(archs)), archs):
            shown = operating.argmax_confusion(analysis, arch)
            if shown is not None:
                col.markdown(shown[1])
                col.dataframe(shown[0], width="stretch")


def calibration(exp, analysis, archs, cls, colours) -> None:
    st.header("Calibration")
    if not compare.has_calibration(analysis, archs):
        st.info("No calibration: the experiment has no validation images to fit a temperature on.")
        return
    task = exp.labels.task
    per_class = compare.calibration_class(task, cls)
    st.caption(compare.reliability_caption(task, cls))
    st.plotly_chart(figures.reliability_figure(analysis, archs, per_class, colours, task), width="stretch",
                    key="cmp_reliability")
    st.dataframe(compare.calibration_table(analysis, archs, cls=per_class), width="stretch")


def _pick(row: int) -> None:
    st.session_state["cmp_pick"] = row


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
    kind = left.radio("Show", list(gallery_view.KINDS), key="cmp_gallery_kind", horizontal=True,
                      format_func=gallery_view.KINDS.get)
    confident = right.slider("'Confidently' means a probability of at least", 0.5, 0.99, 0.8, 0.01, key="cmp_confident")
    frame, rule = gallery_view.select(onehot, probs, pair, task, list(exp.labels.names), cls, points, confident, kind)
    st.caption(gallery_view.summary(frame, len(onehot), rule))
    if not len(frame):
        st.success("No such test images.")
        return
    options = gallery_view.pick_options(frame, rows, exp.images()["image_id"])
    if st.session_state.get("cmp_pick") not in options:
        st.session_state.pop("cmp_pick", None)
    picked = st.selectbox("Image for the heatmaps", list(options), key="cmp_pick", index=None,
                          placeholder="Choose an image (or press Heatmaps under it)", format_func=options.get)
    if picked is not None:
        heatmaps(exp, pair, picked, gallery_view.explained_classes(task, probs, rows, picked, pair, exp.labels.names, cls))
    st.markdown(f"A = {arch_label(pair[0])}, B = {arch_label(pair[1])}. ✗ marks a wrong call.")
    tiles(exp, gallery_view.tiles(frame, rows))


def tiles(exp, shown: list[tuple[int, str]]) -> None:
    """The gallery's thumbnails, ``gallery_view.PER_ROW`` a row, each with its caption and Heatmaps button."""
    thumbs, n = ui.thumbnails(exp), gallery_view.PER_ROW
    for start in range(0, len(shown), n):
        for col, (row, text) in zip(st.columns(n), shown[start:start + n]):
            col.image(np.asarray(thumbs[row]), width="stretch")
            col.caption(text)
            col.button("Heatmaps", key=f"cmp_heat_{row}", on_click=_pick, args=(row,))


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


def subgroups(analysis, archs, cls, colours) -> None:
    st.header("Subgroups")
    sentences = compare.confounding_for(analysis)
    for s in sentences:
        st.warning(f"**Confounding.** {s}", icon=WARN)
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
    st.plotly_chart(figures.subgroup_figure(table, archs, colours, cls), width="stretch", key="cmp_subgroups")
    with st.expander("Subgroup table"):
        st.dataframe(compare.subgroup_display(table, archs), width="stretch", hide_index=True)


def not_analysed(exp, problem: str = "") -> None:
    st.title(f"Compare backbones: {exp.name}")
    st.warning(problem or "This experiment has not been analysed yet, so there are no curves, CIs or tests to "
               "compare.", icon=WARN)
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
    missing = [a for a in exp.backbones if a not in archs]
    if missing:
        st.warning(compare.stale_text(missing, analyse_command(exp.path, ui.REPO)), icon=WARN)
    colours = backbone_colours(exp)
    cls, pair = header(exp, analysis, archs)
    # The operating point is computed before the curves are drawn so the ROC can mark it; the curves
    # go into a container placed above its widgets.
    curves_box = st.container()
    points = operating_point(exp, analysis, archs, cls)
    with curves_box:
        curves(analysis, archs, cls, colours, points)
    class_table(exp, analysis, archs, pair)
    calibration(exp, analysis, archs, cls, colours)
    gallery(exp, archs, pair, cls, points)
    subgroups(analysis, archs, cls, colours)
    ui.training_curves(exp, archs, key="cmp_training")


ui.run_page("Compare backbones", render)
