"""Diagnose page: upload a chest X-ray (or pick a test image) and see what every backbone makes of it.

Sections: a busy state under the title while the models run; input; what the models see; per backbone the
headline and the calls at the chosen operating point (thresholds on the calibrated scale) with what that point
meant on test at a prevalence the user sets; heat maps; similar training images; where the image falls on the
maps and the SOM; a case report. Uploads stay in memory. Widget keys are scoped to the experiment. Widgets and
layout only: ``covidviz.inference`` predicts, ``covidviz.views.diagnose`` and ``diagnose_calls`` shape.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from covidviz import ui
from covidviz.cam import DEFAULT_COLORMAP, METHOD_HELP, METHOD_NAMES, METHODS, OVERLAY_ALPHA
from covidviz.data.imageio import ImageDecodeError, read_image
from covidviz.ui.state import scoped
from covidviz.views import diagnose as view
from covidviz.views import diagnose_calls as calls_view
from covidviz.views.style import ARCH_LABELS, arch_label, table_height

UPLOAD_TYPES = None  # accept any file: unknown types get our own clear message rather than a silent refusal
SOURCE_UPLOAD, SOURCE_TEST = "Upload a file", "Pick a test image of this experiment"


def calls_columns(digits: int) -> dict:
    """The calls table's columns, printed with ``digits`` decimals (enough that no call contradicts them)."""
    fmt = f"%.{digits}f"
    return {"Probability": st.column_config.ProgressColumn("Probability", min_value=0.0, max_value=1.0, format=fmt,
                                                           help=calls_view.CALLS_HELP["Probability"]),
            "Threshold": st.column_config.NumberColumn(format=fmt, help=calls_view.CALLS_HELP["Threshold"])}


def pick_input(exp) -> tuple[str, bytes | None, np.ndarray | None]:
    """(name, raw bytes of an upload or None, decoded gray of a picked test image or None)."""
    source = st.radio("Image", [SOURCE_UPLOAD, SOURCE_TEST], horizontal=True, key=scoped(exp, "diagnose_source"),
                      label_visibility="collapsed")
    if source == SOURCE_TEST:
        return pick_test_image(exp)
    up = st.file_uploader("Chest X-ray: PNG, JPEG or DICOM (frontal view)", type=UPLOAD_TYPES, key=scoped(exp, "diagnose_upload"),
                          help=view.UPLOAD_HELP)
    if up is None:
        st.info(view.UPLOAD_PROMPT, icon=":material/upload:")
        return "", None, None
    return up.name, up.getvalue(), None


def pick_test_image(exp):
    images = ui.images_table(exp)
    if not (images["split"] == "test").any():
        st.warning("This experiment has no test images.")
        return "", None, None
    names, arch0 = list(exp.labels.names), exp.backbones[0]
    predicted = view.predicted_classes(ui.predictions_table(exp, arch0), names)
    c1, c2 = st.columns(2)
    want_labels = c1.multiselect("True label", names, key=scoped(exp, "diagnose_filter_label"), help=view.FILTER_HELP)
    want_pred = c2.selectbox(f"Predicted by {arch_label(arch0)}", ["Any"] + names, key=scoped(exp, "diagnose_filter_pred"))
    choices = view.picker_choices(images, predicted, want_labels, want_pred)
    if not choices:
        st.warning("No test image matches these filters.")
        return "", None, None
    row = st.selectbox(f"Test image ({len(choices)} match)", list(choices), key=scoped(exp, "diagnose_test_row"),
                       format_func=choices.get)
    try:
        gray = read_image(images.at[row, "path"])
    except ImageDecodeError:
        st.warning("The original file of this image is not available here; using its 64 px thumbnail.")
        gray = np.asarray(ui.thumbnails(exp)[row])
    return f"test image {images.at[row, 'image_id']}", None, gray


def preprocessing(exp, decoded, gray: np.ndarray, predictor) -> tuple[np.ndarray, tuple | None]:
    """Original -> windowed -> model input; returns (the windowed film, the custom window or None)."""
    st.subheader("What the models see")
    window = None
    c1, c2, c3 = st.columns(3)
    c1.image(gray, caption="Original (default display)", width="stretch")
    if decoded is not None:
        c1.caption(view.file_caption(decoded))
        if colour := view.colour_warning(decoded.info):
            c1.warning(colour, icon=":material/palette:")
    if decoded is not None and decoded.high_bit_depth:
        with c2:
            slot = st.empty()  # the image first, its controls under it
            if st.toggle("Adjust window / level", key=scoped(exp, "diagnose_window_on"), help=view.WINDOW_HELP):
                w = view.window_controls(decoded.raw, decoded.window)
                level = st.slider("Level (centre)", w.vmin, w.vmax, w.level, key=scoped(exp, "diagnose_level"))
                width = st.slider("Width", w.width_min, w.width_max, w.width, key=scoped(exp, "diagnose_width"))
                window = view.window_from(level, width)
                gray = decoded.windowed(*window)
            slot.image(gray, caption=view.window_caption(window, decoded.window), width="stretch")
    else:
        c2.image(gray, caption="Windowed: not needed (8-bit image)", width="stretch")
    pixels = predictor.model_input(gray)
    c3.image(pixels, caption=view.model_input_caption(pixels), width="stretch")
    if decoded is not None and decoded.patient:
        if st.toggle("Show identifying DICOM fields", key=scoped(exp, "diagnose_show_patient"), help=view.PATIENT_HELP):
            st.json(decoded.patient)
        else:
            st.caption(view.dicom_fields_caption(decoded.patient))
    return gray, window


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


