"""Diagnose page: upload a chest X-ray (or pick a test image) and see what every backbone makes of it.

At the top, inside the first screen, the reading: the image's one out-of-distribution verdict, the film and
each backbone's heat map (with the lung outline) side by side, each with its top class, calibrated
probability and call, what the model knows about that class (test AUC with its CI, sensitivity and
specificity at the operating point) and the shortcut audit's badge. Under it a banner when the models are
weak, then sections a reader opens in the order they ask: the calls class by class (operating point,
prevalence, what the point meant on test), the heat-map settings and evidence on the lungs, "Test this
explanation", similar training images, where the image falls on the maps and the SOM, the image itself
(file, window / level, model input) and the case report. An out-of-distribution image's calls, maps,
similar images, what-ifs and placements are withheld behind one "show anyway" toggle. Uploads stay in
memory; widget keys are scoped to the experiment. Widgets and layout only: ``covidviz.inference``
predicts, ``covidviz.views.diagnose``, ``diagnose_calls``, ``reliability`` and ``report`` shape.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from covidviz import ui
from covidviz.cam import METHODS
from covidviz.ui.diagnose_heatmaps import compute_maps, film_only, heat_controls, heat_details
from covidviz.ui.diagnose_input import pick_input, preprocessing
from covidviz.ui.diagnose_reading import reading, verdict
from covidviz.ui.diagnose_whatif import what_if_section
from covidviz.ui.state import scoped
from covidviz.views import diagnose as view
from covidviz.views import diagnose_calls as calls_view
from covidviz.views import reliability as rel
from covidviz.views import report as report_view
from covidviz.views.style import arch_label


def screening_controls(exp, calls) -> tuple[str, dict]:
    """The operating point and a prevalence the user sets for one class; returns (point, {class: share})."""
    c1, c2, c3 = st.columns([3, 2, 2])
    point = c1.selectbox(calls_view.SCREENING_TITLE, calls_view.point_options(), format_func=calls_view.point_label,
                         key=scoped(exp, "diagnose_point"), help=calls_view.POINT_HELP)
    cls = c2.selectbox("Prevalence in your setting, of", list(exp.labels.names), key=scoped(exp, "diagnose_prev_class"),
                       help=calls_view.PREVALENCE_HELP)
    default = calls_view.default_prevalence_percent(calls_view.prevalence_on_test(calls, cls))
    percent = c3.number_input(f"{cls} prevalence (%)", *calls_view.PREVALENCE_RANGE, value=default, step=0.5,
                              format="%.1f", key=scoped(exp, f"diagnose_prevalence::{cls}"))
    return point, calls_view.chosen_prevalence(cls, percent, default)


def probabilities(exp, predictor, diag, shown: bool, findings: dict) -> tuple[dict, str]:
    """The calls section: per backbone the headline, the one-vs-rest reading and every class's call with
    its reliability (all rows, every column: ``st.table``), then what the operating point meant on test.
    ``shown`` False: the image failed the OOD check and the calls are withheld (the report withholds them too)."""
    if not shown:
        st.info(view.WITHHELD, icon=":material/visibility_off:")
        return calls_view.calls_at(predictor, diag, "youden"), "youden"
    if diag.ood:
        st.markdown(view.SHOWN_ANYWAY)
    st.caption(view.task_caption(exp.labels.task))
    point, chosen = "youden", {}
    if predictor.analysed:
        point, chosen = screening_controls(exp, {a: b.calls for a, b in diag.backbones.items()})
    calls = calls_view.calls_at(predictor, diag, point)
    for arch, b in diag.backbones.items():  # one table per backbone, the page's full width: no column clipped
        st.markdown(f"#### {arch_label(arch)}")
        lines = [calls_view.headline(calls[arch], b.top, exp.labels.task),
                 calls_view.screening_sentence(calls[arch], b.top, exp.labels.task, point)]
        st.markdown("  \n".join(line for line in lines if line))
        if calls_view.has_thresholds(calls[arch]):
            st.caption(calls_view.one_vs_rest_note(calls[arch], exp.labels.task))
        table = calls_view.calls_table(calls[arch], findings, arch)
        st.table(calls_view.styled_calls(table, calls_view.decimals(calls[arch]), greyed=diag.ood), hide_index=True)
        if raw := calls_view.raw_thresholds_line(calls[arch]):
            st.caption(raw)
    if not predictor.analysed:
        st.caption(view.NOT_ANALYSED)
        return calls, point
    st.caption(rel.READING_NOTE + " " + calls_view.CALLS_NOTE)
    st.markdown(f"**{calls_view.rates_heading(point)}**")
    for arch, rows in calls.items():
        st.markdown(arch_label(arch))
        st.table(calls_view.greyed(calls_view.rates_table(rows, chosen), diag.ood), hide_index=True)
    st.caption(calls_view.RATES_NOTE)
    return calls, point


def similar_images(exp, diag) -> None:
    images, thumbs = ui.images_table(exp), ui.thumbnails(exp)
    if diag.ood:
        st.caption(view.SHOWN_ANYWAY)
    for col, (arch, b) in zip(st.columns(len(diag.backbones)), diag.backbones.items()):
        col.markdown(f"#### {arch_label(arch)}")
        if not b.neighbors:
            col.caption("Not available: the experiment has no stored feature maps (run the analysis).")
            continue
        rows, captions = view.similar_images(images, b)
        col.image([np.asarray(thumbs[r]) for r in rows], width=96, caption=captions)
        col.caption(view.similar_caption(b, diag.verdict))


def where_it_falls(exp, predictor, diag) -> None:
    images = ui.images_table(exp)
    if diag.ood:
        st.caption(view.SHOWN_ANYWAY)
    for col, (arch, b) in zip(st.columns(len(diag.backbones)), diag.backbones.items()):
        method = view.map_method(b)
        if method is None:
            col.caption(f"{arch_label(arch)}: no stored maps.")
            continue
        fig = view.placement_figure(images, predictor.map_coords(arch, method), list(exp.labels.names), b, method)
        ui.plotly_chart(fig, where=col, width="stretch", key=scoped(exp, f"diagnose_map_{arch}"))
        col.caption(view.placement_caption(b.ood))
        som = view.som_caption(b.som_node, predictor.som_grid(arch))
        if som:
            col.caption(som)


def report(exp, case: report_view.CaseReport, shown) -> None:
    png = report_view.case_report_png(case, shown.film, shown.heats, shown.alpha, shown.lungs)
    st.download_button("Download case report (PNG)", png, file_name=f"covidviz-report-{exp.name}.png",
                       mime="image/png", key=scoped(exp, "diagnose_report"), icon=":material/description:")
    st.caption(report_view.REPORT_NOTE)


def render(exp) -> None:
    st.title(f"Diagnose: {exp.name}")
    busy = st.empty()  # the busy state, where the eye is after an upload (not below the fold)
    name, data, gray, source = pick_input(exp)
    try:  # as the page opens, under the uploader: the first upload then runs as fast as the next
        with busy.container():  # "Loading the models of EXP…" where the eye is
            predictor = ui.diagnose_predictor(exp)
    except Exception as exc:  # noqa: BLE001 - missing/corrupt weights: say so, keep the app usable
        st.error(view.load_error(exp, exc), icon=":material/error:")
        return
    gray, decoded, digest = ui.input_film(name, data, gray)
    if gray is None:
        return
    top, banner = st.container(), st.container()  # the reading, filled once the sections' widgets have run
    warned = bool(view.file_warnings(decoded))
    sections = {k: st.expander(label, expanded=k == "image" and warned, icon=":material/warning:" if k == "image"
                               and warned else None) for k, label in view.SECTIONS.items()}
    with sections["image"]:
        film, window = preprocessing(exp, decoded, gray, predictor)
    key = view.prediction_key(exp, digest or name, window)
    try:
        diag = ui.diagnosis_in_session(predictor, film, name, key, busy, view.busy_text(predictor.archs, name), METHODS,
                                       image=decoded, source=source)
    except Exception as exc:  # noqa: BLE001 - show a message, keep the app usable
        top.error(view.process_error(exc), icon=":material/error:")
        return
    with top:
        show = verdict(exp, diag)
    findings = rel.shortcut_findings(ui.shortcut_audit(exp))
    with sections["calls"]:
        calls, point = probabilities(exp, predictor, diag, show, findings)
    with sections["maps"]:
        if show:
            shown = compute_maps(exp, predictor, diag, film, heat_controls(exp, predictor), greyed=diag.ood)
            heat_details(exp, diag, shown, predictor.prep.image_size)
        else:
            shown = film_only(predictor, diag, film)
            st.info(view.WITHHELD_SECTION, icon=":material/visibility_off:")
    with top:
        reading(diag, shown, calls, findings, show, exp.labels.task)
    weak = rel.low_auc_banner(rel.macro_aucs(exp, predictor.analysis))
    if weak:
        banner.warning(weak, icon=":material/trending_down:")
    for k in ("whatif", "similar", "place"):
        if not show:
            sections[k].info(view.WITHHELD_SECTION, icon=":material/visibility_off:")
    if show:
        with sections["whatif"]:
            what_if_section(exp, predictor, diag, shown.cams, shown.method, shown.layer, key)
        with sections["similar"]:
            similar_images(exp, diag)
        with sections["place"]:
            where_it_falls(exp, predictor, diag)
    case = report_view.CaseReport(diag, list(exp.labels.names), exp.labels.task,
                                  {a: arch_label(a) for a in diag.backbones},
                                  report_view.report_identity(exp, diag.backbones), shown.method,
                                  shown.explained or None, calls, point, show_anyway=show and diag.ood,
                                  lung_weights=shown.lung_weights if show else {}, findings=findings, weak=weak,
                                  som_grids={a: predictor.som_grid(a) for a in diag.backbones})
    with sections["report"]:
        report(exp, case, shown)


ui.run_page("Diagnose", render)
