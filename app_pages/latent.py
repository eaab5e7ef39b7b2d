"""Latent space page: each backbone's t-SNE / UMAP / PCA map of the images, linked to the images.

Pick a backbone, a map and a colouring; draw a box or lasso on a map (or click a point) and the
selected images appear in a paged gallery with their class mix and a CSV export; open any of them
to see the full image, the probabilities and the CAM heatmaps. Both backbones can be shown side by
side with the selection highlighted in each (rows of images.parquet are the shared identity). The
diagnose page's upload (``ui.upload_for``), when there is one, is a star with its nearest neighbours
ringed. What is drawn: ``covidviz.views.latent`` (the maps) and ``covidviz.views.latent_selection``.
Runs under ``app.py`` or on its own (``streamlit run app_pages/latent.py``).
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from covidviz import runs, ui
from covidviz.data.labels import MULTILABEL
from covidviz.views import latent
from covidviz.views import latent_selection as selection
from covidviz.views.style import analyse_command, arch_label, table_height

SEL = "latent_selection"        # selected images.parquet rows (list of int), shared by both maps
SIGS = "latent_signatures"      # chart key -> signature of the selection last seen on it
OPEN = "latent_open"            # the opened image's row, or None
PAGE = "latent_gallery_page"
CHART_KEY = "latent_map_{}"     # a backbone's map (its selection events)
GALLERY_COLUMNS = 6


def sync_selection(archs: list[str]) -> None:
    """Adopt the selection of the map the user changed last; clicking one point opens it."""
    charts = {arch: st.session_state.get(CHART_KEY.format(arch)) for arch in archs}
    sigs, rows, opened = selection.selection_change(st.session_state.get(SIGS), charts)
    st.session_state[SIGS] = sigs
    if opened is not None:  # a click: open that image, keep the current selection
        st.session_state[OPEN] = opened
    if rows is not None:
        set_selection(rows)


def set_selection(rows) -> None:
    st.session_state[SEL] = [int(r) for r in rows]
    st.session_state[PAGE] = 1


def open_row(row: int) -> None:
    st.session_state[OPEN] = int(row)


def controls(exp, analysed: list[str]) -> dict:
    c1, c2, c3, c4 = st.columns([2, 2, 3, 2])
    both = False
    with c1:
        arch = st.selectbox("Backbone", analysed, format_func=arch_label, key="latent_arch")
        if len(analysed) > 1:
            both = st.toggle("Both backbones side by side", value=True, key="latent_both",
                             help="Each map shows the same images; a selection on one is ringed on the other.")
    shown = analysed if both else [arch]
    methods = latent.common_methods([ui.latent_maps(exp, a) for a in shown])
    method = c2.selectbox("Map", methods, format_func=lambda m: latent.METHOD_NAMES.get(m, m), key="latent_method")
    colour_by = c3.selectbox("Colour by", list(latent.COLOUR_BY), format_func=latent.COLOUR_BY.get,
                             key="latent_colour")
    cls = None
    if colour_by == "outcome":
        cls = c4.selectbox("Class", list(exp.labels.names), key="latent_class")
        c4.caption(latent.thresholds_caption(exp.analysis(), shown, cls))
    return {"arch": arch, "shown": shown, "method": method, "colour_by": colour_by, "cls": cls}


def draw_map(exp, arch: str, opts: dict, height: int) -> None:
    method = opts["method"]
    base = ui.latent_figure(exp, arch, method, opts["colour_by"], opts["cls"], height)
    fig = latent.with_overlays(base, ui.latent_maps(exp, arch).coords[method], st.session_state.get(SEL) or [],
                               st.session_state.get(OPEN), latent.upload_for(ui.upload_for(exp), arch, method))
    st.plotly_chart(fig, on_select="rerun", selection_mode=("points", "box", "lasso"), key=CHART_KEY.format(arch),
                    width="stretch", config={"scrollZoom": True, "displaylogo": False})


def draw_maps(exp, opts: dict) -> None:
    """The maps shown side by side, each with its quality below; one map: quality on its right."""
    if len(opts["shown"]) > 1:
        for col, arch in zip(st.columns(len(opts["shown"])), opts["shown"]):
            with col:
                draw_map(exp, arch, opts, height=560)
                quality_panel(exp, arch, opts["method"])
    else:
        left, right = st.columns([4, 1])
        with left:
            draw_map(exp, opts["arch"], opts, height=680)
        with right:
            quality_panel(exp, opts["arch"], opts["method"])


def quality_panel(exp, arch: str, method: str) -> None:
    st.markdown(latent.quality_markdown(ui.latent_maps(exp, arch), arch, method))
    st.caption(latent.QUALITY_HELP)


def upload_notice(exp, opts: dict) -> None:
    notice = latent.upload_notice(ui.upload_for(exp), opts["shown"], opts["method"])
    if notice is None:
        return
    text, nbrs = notice
    st.info(text, icon=":material/star:")
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
    shown, method = opts["shown"], opts["method"]
    top = st.columns([3, 1, 1])
    top[0].markdown(f"**{len(rows):,} images selected**")
    if top[2].button("Clear selection", key="latent_clear"):
        set_selection([])
        st.session_state[OPEN] = None
        st.rerun()
    images = exp.images()  # the shared table (read only): a copy would cost O(N) per rerun
    probs = {a: ui.latent_points(exp, a)[1] for a in exp.backbones if a in shown}
    coords = {f"{a}:{method}": ui.latent_maps(exp, a).coords[method] for a in shown}
    top[1].download_button("Download CSV", selection.selection_csv(images, rows, probs, names, coords),
                           file_name=f"{exp.name}-selection-{len(rows)}.csv", mime="text/csv", key="latent_csv")
    left, right = st.columns([2, 5])
    with left:
        st.subheader("Class mix")
        mix = selection.class_mix({arch_label(a): ui.latent_points(exp, a)[0] for a in shown}, rows, names)
        st.dataframe(mix, width="stretch", height=table_height(mix))
        if exp.labels.task == MULTILABEL:
            st.caption("An image can carry several findings, so 'True label' can sum to more than the selection.")
    with right:
        gallery(exp, rows, opts)


def gallery(exp, rows: np.ndarray, opts: dict) -> None:
    names = list(exp.labels.names)
    pages = selection.page_count(len(rows))
    st.subheader("Gallery")
    if st.session_state.get(PAGE, 1) > pages:
        st.session_state[PAGE] = 1
    if pages > 1:
        st.number_input(f"Page (of {pages})", min_value=1, max_value=pages, step=1, key=PAGE)
    page = int(st.session_state.get(PAGE, 1))
    shown = selection.gallery_page(rows, page)
    st.caption(f"{selection.gallery_range(page, len(shown), len(rows))}; predictions by {arch_label(opts['arch'])}. "
               "**Open** shows the full image.")
    table, probs = ui.latent_points(exp, opts["arch"])
    thumbs = ui.thumbnails(exp)
    cols = st.columns(GALLERY_COLUMNS)
    for k, row in enumerate(shown):
        with cols[k % GALLERY_COLUMNS]:
            caption = selection.gallery_caption(table, row, names, probs)
            st.markdown(selection.thumbnail_html(thumbs[int(row)], caption), unsafe_allow_html=True)
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
    row, names, archs = int(row), list(exp.labels.names), opts["shown"]
    rec = images.iloc[row]
    st.header(f"Image {rec['image_id']}")
    st.markdown(selection.detail_meta(rec))
    cls_idx = names.index(opts["cls"]) if opts.get("cls") else None
    probs = selection.probability_table({arch_label(a): ui.latent_points(exp, a)[1][row] for a in archs}, names)
    cols = st.columns([2] + [2] * len(archs) + [2])
    details = {a: ui.latent_detail(exp, a, row, cls_idx) for a in archs}
    gray = next((d[0] for d in details.values() if d[0] is not None), None)
    with cols[0]:
        if gray is not None:
            st.image(gray, caption=f"Original ({gray.shape[1]}×{gray.shape[0]})", width="stretch")
        else:
            st.image(np.asarray(ui.thumbnails(exp)[row]), caption="Thumbnail (64×64)", width="stretch")
    for k, a in enumerate(archs):
        _, problem, p, heat = details[a]
        with cols[k + 1]:
            if heat is not None:
                st.image(heat, caption=f"{arch_label(a)} CAM for {selection.explained_class(names, cls_idx, p)}",
                         width="stretch")
            else:
                st.caption(problem)
    with cols[-1]:
        st.dataframe(probs.style.format("{:.3f}"), width="stretch")
        st.caption(f"Heatmaps: CAM of {opts['cls'] or 'its top class'}; red = the regions that raised that class's "
                   "score most.")
    if st.button("Close image", key="latent_close"):
        st.session_state[OPEN] = None
        st.rerun()


def render(exp) -> None:
    st.title(f"Latent space: {exp.name}")
    st.caption("Each point is an image, placed by its backbone's pooled features: nearby points look alike "
               "to the model. t-SNE and UMAP keep local neighbourhoods (distances between far clusters mean "
               "little); PCA is linear and keeps global spread. Every image is drawn (WebGL), none sampled.")
    analysed = exp.analysed_backbones(runs.PROJECTIONS_INFO)  # written after projections.npz: both are there
    if not analysed:
        st.warning("This experiment has not been analysed yet, so it has no maps. Run, in the repository folder:",
                   icon=":material/warning:")
        st.code(analyse_command(exp.path, ui.REPO), language="bash")
        return
    missing = [a for a in exp.backbones if a not in analysed]
    if missing:
        st.caption("No maps for " + ", ".join(map(arch_label, missing)) + ": run "
                   f"`{analyse_command(exp.path, ui.REPO)}`.")
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
        draw_maps(exp, opts)


ui.run_page("Latent space", render)