def probabilities(exp, predictor, diag) -> tuple[dict, str]:
    """Per backbone the headline and the calls at the chosen operating point; returns (calls, point)."""
    st.subheader("Predictions")
    st.caption(view.task_caption(exp.labels.task))
    point, chosen = "youden", {}
    if predictor.analysed:
        point, chosen = screening_controls(exp, {a: b.calls for a, b in diag.backbones.items()})
    calls = calls_view.calls_at(predictor, diag, point)
    for col, (arch, b) in zip(st.columns(len(diag.backbones)), diag.backbones.items()):
        with col:
            st.markdown(f"#### {arch_label(arch)}")
            st.markdown(calls_view.headline(calls[arch], b.top, exp.labels.task))
            if b.ood:
                st.caption(view.OOD_NOTE)
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


def heatmaps(exp, predictor, diag, film) -> tuple[dict, dict, str, float]:
    """The heat-map controls and one overlay per backbone; returns (heats, explained class, method, opacity)."""
    st.subheader("Where the models look")
    names = list(exp.labels.names)
    c1, c2, c3, c4 = st.columns([2, 2, 1.3, 2])
    method = c1.selectbox("Method", METHODS, format_func=METHOD_NAMES.get, key=scoped(exp, "diagnose_method"),
                          help="\n\n".join(f"**{METHOD_NAMES[m]}**: {METHOD_HELP[m]}" for m in METHODS))
    target = c2.selectbox("Explain class", [view.TOP_CLASS] + names, key=scoped(exp, "diagnose_target"))
    alpha = c3.slider("Opacity", 0.0, 1.0, OVERLAY_ALPHA, 0.05, key=scoped(exp, "diagnose_alpha"))
    scale_mode = c4.radio("Colour scale", view.SCALE_MODES, key=scoped(exp, "diagnose_scale"), help=view.SCALE_HELP)
    heat_cache = ui.heat_cache()
    heats, explained = {}, {}
    for col, arch in zip(st.columns(len(diag.backbones)), diag.backbones):
        cam = view.explained_map(predictor, diag, arch, method, view.target_class(target, names), heat_cache)
        scale = predictor.fixed_scale(arch, method) if scale_mode == view.SCALE_MODES[1] else None
        heats[arch] = view.heat_for_display(cam, scale)
        explained[arch] = names[int(cam.class_idx[0])]
        png = view.overlay_png(film, heats[arch], alpha, DEFAULT_COLORMAP)
        col.markdown(f"#### {arch_label(arch)}")
        col.image(png, caption=view.heat_caption(method, explained[arch]), width="stretch")
        col.download_button("Download overlay (PNG)", png, file_name=f"{arch}-{method}-{explained[arch]}.png",
                            mime="image/png", key=scoped(exp, f"diagnose_dl_{arch}"), icon=":material/download:")
    st.caption(view.HEAT_NOTE)
    return heats, explained, method, alpha


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
        col.caption(view.similar_caption(b))


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


def report(exp, diag, film, heats, explained, method, alpha, calls, point) -> None:
    st.subheader("Case report")
    png = view.case_report_png(diag, film, heats, list(exp.labels.names), {a: arch_label(a) for a in diag.backbones},
                               method, view.report_identity(exp, diag.backbones), alpha, explained, calls, point,
                               exp.labels.task)
    st.download_button("Download case report (PNG)", png, file_name=f"covidviz-report-{exp.name}.png",
                       mime="image/png", key=scoped(exp, "diagnose_report"), icon=":material/description:")
    st.caption(view.REPORT_NOTE)


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
                                       view.busy_text(predictor.archs, name), METHODS)
    except Exception as exc:  # noqa: BLE001 - show a message, keep the app usable
        st.error(view.process_error(exc), icon=":material/error:")
        return
    message = view.ood_message(diag, ARCH_LABELS)
    if message:
        st.warning(message, icon=":material/warning:")
    calls, point = probabilities(exp, predictor, diag)
    heats, explained, method, alpha = heatmaps(exp, predictor, diag, film)
    similar_images(exp, diag)
    where_it_falls(exp, predictor, diag)
    report(exp, diag, film, heats, explained, method, alpha, calls, point)


ui.run_page("Diagnose", render)
