"""Diagnose page: upload a chest X-ray (or pick a test image) and see what every backbone makes of it.

Sections: a busy state under the title while the models run; input; what the models see; per backbone the
headline and the calls at the chosen operating point (thresholds on the calibrated scale) with what that point
meant on test at a prevalence the user sets; heat maps; similar training images; where the image falls on the
maps and the SOM; a case report. The heat maps (and the film beside them) carry the lung outline and each map its
share of weight on the lungs. Uploads stay in memory. Widget keys are scoped to the experiment. Widgets and
layout only: ``covidviz.inference`` predicts, ``covidviz.views.diagnose``, ``diagnose_calls`` and ``report`` shape.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from covidviz import ui
from covidviz.cam import METHODS
from covidviz.ui.diagnose_heatmaps import ShownMaps, heatmaps_section
from covidviz.ui.diagnose_input import pick_input, preprocessing
from covidviz.ui.diagnose_whatif import what_if_section
from covidviz.ui.state import scoped
from covidviz.views import diagnose as view
from covidviz.views import diagnose_calls as calls_view
from covidviz.views import report as report_view
from covidviz.views.style import ARCH_LABELS, arch_label, table_height


def calls_columns(digits: int) -> dict:
    """The calls table's columns, printed with ``digits`` decimals (enough that no call contradicts them)."""
    fmt = f"%.{digits}f"
    return {"Probability": st.column_config.ProgressColumn("Probability", min_value=0.0, max_value=1.0, format=fmt,
                                                           help=calls_view.CALLS_HELP["Probability"]),
            "Threshold": st.column_config.NumberColumn(format=fmt, help=calls_view.CALLS_HELP["Threshold"])}


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


def ood_verdict(exp, diag) -> bool:
    """The image's one out-of-distribution verdict, shown once above the results; returns whether the
    predictions are shown (always for an in-distribution image; for an OOD one, only on request)."""
    message = view.ood_message(diag, ARCH_LABELS)
    if not message:
        st.markdown(view.verdict_caption(diag) or "")
        return True
    st.warning(message, icon=":material/warning:")
    return st.toggle(view.SHOW_ANYWAY, key=scoped(exp, f"diagnose_show_anyway::{diag.name}"))  # asked per image


def probabilities(exp, predictor, diag, shown: bool) -> tuple[dict, str]:
    """Per backbone the headline and the calls at the chosen operating point; returns (calls, point).
    ``shown`` False: the image failed the OOD check and the calls are withheld (the report withholds them too)."""
    st.subheader("Predictions")
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
    for col, (arch, b) in zip(st.columns(len(diag.backbones)), diag.backbones.items()):
        with col:
            st.markdown(f"#### {arch_label(arch)}")
            st.markdown(calls_view.headline(calls[arch], b.top, exp.labels.task))
            if sentence := calls_view.screening_sentence(calls[arch], b.top, exp.labels.task, point):
                st.markdown(sentence)
            st.dataframe(calls_view.calls_table(calls[arch]), hide_index=True, width="stretch",
                         column_config=calls_columns(calls_view.decimals(calls[arch])))
    if not predictor.analysed:
        st.caption(view.NOT_ANALYSED)
        return calls, point
    st.caption(calls_view.CALLS_NOTE)
    with st.expander(calls_view.rates_heading(point)):
        for arch, rows in calls.items():  # one table per backbone: it fits the page's width
            rates = calls_view.rates_table(rows, chosen)
            st.markdown(f"**{arch_label(arch)}**")
            st.dataframe(rates, hide_index=True, width="stretch", height=table_height(rates))
        st.caption(calls_view.RATES_NOTE)
    return calls, point


def similar_images(exp, diag) -> None:
    st.subheader("Similar training images")
    images, thumbs = ui.images_table(exp), ui.thumbnails(exp)
    for col, (arch, b) in zip(st.columns(len(diag.backbones)), diag.backbones.items()):
        col.markdown(f"#### {arch_label(arch)}")
        if not b.neighbors:
            col.caption("Not available: the experiment has no stored feature maps (run the analysis).")
            continue
        rows, captions = view.similar_images(images, b)
        col.image([np.asarray(thumbs[r]) for r in rows], width=96, caption=captions)
        col.caption(view.similar_caption(b, diag.verdict))


def where_it_falls(exp, predictor, diag) -> None:
    st.subheader("Where it falls on the maps")
    images = ui.images_table(exp)
    for col, (arch, b) in zip(st.columns(len(diag.backbones)), diag.backbones.items()):
        method = view.map_method(b)
        if method is None:
            col.caption(f"{arch_label(arch)}: no stored maps.")
            continue
        fig = view.placement_figure(images, predictor.map_coords(arch, method), list(exp.labels.names), b, method)
        col.plotly_chart(fig, width="stretch", key=scoped(exp, f"diagnose_map_{arch}"))
        col.caption(view.placement_caption(b.ood))
        som = view.som_caption(b.som_node, predictor.som_grid(arch))
        if som:
            col.caption(som)


def report(exp, case: report_view.CaseReport, shown: ShownMaps) -> None:
    st.subheader("Case report")
    png = report_view.case_report_png(case, shown.film, shown.heats, shown.alpha, shown.lungs)
    st.download_button("Download case report (PNG)", png, file_name=f"covidviz-report-{exp.name}.png",
                       mime="image/png", key=scoped(exp, "diagnose_report"), icon=":material/description:")
    st.caption(report_view.REPORT_NOTE)


def render(exp) -> None:
    st.title(f"Diagnose: {exp.name}")
    st.caption(view.INTRO)
    busy = st.empty()  # the busy state, where the eye is after an upload (not below the fold)
    name, data, gray = pick_input(exp)
    gray, decoded, digest = ui.input_film(name, data, gray)
    if gray is None:
        return
    try:
        with busy.container():  # "Loading the models…" shows up there too
            predictor = ui.diagnose_predictor(exp)
    except Exception as exc:  # noqa: BLE001 - missing/corrupt weights: say so, keep the app usable
        st.error(view.load_error(exp, exc), icon=":material/error:")
        return
    film, window = preprocessing(exp, decoded, gray, predictor)
    try:
        diag = ui.diagnosis_in_session(predictor, film, name, view.prediction_key(exp, digest or name, window), busy,
                                       view.busy_text(predictor.archs, name), METHODS, image=decoded)
    except Exception as exc:  # noqa: BLE001 - show a message, keep the app usable
        st.error(view.process_error(exc), icon=":material/error:")
        return
    show_anyway = ood_verdict(exp, diag)
    calls, point = probabilities(exp, predictor, diag, show_anyway)
    shown = heatmaps_section(exp, predictor, diag, film)
    what_if_section(exp, predictor, diag, shown.cams, shown.method, shown.layer,
                    view.prediction_key(exp, digest or name, window))
    similar_images(exp, diag)
    where_it_falls(exp, predictor, diag)
    case = report_view.CaseReport(diag, list(exp.labels.names), exp.labels.task,
                                  {a: arch_label(a) for a in diag.backbones},
                                  report_view.report_identity(exp, diag.backbones), shown.method, shown.explained,
                                  calls, point, show_anyway=show_anyway, lung_weights=shown.lung_weights)
    report(exp, case, shown)


ui.run_page("Diagnose", render)
