"""Diagnose page: upload a chest X-ray (or pick a test image) and see what every backbone makes of it.

Sections: input; what the models see (original -> windowed -> model input, window/level for
high-bit-depth files); per backbone the calibrated probabilities and the call at the
validation-chosen threshold with what it meant on test; CAM heat maps with their controls and a PNG
download; the most similar training images; an out-of-distribution check; where the image falls on
the maps and the SOM; a case-report download. Uploads stay in memory (never written to disk).
Runs under ``app.py`` or on its own (``streamlit run app_pages/diagnose.py``).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from covidviz import inference, ui
from covidviz.cam import METHOD_HELP, METHOD_NAMES, METHODS
from covidviz.data.imageio import ImageDecodeError, decode_upload, read_image
from covidviz.views import diagnose as diagnose_view

UPLOAD_TYPES = None  # accept any file: unknown types get our own clear message rather than a silent refusal
SOURCE_UPLOAD, SOURCE_TEST = "Upload a file", "Pick a test image of this experiment"
_CACHE = "_diagnose_cache"  # this session's last decoded image and prediction (bounded: one of each)


def _rate(r) -> str:
    if not r or r.get("value") is None:
        return "—"
    lo, hi = r.get("ci_low"), r.get("ci_high")
    ci = f" ({lo:.2f}–{hi:.2f})" if lo is not None and hi is not None else ""
    return f"{r['value']:.2f}{ci}, n={r.get('n')}"


# ------------------------------------------------------------------------------------------ input

def pick_input(exp) -> tuple[str, bytes | None, np.ndarray | None]:
    """(name, raw bytes of an upload or None, decoded gray of a picked test image or None)."""
    source = st.radio("Image", [SOURCE_UPLOAD, SOURCE_TEST], horizontal=True, key="diagnose_source",
                      label_visibility="collapsed")
    if source == SOURCE_UPLOAD:
        up = st.file_uploader("Chest X-ray: PNG, JPEG or DICOM (frontal view)", type=UPLOAD_TYPES,
                              key="diagnose_upload",
                              help="Processed in memory and never stored. 8/16-bit PNG, JPEG, DICOM "
                                   "(MONOCHROME1/2, rescale, VOI LUT or window) are supported.")
        if up is None:
            st.info("Upload a frontal chest X-ray to see the models' predictions and heat maps, or pick one "
                    "of this experiment's test images above.", icon=":material/upload:")
            return "", None, None
        return up.name, up.getvalue(), None
    return pick_test_image(exp)


def pick_test_image(exp):
    images = ui.images_table(exp)
    test = images[images["split"] == "test"]
    if test.empty:
        st.warning("This experiment has no test images.")
        return "", None, None
    names = list(exp.labels.names)
    arch0 = exp.backbones[0]
    probs = ui.predictions_table(exp, arch0)[[f"p::{n}" for n in names]].to_numpy()
    pred = np.asarray(names)[probs.argmax(1)]
    c1, c2 = st.columns(2)
    want_labels = c1.multiselect("True label", names, key="diagnose_filter_label",
                                 help="Show test images carrying any of these labels (empty: all).")
    want_pred = c2.selectbox(f"Predicted by {ui.arch_label(arch0)}", ["Any"] + names, key="diagnose_filter_pred")
    rows = [int(r) for r in test.index
            if (not want_labels or set(str(test.at[r, "labels"]).split("|")) & set(want_labels))
            and (want_pred == "Any" or pred[r] == want_pred)]
    if not rows:
        st.warning("No test image matches these filters.")
        return "", None, None
    row = st.selectbox(f"Test image ({len(rows)} match)", rows, key="diagnose_test_row",
                       format_func=lambda r: f"{images.at[r, 'image_id']} · label {images.at[r, 'labels'] or '—'} · "
                                             f"predicted {pred[r]}")
    try:
        gray = read_image(images.at[row, "path"])
    except ImageDecodeError:
        st.warning("The original file of this image is not available here; using its 64 px thumbnail.")
        gray = np.asarray(ui.thumbnails(exp)[row])
    return f"test image {images.at[row, 'image_id']}", None, gray


def decode(name: str, data: bytes):
    """Decode once per file (kept in session memory only); returns the DecodedImage or None after a message."""
    digest = hashlib.sha256(data).hexdigest()
    cache = st.session_state.setdefault(_CACHE, {})
    if cache.get("digest") == digest:
        return cache["decoded"], digest
    try:
        decoded = decode_upload(data, name)
    except ImageDecodeError as exc:
        st.error(f"**This file cannot be used.** {exc}", icon=":material/error:")
        st.caption("Upload a frontal chest X-ray as PNG, JPEG or DICOM. The app keeps working: just upload another file.")
        return None, None
    except Exception as exc:  # noqa: BLE001 - a decoder bug must not show a traceback to the user
        st.error(f"**This file could not be read** ({type(exc).__name__}). Upload a PNG, JPEG or DICOM chest X-ray.",
                 icon=":material/error:")
        return None, None
    cache.clear()
    cache.update(digest=digest, decoded=decoded)
    return decoded, digest


# ------------------------------------------------------------------------------------------ preprocessing

def preprocessing(decoded, gray_default: np.ndarray, predictor) -> tuple[np.ndarray, tuple | None]:
    """Original -> windowed -> model input; returns (the windowed film, the custom window or None)."""
    st.subheader("What the models see")
    window = None
    gray = gray_default
    c1, c2, c3 = st.columns(3)
    with c1:
        st.image(gray_default, caption="Original (default display)", width="stretch")
        if decoded is not None:
            info = decoded.info
            st.caption(f"{decoded.kind} · {info.get('width')}×{info.get('height')} px")
            if info.get("mode") in ("RGB", "RGBA", "P", "CMYK", "YCbCr", "LA", "PA"):
                st.warning(f"Colour image ({info['mode']}) converted to grayscale. X-rays are grayscale: a colour "
                           "file may be a photo or a screenshot.", icon=":material/palette:")
    with c2:
        if decoded is not None and decoded.high_bit_depth:
            slot = st.empty()  # the image first, its controls under it
            lo0, hi0 = decoded.window
            vmin, vmax = float(np.nanmin(decoded.raw)), float(np.nanmax(decoded.raw))
            vmax = max(vmax, vmin + 1.0)  # a flat image still gets a usable slider range
            custom = st.toggle("Adjust window / level", key="diagnose_window_on",
                               help="High-bit-depth image: choose which value range is mapped to black..white.")
            if custom:
                span = max(vmax - vmin, 1.0)
                level = st.slider("Level (centre)", vmin, vmax, float(np.clip((lo0 + hi0) / 2, vmin, vmax)),
                                  key="diagnose_level")
                width = st.slider("Width", span / 200, span * 2, float(np.clip(hi0 - lo0, span / 200, span * 2)),
                                  key="diagnose_width")
                window = (level - width / 2, level + width / 2)
                gray = decoded.windowed(*window)
            slot.image(gray, caption=("Custom window " if window else "File's default window ") +
                     f"{(window or decoded.window)[0]:.0f}…{(window or decoded.window)[1]:.0f}", width="stretch")
        else:
            st.image(gray, caption="Windowed: not needed (8-bit image)", width="stretch")
    with c3:
        pixels = predictor.model_input(gray)
        st.image(pixels, caption=f"Model input: {pixels.shape[1]}×{pixels.shape[0]} px, whole film resized, "
                                 "gray repeated to 3 channels, ImageNet-normalised", width="stretch")
    if decoded is not None and decoded.patient:
        if st.toggle("Show identifying DICOM fields", key="diagnose_show_patient", value=False,
                     help="Hidden by default: patient name, ID, dates. Nothing is stored."):
            st.json(decoded.patient)
        else:
            st.caption(f"This DICOM holds {len(decoded.patient)} identifying field(s) (patient name, ID, dates); "
                       "they are hidden and never stored.")
    return gray, window


# ------------------------------------------------------------------------------------------ results

def predict(predictor, gray, name, key):
    cache = st.session_state.setdefault(_CACHE, {})
    if cache.get("pred_key") == key:
        return cache["diagnosis"]
    with st.spinner("Running both backbones…"):
        diag = predictor.predict(gray, name, methods=METHODS)
    cache.update(pred_key=key, diagnosis=diag, heat_cache={})
    st.session_state[ui.UPLOAD_KEY] = diag.session_record()
    return diag


def probabilities(exp, predictor, diag) -> None:
    st.subheader("Predictions")
    multi = exp.labels.task == "multiclass"
    st.caption(("Multi-class: the probabilities of the classes add up to 1. " if multi else
                "Multi-label: each finding has its own probability (they need not add up to 1). ")
               + "Probabilities are temperature-calibrated on validation. The call compares the model's score "
                 "with the threshold chosen on the validation split (Youden's J); \"What each threshold meant\" "
                 "shows what that threshold achieved on the held-out test images (95 % interval, denominator).")
    cols = st.columns(len(diag.backbones))
    for col, (arch, b) in zip(cols, diag.backbones.items()):
        with col:
            st.markdown(f"#### {ui.arch_label(arch)}")
            top = exp.labels.names[b.top]
            st.markdown(f"Most likely: **{top}** (probability {b.probs[b.top]:.2f})")
            if b.ood:
                st.caption(":red[**Unlike the training images** (see the warning above): treat these numbers "
                           "with caution.]")
            rows = []
            for c in b.calls:
                call = ("—" if c["positive"] is None else ("Positive" if c["positive"] else "Negative"))
                rows.append({"Class": c["class"], "Probability": c["prob"], "Call": call,
                             "Model score": c["raw_prob"], "Threshold": c["threshold"]})
            df = pd.DataFrame(rows)
            st.dataframe(df, hide_index=True, width="stretch", column_config={
                "Probability": st.column_config.ProgressColumn("Probability", min_value=0.0, max_value=1.0,
                                                               format="%.3f", help="Calibrated probability"),
                "Threshold": st.column_config.NumberColumn(format="%.3f", help="Validation-chosen (Youden) threshold on the model score"),
                "Model score": st.column_config.NumberColumn(format="%.3f", help="The model's uncalibrated probability, compared with the threshold"),
            })
            st.caption("Positive = model score ≥ threshold. Each class is judged on its own (one-vs-rest), so "
                       "more than one class, or none, can be positive.")
            if not predictor.analysed:
                st.caption("This experiment has not been analysed yet (`python train.py analyze`): no thresholds, "
                           "calibration, similar cases or maps.")
            with st.expander("What each threshold meant on the test images"):
                st.dataframe(pd.DataFrame([{
                    "Class": c["class"], "Sensitivity": _rate(c["test"].get("sensitivity")),
                    "Specificity": _rate(c["test"].get("specificity")), "PPV": _rate(c["test"].get("ppv")),
                    "NPV": _rate(c["test"].get("npv"))} for c in b.calls]), hide_index=True, width="stretch")
                st.caption("PPV and NPV depend on how common each class was in this test set; in another "
                           "population they differ (see the Compare page for other prevalences).")


def heatmaps(exp, predictor, diag, film) -> dict:
    st.subheader("Where the models look")
    names = list(exp.labels.names)
    c1, c2, c3, c4 = st.columns([2, 2, 1.3, 2])
    method = c1.selectbox("Method", METHODS, format_func=lambda m: METHOD_NAMES[m], key="diagnose_method",
                          help="\n\n".join(f"**{METHOD_NAMES[m]}**: {METHOD_HELP[m]}" for m in METHODS))
    target = c2.selectbox("Explain class", ["Top class of each model"] + names, key="diagnose_target")
    alpha = c3.slider("Opacity", 0.0, 1.0, 0.45, 0.05, key="diagnose_alpha")
    scale_mode = c4.radio("Colour scale", ["Per image (min–max)", "Fixed (comparable between images)"],
                          key="diagnose_scale",
                          help="Per image: the strongest spot is always red. Fixed: red means as strong as a "
                               "typical training image's peak, so weak evidence stays dark.")
    colormap = "jet"
    heat_cache = st.session_state[_CACHE].setdefault("heat_cache", {})
    heats, explained_by = {}, {}
    cols = st.columns(len(diag.backbones))
    for col, (arch, b) in zip(cols, diag.backbones.items()):
        cls = None if target.startswith("Top") else names.index(target)
        if cls is None or cls == b.top:
            cam = b.cams[method]
        else:
            key = (arch, method, cls)
            if key not in heat_cache:
                heat_cache[key] = predictor.heatmaps(diag.pixels, arch, cls, (method,))[method]
            cam = heat_cache[key]
        scale = predictor.fixed_scale(arch, method) if scale_mode.startswith("Fixed") else None
        heat = diagnose_view.heat_for_display(cam, scale)
        heats[arch] = heat
        explained = explained_by[arch] = names[int(cam.class_idx[0])]
        png = diagnose_view.overlay_png(film, heat, alpha, colormap)
        with col:
            st.markdown(f"#### {ui.arch_label(arch)}")
            st.image(png, caption=f"{METHOD_NAMES[method]} for {explained}"
                     + (" (class-agnostic)" if method == "eigencam" else ""), width="stretch")
            st.download_button("Download overlay (PNG)", png, file_name=f"{arch}-{method}-{explained}.png",
                               mime="image/png", key=f"diagnose_dl_{arch}", icon=":material/download:")
    st.caption("Red = strongest evidence for the explained class, blue = little. Heat maps show what drives the "
               "score, not where disease is: check that they point at the lungs, not at text markers or edges.")
    return heats, explained_by


def ood_and_similar(exp, predictor, diag) -> None:
    st.subheader("Similar training images")
    images = ui.images_table(exp)
    thumbs = ui.thumbnails(exp)
    cols = st.columns(len(diag.backbones))
    for col, (arch, b) in zip(cols, diag.backbones.items()):
        with col:
            st.markdown(f"#### {ui.arch_label(arch)}")
            if not b.neighbors:
                st.caption("Not available: the experiment has no stored feature maps (run the analysis).")
                continue
            rows = b.neighbors[:inference.K_SIMILAR]
            st.image([np.asarray(thumbs[r]) for r in rows], width=96,
                     caption=[f"{images.at[r, 'labels'] or 'No finding'} · d={d:.1f}"
                              for r, d in zip(rows, b.distances)])
            parts = []
            if b.nn_pct is not None:
                parts.append(f"this image's nearest training image is at d = {b.nn_distance:.1f}, farther than "
                             f"{b.nn_pct:.0f} % of training images are from their own nearest neighbour")
            if b.som_qe_pct is not None:
                parts.append(f"its SOM quantisation error ({b.som_qe:.1f}) is above {b.som_qe_pct:.0f} % of the "
                             "training images'")
            st.caption("The training images closest in the model's feature space, nearest first (label · d = "
                       "distance in standardised PCA-50 units). Out-of-distribution check: "
                       + "; ".join(parts) + ". The page warns above 99 %.")


def where_it_falls(exp, predictor, diag) -> None:
    st.subheader("Where it falls on the maps")
    images = ui.images_table(exp)
    names = list(exp.labels.names)
    cols = st.columns(len(diag.backbones))
    for col, (arch, b) in zip(cols, diag.backbones.items()):
        with col:
            methods = [m for m in ("umap", "tsne", "pca") if m in b.coords]
            if not methods:
                st.caption(f"{ui.arch_label(arch)}: no stored maps.")
                continue
            method = methods[0]
            coords = predictor.map_coords(arch, method)
            fig = go.Figure()
            train = (images["split"] == "train").to_numpy()
            first = images["labels"].astype(str).str.split("|").str[0]
            for i, cls in enumerate(names + ["No finding"]):
                m = train & ((first == cls) if cls != "No finding" else (first == "")).to_numpy()
                if m.any():
                    fig.add_scattergl(x=coords[m, 0], y=coords[m, 1], mode="markers", name=cls,
                                      marker=dict(size=7, color=ui.OKABE_ITO[i % len(ui.OKABE_ITO)], opacity=0.7))
            x, y = b.coords[method]
            fig.add_scatter(x=[x], y=[y], mode="markers", name="This image" + (" (approximate)" if b.ood else ""),
                            marker=dict(symbol="star", size=20, color="#D00000", line=dict(color="black", width=1.5)))
            fig.update_layout(title=f"{ui.arch_label(arch)}: {method.upper() if method == 'pca' else method.replace('tsne', 't-SNE').replace('umap', 'UMAP')} of the training images",
                              height=360, margin=dict(t=40, b=10, l=10, r=10), xaxis=dict(showticklabels=False),
                              yaxis=dict(showticklabels=False), legend=dict(orientation="h", y=-0.05))
            st.plotly_chart(fig, width="stretch", key=f"diagnose_map_{arch}")
            st.caption(("Placed between its nearest training images, but it is far from all of them: the "
                        "position is only indicative. " if b.ood else "Placed between its nearest training images "
                        "(the maps were fitted without it). ") + "Colours: the training images' labels.")
            grid = predictor.som_grid(arch)
            if b.som_node is not None and grid:
                r, c = divmod(b.som_node, grid[1])
                st.caption(f"SOM node {b.som_node} (row {r}, column {c} of {grid[0]}×{grid[1]}). "
                           "The Latent space and SOM pages mark this image too.")


def report(exp, predictor, diag, film, heats, explained) -> None:
    st.subheader("Case report")
    extra = {a: f"initial weights {((exp.backbone(a).get('init') or {}).get('source') or 'unknown')}, "
                f"best epoch {exp.backbone(a).get('best_epoch', '?')}, {exp.preprocessing.image_size} px"
             for a in diag.backbones}
    method = st.session_state.get("diagnose_method", "cam")
    png = diagnose_view.case_report_png(diag, film, heats, list(exp.labels.names),
                                   {a: ui.arch_label(a) for a in diag.backbones}, method, extra,
                                   st.session_state.get("diagnose_alpha", 0.45), explained)
    st.download_button("Download case report (PNG)", png, file_name=f"covidviz-report-{exp.name}.png",
                       mime="image/png", key="diagnose_report", icon=":material/description:")
    st.caption("Image, heat maps, probabilities and calls, model and experiment identity, the research-use notice.")


def render(exp) -> None:
    st.title(f"Diagnose: {exp.name}")
    st.caption("See what each backbone predicts for one chest X-ray, where it looks, and how the image compares "
               "with the training images. Research and teaching tool: not a diagnosis.")
    name, data, gray = pick_input(exp)
    decoded = digest = None
    if data is not None:
        decoded, digest = decode(name, data)
        if decoded is None:
            return
        gray = decoded.gray
    if gray is None:
        return
    try:
        predictor = ui.diagnose_predictor(exp)
    except Exception as exc:  # noqa: BLE001 - missing/corrupt weights: say so, keep the app usable
        st.error(f"The models of experiment '{exp.name}' could not be loaded ({type(exc).__name__}: "
                 f"{str(exc)[:300]}). Retrain it with train.py or pick another experiment.", icon=":material/error:")
        return
    film, window = preprocessing(decoded, gray, predictor)
    key = (str(exp.path), exp.manifest.get("completed"), digest or name, window)
    try:
        diag = predict(predictor, film, name, key)
    except Exception as exc:  # noqa: BLE001 - show a message, keep the app usable
        st.error(f"The models could not process this image ({type(exc).__name__}: {exc}).", icon=":material/error:")
        return
    message = diagnose_view.ood_message(diag, ui.ARCH_LABELS)
    if message:
        st.warning(message, icon=":material/warning:")
    probabilities(exp, predictor, diag)
    heats, explained = heatmaps(exp, predictor, diag, film)
    ood_and_similar(exp, predictor, diag)
    where_it_falls(exp, predictor, diag)
    report(exp, predictor, diag, film, heats, explained)


experiment = ui.page_setup("Diagnose")
if experiment is None:
    ui.no_experiment_help()
else:
    render(experiment)
