"""The Diagnose page's input side: pick the image (an upload, or a test image of the experiment) and
show what the models see (original, windowed, model input). Widgets only; the texts and window maths
are ``covidviz.views.diagnose``'s."""

from __future__ import annotations

import numpy as np
import streamlit as st

from covidviz.data.imageio import ImageDecodeError, read_image
from covidviz.runs.external import list_external
from covidviz.ui.cache import images_table, predictions_table, thumbnails
from covidviz.ui.chrome import DEMO_NAME
from covidviz.ui.diagnose_cache import example_test_row
from covidviz.ui.state import scoped
from covidviz.views import diagnose as view
from covidviz.views import image_name
from covidviz.views.style import arch_label

UPLOAD_TYPES = None  # accept any file: unknown types get our own clear message rather than a silent refusal
SOURCE_UPLOAD, SOURCE_TEST = "Upload a file", "Pick a test image of this experiment"
SOURCE_EXTERNAL = "Pick an image of an external test set"
UPLOAD_LABEL = "Chest X-ray (frontal view): PNG, JPEG or DICOM"


def pick_input(exp) -> tuple[str, bytes | None, np.ndarray | None, str]:
    """(name, raw bytes of an upload or None, decoded gray of a picked test image or None, where it comes
    from: ``views.image_name`` UPLOAD, TEST or EXTERNAL)."""
    sets, _ = list_external(exp.path)
    sources = [SOURCE_UPLOAD, SOURCE_TEST] + ([SOURCE_EXTERNAL] if sets else [])
    # the source beside the uploader: one short row, so that the reading under it fits in the first screen
    c1, c2 = st.columns([2, 3], vertical_alignment="bottom")
    # The demo's films are synthetic (no one has one to upload): it opens on its example test image.
    start = sources.index(SOURCE_TEST if exp.path.name == DEMO_NAME else SOURCE_UPLOAD)
    source = c1.radio(UPLOAD_LABEL, sources, index=start, key=scoped(exp, "diagnose_source"), help=view.UPLOAD_HELP)
    if source == SOURCE_TEST:
        return pick_test_image(exp)
    if source == SOURCE_EXTERNAL:
        return pick_external_image(exp, sets)
    up = c2.file_uploader(UPLOAD_LABEL, type=UPLOAD_TYPES, key=scoped(exp, "diagnose_upload"), help=view.UPLOAD_HELP,
                          label_visibility="collapsed")  # the radio beside it carries the label
    if up is None:
        st.info(view.UPLOAD_PROMPT, icon=":material/upload:")
        st.caption(view.INTRO)
        return "", None, None, image_name.UPLOAD
    return up.name, up.getvalue(), None, image_name.UPLOAD


def pick_test_image(exp):
    images = images_table(exp)
    if not (images["split"] == "test").any():
        st.warning("This experiment has no test images.")
        return "", None, None, image_name.TEST
    names, arch0 = list(exp.labels.names), exp.backbones[0]
    predicted = view.predicted_classes(predictions_table(exp, arch0), names)
    c1, c2 = st.columns(2)
    want_labels = c1.multiselect("True label", names, key=scoped(exp, "diagnose_filter_label"), help=view.FILTER_HELP)
    want_pred = c2.selectbox(f"Predicted by {arch_label(arch0)}", ["Any"] + names, key=scoped(exp, "diagnose_filter_pred"))
    choices = view.picker_choices(images, predicted, want_labels, want_pred)
    if not choices:
        st.warning("No test image matches these filters.")
        return "", None, None, image_name.TEST
    rows = list(choices)
    example = example_test_row(exp, rows)  # opens on a typical one that the verdict passes, not the first listed
    row = st.selectbox(f"Test image ({len(choices)} match)", rows, index=rows.index(example) if example in choices else 0,
                       key=scoped(exp, "diagnose_test_row"), format_func=choices.get)
    try:
        gray = read_image(images.at[row, "path"])
    except ImageDecodeError:
        st.warning("The original file of this image is not available here; using its 64 px thumbnail.")
        gray = np.asarray(thumbnails(exp)[row])
    return image_name.record_name(image_name.TEST, images.at[row, "image_id"]), None, gray, image_name.TEST


def preprocessing(exp, decoded, gray: np.ndarray, predictor) -> tuple[np.ndarray, tuple | None]:
    """Original -> windowed -> model input (the page's image section); returns (the windowed film, the
    custom window or None)."""
    window = None
    c1, c2, c3 = st.columns(3)
    c1.image(gray, caption="Original (default display)", width="stretch")
    if decoded is not None:
        c1.caption(view.file_caption(decoded))
        if colour := view.colour_warning(decoded.info):
            c1.warning(colour, icon=":material/palette:")
        if burned := view.burned_in_warning(decoded.info):
            c1.warning(burned, icon=":material/text_fields:")
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
    else:  # an 8-bit film has no window to choose: the model input sits beside it (no duplicate of the original)
        c3 = c2
    inp = predictor.prepare(gray)  # exactly what the models see (a lung input's crop or mask included)
    c3.image(inp.pixels, caption=view.model_input_caption(inp.pixels, predictor.prep, inp), width="stretch")
    if decoded is not None and decoded.patient:
        if st.toggle("Show identifying DICOM fields", key=scoped(exp, "diagnose_show_patient"), help=view.PATIENT_HELP):
            st.json(decoded.patient)
        else:
            st.caption(view.dicom_fields_caption(decoded.patient))
    return gray, window


def pick_external_image(exp, sets):
    """An image of one of the experiment's external test sets (``train.py evaluate``), like a test image."""
    c1, c2 = st.columns(2)
    by_name = {s.name: s for s in sets}
    site = c1.selectbox("External set", list(by_name), key=scoped(exp, "diagnose_external_site"))
    images = by_name[site].images()
    want = c2.multiselect("True label", list(exp.labels.names), key=scoped(exp, f"diagnose_external_label::{site}"),
                          help=view.FILTER_HELP)
    predicted = view.predicted_classes(by_name[site].predictions(exp.backbones[0]), list(exp.labels.names))
    choices = view.picker_choices(images.assign(split="test"), predicted, want, "Any")
    if not choices:
        st.warning("No image of this set matches the filter.")
        return "", None, None, image_name.EXTERNAL
    row = st.selectbox(f"Image of {site} ({len(choices)} match)", list(choices), format_func=choices.get,
                       key=scoped(exp, f"diagnose_external_row::{site}"))
    try:
        gray = read_image(images.at[row, "path"])
    except ImageDecodeError:
        st.warning("The original file of this image is not available here; using its 64 px thumbnail.")
        gray = np.asarray(by_name[site].thumbnails()[row])
    return image_name.record_name(image_name.EXTERNAL, images.at[row, "image_id"], site), None, gray, image_name.EXTERNAL
