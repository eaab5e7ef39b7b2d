"""Latent space page: each backbone's t-SNE / UMAP / PCA map of the images, linked to the images.

Pick a backbone, a map and a colouring; draw a box or lasso on a map (or click a point) and the
selected images appear in a paged gallery with their class mix and a CSV export; open any of them
to see the full image, the probabilities and the CAM heatmaps. Both backbones can be shown side by
side with the selection highlighted in each (rows of images.parquet are the shared identity). The
diagnose page's upload, when there is one, is a star with its nearest neighbours ringed.
Runs under ``app.py`` or on its own (``streamlit run app_pages/latent.py``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from covidviz import ui
from covidviz.views import latent

SEL = "latent_selection"        # selected images.parquet rows (list of int), shared by both maps
SIGS = "latent_signatures"      # chart key -> signature of the selection last seen on it
OPEN = "latent_open"            # the opened image's row, or None
PAGE = "latent_gallery_page"
UPLOAD = "upload"               # written by the diagnose page (see covidviz.latent.upload_for)
GALLERY_COLUMNS = 6
EMPTY = latent.selection_signature(None)


def chart_key(arch: str) -> str:
    return f"latent_map_{arch}"


def sync_selection(archs: list[str]) -> None:
    """Adopt the selection of the map the user changed last; clicking one point opens it."""
    sigs = st.session_state.setdefault(SIGS, {})
    for arch in archs:
        state = st.session_state.get(chart_key(arch))
        sel = (state or {}).get("selection") if state is not None else None
        sig = latent.selection_signature(sel)
        if sigs.get(arch, EMPTY) == sig:
            continue
        sigs[arch] = sig
        rows = latent.selection_rows(sel)
        if len(rows) == 1:  # a click: open that image, keep the current selection
            st.session_state[OPEN] = int(rows[0])
        elif len(rows):
            set_selection(rows)
        # An emptied chart selection does not clear the shared one: plotly drops its own selection
        # whenever the figure is redrawn (new rings), so "empty" is not a user action we can trust.
        # "Clear selection" clears it.


def set_selection(rows) -> None:
    st.session_state[SEL] = [int(r) for r in rows]
    st.session_state[PAGE] = 1


def open_row(row: int) -> None:
    st.session_state[OPEN] = int(row)


def controls(exp, analysed: list[str]) -> dict:
    names = list(exp.labels.names)
    c1, c2, c3, c4 = st.columns([2, 2, 3, 2])
    both = False
    with c1:
        arch = st.selectbox("Backbone", analysed, format_func=ui.arch_label, key="latent_arch")
        if len(analysed) > 1:
            both = st.toggle("Both backbones side by side", value=True, key="latent_both",
                             help="Each map shows the same images; a selection on one is ringed on the other.")
    shown = analysed if both else [arch]
    common = [m for m in ui.latent_maps(exp, shown[0]).methods
              if all(m in ui.latent_maps(exp, a).coords for a in shown)]
    method = c2.selectbox("Map", common, format_func=lambda m: latent.METHOD_NAMES.get(m, m), key="latent_method")
    colour_by = c3.selectbox("Colour by", list(latent.COLOUR_BY), format_func=latent.COLOUR_BY.get,
                             key="latent_colour")
    cls = None
    if colour_by == "outcome":
        cls = c4.selectbox("Class", names, key="latent_class")
        c4.caption("Thresholds: " + "; ".join(f"{ui.arch_label(a)} {latent.youden_threshold(exp, a, cls)[1]}"
                                             for a in shown))
    return {"arch": arch, "shown": shown, "method": method, "colour_by": colour_by, "cls": cls}


def draw_map(exp, arch: str, opts: dict, height: int) -> None:
    method = opts["method"]
    coords = ui.latent_maps(exp, arch).coords[method]
    base = ui.latent_figure(exp, arch, method, opts["colour_by"], opts["cls"], height)
    selected = np.asarray(st.session_state.get(SEL) or [], dtype=np.int64)
    up = latent.upload_for(st.session_state.get(UPLOAD), {exp.name, exp.path.name}, arch, method)
    overlays = latent.overlay_traces(coords, selected, st.session_state.get(OPEN),
                                     up[0] if up else None, up[1] if up else ())
    fig = {**base, "data": list(base["data"]) + [t.to_plotly_json() for t in overlays]}
    st.plotly_chart(fig, on_select="rerun", selection_mode=("points", "box", "lasso"), key=chart_key(arch),
                    width="stretch", config={"scrollZoom": True, "displaylogo": False})


def quality_panel(exp, arch: str, method: str) -> None:
    rows = latent.quality_rows(ui.latent_maps(exp, arch), method)
    st.markdown(f"**Map quality · {ui.arch_label(arch)} {latent.METHOD_NAMES.get(method, method)}**  \n"
                + "  \n".join(f"{k}: **{v}**" for k, v in rows))
    st.caption(latent.QUALITY_HELP)


def upload_notice(exp, opts: dict) -> None:
    upload = st.session_state.get(UPLOAD)
    found = [(a, latent.upload_for(upload, {exp.name, exp.path.name}, a, opts["method"])) for a in opts["shown"]]
    found = [(a, u) for a, u in found if u is not None]
    if not found:
        return
    name = upload.get("name") or "your upload"
    parts = []
    for arch, (xy, nbrs, dists, rec) in found:
        where = "placed on this map" if xy is not None else "not placed on this map"
        ood = " — **outside the training distribution**: its neighbours may not resemble it" if rec.get("ood") else ""
        parts.append(f"{ui.arch_label(arch)}: {where}, {len(nbrs)} nearest neighbours ringed{ood}")
    st.info(f"**{name}** (from the diagnose page) is the magenta star; its nearest training images are "
            "ringed with magenta diamonds. " + "; ".join(parts), icon=":material/star:")
    nbrs = np.unique(np.concatenate([u[1] for _, u in found]))
    if len(nbrs) and st.button(f"Select the upload's {len(nbrs)} neighbours", key="latent_select_neighbours"):
        set_selection(nbrs)
        st.rerun()


def selection_section(exp, opts: dict) -> None:
    rows = np.asarray(st.session_state.get(SEL) or [], dtype=np.int64)
    st.header("Selection")
    if not len(rows):
        st.caption("Draw a box or a lasso on a map (the toolbar's box/lasso tools; box is the default drag) "
                   "to list the images inside it, or click a point to open it.")
        return
    names = list(exp.labels.names)
    tables = {ui.arch_label(a): ui.latent_points(exp, a)[0] for a in opts["shown"]}
    top = st.columns([3, 1, 1])
    top[0].markdown(f"**{len(rows):,} images selected**")
    if top[2].button("Clear selection", key="latent_clear"):
        set_selection([])
        st.session_state[OPEN] = None
        st.rerun()
    images = exp.images()  # the shared table (read only): a copy would cost O(N) per rerun
    probs = {a: ui.latent_points(exp, a)[1] for a in exp.backbones if a in opts["shown"]}
    coords = {f"{a}:{opts['method']}": ui.latent_maps(exp, a).coords[opts["method"]] for a in opts["shown"]}
    top[1].download_button("Download CSV", latent.selection_csv(images, rows, probs, names, coords),
                           file_name=f"{exp.name}-selection-{len(rows)}.csv", mime="text/csv", key="latent_csv")
    left, right = st.columns([2, 5])
    with left:
        st.subheader("Class mix")
        mix = latent.class_mix(tables, rows, names)
        st.dataframe(mix, width="stretch", height=ui.table_height(mix))
        if exp.labels.task == "multilabel":
            st.caption("An image can carry several findings, so 'True label' can sum to more than the selection.")
    with right:
        gallery(exp, rows, opts)


def gallery(exp, rows: np.ndarray, opts: dict) -> None:
    names = list(exp.labels.names)
    pages = latent.page_count(len(rows))
    st.subheader("Gallery")
    if st.session_state.get(PAGE, 1) > pages:
        st.session_state[PAGE] = 1
    if pages > 1:
        st.number_input(f"Page (of {pages})", min_value=1, max_value=pages, step=1, key=PAGE)
    page = int(st.session_state.get(PAGE, 1))
    shown = latent.gallery_page(rows, page)
    st.caption(f"Images {(page - 1) * latent.GALLERY_PAGE + 1}–{(page - 1) * latent.GALLERY_PAGE + len(shown)} "
               f"of {len(rows):,}; predictions by {ui.arch_label(opts['arch'])}. **Open** shows the full image.")
    table, probs = ui.latent_points(exp, opts["arch"])
    thumbs = ui.thumbnails(exp)
    cols = st.columns(GALLERY_COLUMNS)
    for k, row in enumerate(shown):
        with cols[k % GALLERY_COLUMNS]:
            caption = latent.gallery_caption(table, row, names, probs)
            st.markdown(latent.thumbnail_html(thumbs[int(row)], caption), unsafe_allow_html=True)
            st.caption(caption)
            st.button("Open", key=f"latent_open_{int(row)}", on_click=open_row, args=(int(row),))


def detail_section(exp, opts: dict) -> None:
    row = st.session_state.get(OPEN)
    if row is None:
        return
    images = exp.images()
    if not 0 <= int(row) < len(images):
        st.session_state[OPEN] = None
        return
    rec = images.iloc[int(row)]
    names = list(exp.labels.names)
    st.header(f"Image {rec['image_id']}")
    meta = [f"true: **{rec['labels'].replace('|', ', ') or latent.NO_FINDING}**", f"split: {rec['split']}",
            f"source: {rec['source'] or rec['dataset']}", f"sex: {rec['sex'] or '—'}",
            f"age: {'—' if pd.isna(rec['age']) else int(rec['age'])}", f"patient: {rec['patient_id']}"]
    st.markdown(" · ".join(meta))
    cls_idx = names.index(opts["cls"]) if opts.get("cls") else None
    archs = opts["shown"]
    probs = pd.DataFrame({ui.arch_label(a): ui.latent_points(exp, a)[1][int(row)] for a in archs}, index=names)
    cols = st.columns([2] + [2] * len(archs) + [2])
    details = {a: ui.latent_detail(exp, a, int(row), cls_idx) for a in archs}
    gray = next((d[0] for d in details.values() if d[0] is not None), None)
    with cols[0]:
        if gray is not None:
            st.image(gray, caption=f"Original ({gray.shape[1]}×{gray.shape[0]})", width="stretch")
        else:
            st.image(np.asarray(ui.thumbnails(exp)[int(row)]), caption="Thumbnail (64×64)", width="stretch")
    explained = opts["cls"] or "its top class"
    for k, a in enumerate(archs):
        _, problem, p, heat = details[a]
        with cols[k + 1]:
            if heat is not None:
                top = names[cls_idx] if cls_idx is not None else names[int(np.argmax(p))]
                st.image(heat, caption=f"{ui.arch_label(a)} CAM for {top}", width="stretch")
            else:
                st.caption(problem)
    with cols[-1]:
        st.dataframe(probs.style.format("{:.3f}"), width="stretch")
        st.caption(f"Heatmaps: CAM of {explained}; red = the regions that raised that class's score most.")
    if st.button("Close image", key="latent_close"):
        st.session_state[OPEN] = None
        st.rerun()


def render(exp) -> None:
    st.title(f"Latent space: {exp.name}")
    st.caption("Each point is an image, placed by its backbone's pooled features: nearby points look alike "
               "to the model. t-SNE and UMAP keep local neighbourhoods (distances between far clusters mean "
               "little); PCA is linear and keeps global spread. Every image is drawn (WebGL), none sampled.")
    analysed = latent.analysed_backbones(exp)
    if not analysed:
        st.warning("This experiment has not been analysed yet, so it has no maps. Run, in the repository folder:",
                   icon=":material/warning:")
        st.code(latent.analyze_command(exp, ui.REPO), language="bash")
        return
    missing = [a for a in exp.backbones if a not in analysed]
    if missing:
        st.caption("No maps for " + ", ".join(map(ui.arch_label, missing)) + ": run "
                   f"`{latent.analyze_command(exp, ui.REPO)}`.")
    opts = controls(exp, analysed)
    if not opts["method"]:
        st.warning("The backbones have no map in common.")
        return
    sync_selection(opts["shown"])
    upload_notice(exp, opts)
    maps_area, below = st.container(), st.container()
    # Filled out of order: the selection's gallery (O(selection)) reaches the browser before the maps
    # (O(N) each) are serialised again, so a selection on a 100k map shows its images first.
    with below:
        detail_section(exp, opts)
        selection_section(exp, opts)
    with maps_area:
        if len(opts["shown"]) > 1:
            cols = st.columns(len(opts["shown"]))
            for col, arch in zip(cols, opts["shown"]):
                with col:
                    draw_map(exp, arch, opts, height=560)
                    quality_panel(exp, arch, opts["method"])
        else:
            left, right = st.columns([4, 1])
            with left:
                draw_map(exp, opts["arch"], opts, height=680)
            with right:
                quality_panel(exp, opts["arch"], opts["method"])


experiment = ui.page_setup("Latent space")
if experiment is None:
    ui.no_experiment_help()
else:
    render(experiment)
