"""Compare backbones: which backbone to trust, for which finding, at which threshold, and where they differ.

One class selector (a class or the macro average) drives every section: ROC and PR curves (AUC with its 95% CI),
the per-class table with paired DeLong tests (CSV), the operating point (validation presets or a free threshold,
marked on the ROC; confusion matrices, rates, PPV/NPV at another prevalence), calibration, the disagreement gallery,
subgroup AUCs with confounding warnings, the evidence on the lungs, the shortcut audit, training curves. A "Test set"
selector (``train.py evaluate``) moves every section that can to another site (curves, table, counts, calibration,
gallery, subgroups, lung shares; + internal vs external); the rest say they stay on the internal test split, and a
site that shares hospitals with the training data is flagged (``ui.compare_sections``, ``ui.external``).
Widgets and layout only (numbers, tables, texts: ``views.compare*``, ``views.external``, ``views.shortcuts``). Runs alone.
"""

from __future__ import annotations

import streamlit as st

from covidviz import runs, ui
from covidviz.data.labels import MULTICLASS
from covidviz.ui import compare_sections as sections
from covidviz.ui import external as external_ui
from covidviz.views import compare
from covidviz.views import compare_figures as figures
from covidviz.views import compare_operating as operating
from covidviz.views.style import analyse_command, arch_label, backbone_colours, tables_per_row

WARN = ":material/warning:"


def grid(frames: list) -> list:
    """One container per table, as many side by side as fit a 1280 px window (``tables_per_row``)."""
    n, per_row = len(frames), tables_per_row(frames)
    return [col for start in range(0, n, per_row) for col in st.columns(per_row)[:n - start]]


def header(exp, analysis, archs: list[str]) -> tuple:
    st.title(f"Compare backbones: {exp.name}")
    caption = st.empty()  # filled once the test set is chosen: it says which one the page reads
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
    ext, shown, source = external_ui.test_set_choice(exp, analysis, archs)
    caption.caption(compare.header_caption(analysis, exp.labels, ext))
    return cls, pair, ext, shown, source


def curves(exp, analysis, archs, cls, colours, points, ext=None) -> None:
    st.header("ROC and precision–recall" + (f" on {ext.name}" if ext else ""))
    st.caption(compare.CURVES_CAPTION)
    if compare.missing_roc(analysis, archs, cls):
        st.info(f"{cls}: no ROC curve, since the test set has only positives or only negatives for it.")
    if ext is None and (base := compare.baseline_text(analysis, cls)):
        st.caption(base)
    left, right = st.columns(2)
    ui.plotly_chart(figures.roc_figure(analysis, archs, cls, colours, points), where=left, width="stretch",
                    key=ui.scoped(exp, "cmp_roc"))
    if cls == compare.MACRO:
        right.info(compare.mean_ap_text(analysis, archs))
    else:
        ui.plotly_chart(figures.pr_figure(analysis, archs, cls, colours), where=right, width="stretch",
                        key=ui.scoped(exp, "cmp_pr"))


def class_table(exp, analysis, archs, pair, ext=None) -> None:
    st.header(f"Per-class AUC on {ext.name}" if ext else "Per-class AUC and paired tests")
    table = compare.class_table(analysis, archs, list(exp.labels.names), pair=pair)
    if pair:
        st.caption(compare.difference_caption(*pair, len(exp.labels.names)))
    shown = compare.display_table(table, archs)
    st.table(shown)
    sections.below_chance(shown)
    st.download_button("Download the table as CSV", table.to_csv(float_format="%.6g").encode(), key=ui.scoped(exp, "cmp_csv"),
                       file_name=f"{exp.name}-{ext.name if ext else 'test'}-per-class-auc.csv", mime="text/csv",
                       icon=":material/download:")


def operating_point(exp, analysis, archs, cls, ext=None) -> dict:
    """Draws the section; returns arch -> the operating point (for the ROC marker)."""
    st.header(compare.section_title("Operating point", ext))
    if cls == compare.MACRO:
        st.info("Thresholds are per class: choose a class above to set an operating point.")
        return {}
    onehot, probs = ui.compare_test(exp)[:2] if ext is None else external_ui.site_arrays(exp, ext.name)
    j = list(exp.labels.names).index(cls)
    y = onehot[:, j]
    preset = st.radio("Threshold", operating.preset_options(), key=ui.scoped(exp, "cmp_preset"), horizontal=True,
                      format_func=operating.preset_label)
    threshold = st.slider(operating.custom_label(cls), 0.0, 1.0, 0.5, 0.001,
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
    if exp.labels.task == MULTICLASS:
        argmax_confusion(exp, analysis, archs, None if ext is None else (ext.name, onehot, probs))
    return points


def argmax_confusion(exp, analysis, archs, site=None) -> None:
    """The argmax confusion matrices of the test set shown: the internal split's, or ``site``'s
    ((name, one-hot, arch -> probabilities), counted from its stored scores)."""
    with st.expander("All classes at once: confusion matrix of the most probable class (no threshold)"):
        shown = [operating.argmax_confusion(analysis, arch, site, exp.labels.names) for arch in archs]
        for col, one in zip(grid([s and s[0] for s in shown]), shown):
            if one is not None:
                col.markdown(one[1])
                col.table(one[0])


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
    sections.calibration(exp, analysis, shown, cls, colours, ext)
    sections.gallery(exp, shown, pair, cls, points, ext)
    sections.subgroups(exp, analysis, shown, cls, colours, ext)
    ui.shortcut_section(exp, archs, ext, analysis)
    ui.training_curves(exp, archs, key=ui.scoped(exp, "cmp_training"))


ui.run_page("Compare backbones", render)
