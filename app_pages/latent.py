"""Latent space page: each backbone's t-SNE / UMAP / PCA map of the images, linked to the images.

Draw a box or lasso on a map (or click a point): the selected images appear in a paged gallery with
their class mix and a CSV export; open one to see it with its probabilities and CAM heatmaps. Both
backbones side by side share the selection (rows of images.parquet are the identity); the diagnose
page's upload (``ui.upload_for``) is a star with its nearest neighbours ringed; external test sets are diamonds
placed on the stored maps (``ui.external``, not selectable). Every key is scoped to
the experiment (``key``). What is drawn: ``views.latent`` and ``views.latent_selection`` (which also
decides when a map is redrawn). Runs under ``app.py`` or alone (``streamlit run app_pages/latent.py``).
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from covidviz import runs, ui
from covidviz.data.labels import MULTILABEL
from covidviz.ui import external as external_ui
from covidviz.ui import latent_opened as opened_ui
from covidviz.views import image_name, latent
from covidviz.views import latent_selection as selection
from covidviz.views.style import analyse_command, arch_label

SEL = "latent_selection"        # selected images.parquet rows (list of int), shared by both maps
SIGS = "latent_signatures"      # chart key -> signature of the selection last seen on it
OPEN = "latent_open"            # the opened image's row, or None
PAGE = "latent_gallery_page"
PICK = "latent_open_pick"       # the gallery's "Open an image" picker
ORIGIN = "latent_open_origin"   # where the opened image was opened (selection.GALLERY or MAP): it is drawn there
DRAWN = "latent_drawn"          # backbone -> selection.MapDrawing shown last run
FOLLOWUP = "latent_followup"    # True during the run that draws the maps' deferred overlays
CHART_KEY = "latent_map_{}"     # a backbone's map (its selection events)


def key(exp, name: str) -> str:
    """This page's key ``name`` for ``exp``: no widget value or selection survives a switch of experiment."""
    return ui.scoped(exp, name)


def sync_selection(exp, archs: list[str]) -> None:
    """Adopt the selection of the map the user changed last; clicking one point opens it."""
    charts = {arch: st.session_state.get(key(exp, CHART_KEY.format(arch))) for arch in archs}
    sigs, rows, opened = selection.selection_change(st.session_state.get(key(exp, SIGS)), charts)
    st.session_state[key(exp, SIGS)] = sigs
    if opened is not None:  # a click: open that image, keep the current selection
        open_row(exp, opened)
    if rows is not None:
        set_selection(exp, rows)


def set_selection(exp, rows) -> None:
    st.session_state[key(exp, SEL)] = [int(r) for r in rows]
    st.session_state[key(exp, PAGE)] = 1


def open_row(exp, row: int | None, picked: bool = False) -> None:
    """Open ``row`` (None: close), or with ``picked`` the gallery picker's choice (drawn in the gallery)."""
    row = st.session_state.get(key(exp, PICK)) if picked else row
    st.session_state[key(exp, OPEN)] = None if row is None else int(row)
    st.session_state[key(exp, ORIGIN)] = selection.GALLERY if picked else selection.MAP


def controls(exp, analysed: list[str]) -> dict:
    c1, c2, c3, c4 = st.columns([3, 2, 3, 2])  # c1: room for "Tiny CNN (test model)" at 1280 px
    both = False
    with c1:
        arch = st.selectbox("Backbone", analysed, format_func=arch_label, key=key(exp, "latent_arch"))
        if len(analysed) > 1:
            both = st.toggle("Both backbones", value=True, key=key(exp, "latent_both"),
                             help="Each map shows the same images; a selection on one is ringed on the other.")
    shown = analysed if both else [arch]
    methods = latent.common_methods([ui.latent_maps(exp, a) for a in shown])
    method = c2.selectbox("Map", methods, format_func=lambda m: latent.METHOD_NAMES.get(m, m), key=key(exp, "latent_method"))
    colour_by = c3.selectbox("Colour by", list(latent.COLOUR_BY), format_func=latent.COLOUR_BY.get,
                             key=key(exp, "latent_colour"))
    sites = external_ui.sets_filter(exp, "latent_sites", c3)  # other hospitals' images, placed on the maps
    cls = None
    if colour_by == "outcome":
        cls = c4.selectbox("Class", list(exp.labels.names), key=key(exp, "latent_class"))
        c4.caption(latent.thresholds_caption(exp.analysis(), shown, cls))
    height = 560 if len(shown) > 1 else 680
    return {"arch": arch, "shown": shown, "method": method, "colour_by": colour_by, "cls": cls, "height": height,
            "sites": tuple(sites)}


def plan_maps(exp, opts: dict, rows: np.ndarray) -> dict:
    """What each map draws this run (``selection.plan_drawings``); asks for a follow-up run when an overlay
    change was held back so that the gallery reaches the browser before the maps are re-created."""
    shown, opened = opts["shown"], st.session_state.get(key(exp, OPEN))
    plans, pending = selection.plan_drawings(
        st.session_state.get(key(exp, DRAWN)), {a: (opts["method"], opts["colour_by"], opts["cls"], opts["height"],
                                                    opts["sites"]) for a in shown}, rows,
        {a: latent.overlay_key(opened, latent.upload_for(ui.upload_for(exp), a, opts["method"])) for a in shown},
        {a: st.session_state.get(key(exp, CHART_KEY.format(a))) for a in shown},
        followup=bool(st.session_state.pop(key(exp, FOLLOWUP), False)))
    st.session_state[key(exp, DRAWN)], st.session_state[key(exp, FOLLOWUP)] = plans, pending
    return plans


def draw_map(exp, arch: str, opts: dict, plan: selection.MapDrawing) -> None:
    method = opts["method"]
    base = ui.latent_figure(exp, arch, method, opts["colour_by"], opts["cls"], opts["height"], opts["sites"])
    fig = latent.drawn_figure(base, ui.latent_maps(exp, arch).coords[method], plan.rings, plan.others, plan.revision,
                              image_name.short_label(ui.upload_for(exp)))  # a picked test image is not "your upload"
    ui.plotly_chart(fig, on_select="rerun", selection_mode=("points", "box", "lasso"),
                    key=key(exp, CHART_KEY.format(arch)), width="stretch",
                    config={"scrollZoom": True})


def draw_maps(exp, opts: dict, plans: dict) -> None:
    """The maps shown side by side, each with its quality below; one map: quality on its right."""
    both = len(opts["shown"]) > 1
    cols = st.columns(len(opts["shown"]) if both else [4, 1])
    for k, arch in enumerate(opts["shown"]):
        with cols[k]:
            draw_map(exp, arch, opts, plans[arch])
        with cols[k if both else 1]:
            quality_panel(exp, arch, opts["method"])


def quality_panel(exp, arch: str, method: str) -> None:
    st.markdown(latent.quality_markdown(ui.latent_maps(exp, arch), arch, method))
    st.caption(latent.QUALITY_HELP)


def upload_notice(exp, opts: dict) -> None:
    record = ui.upload_for(exp)
    notice = latent.upload_notice(record, opts["shown"], opts["method"])
    rows = opened_ui.upload_notice(record, opts["shown"], notice, key(exp, "latent_select_neighbours"))
    if rows is not None:
        set_selection(exp, rows)
        st.rerun()


def selection_section(exp, opts: dict, rows: np.ndarray) -> None:
    st.header("Selection")
    if not len(rows):  # st.html: also loads the gallery's component before the first selection
        return st.html(selection.EMPTY_GALLERY_HTML)
    names = list(exp.labels.names)
    shown, method = opts["shown"], opts["method"]
    top = st.columns([3, 1, 1])
    top[0].markdown(f"**{len(rows):,} images selected**")
    if top[2].button("Clear selection", key=key(exp, "latent_clear")):
        set_selection(exp, [])
        open_row(exp, None)
        st.rerun()
    images = exp.images()  # the shared table (read only): a copy would cost O(N) per rerun
    probs = {a: ui.latent_points(exp, a)[1] for a in exp.backbones if a in shown}
    coords = {f"{a}:{method}": ui.latent_maps(exp, a).coords[method] for a in shown}
    top[1].download_button("Download CSV", selection.selection_csv(images, rows, probs, names, coords),
                           file_name=f"{exp.name}-selection-{len(rows)}.csv", mime="text/csv", key=key(exp, "latent_csv"))
    st.subheader("Class mix")  # full width, above the gallery: a backbone per column needs the room
    st.html(selection.table_html(selection.class_mix({arch_label(a): ui.latent_points(exp, a)[0] for a in shown},
                                                     rows, names), "latent-mix"))
    st.caption(selection.class_mix_help(exp.labels.task == MULTILABEL))
    gallery(exp, rows, opts)


def gallery(exp, rows: np.ndarray, opts: dict) -> None:
    names = list(exp.labels.names)
    pages = selection.page_count(len(rows))
    st.subheader("Gallery")
    if st.session_state.get(key(exp, PAGE), 1) > pages:
        st.session_state[key(exp, PAGE)] = 1
    top = st.columns(3)
    if pages > 1:
        top[0].selectbox("Page", range(1, pages + 1), format_func=f"{{}} of {pages}".format, key=key(exp, PAGE))
    page = int(st.session_state.get(key(exp, PAGE), 1))
    shown = selection.gallery_page(rows, page)
    table, probs = ui.latent_points(exp, opts["arch"])
    captions = [selection.gallery_caption(table, row, names, probs) for row in shown]
    first = (page - 1) * selection.GALLERY_PAGE + 1
    labels = selection.pick_labels(shown, table, first)
    top[1].selectbox("Open an image", list(labels), index=None, format_func=labels.get, key=key(exp, PICK),
                     placeholder="Choose one to see it full size…", on_change=open_row, args=(exp, None, True))
    st.caption(f"{selection.gallery_range(page, len(shown), len(rows))}; predictions by {arch_label(opts['arch'])}.")
    detail_section(exp, opts, selection.GALLERY, rows)  # right under the picker, where the user is looking
    st.html(selection.gallery_html(ui.thumbnails(exp), shown, captions, first))


def detail_section(exp, opts: dict, where: str | None, rows=()) -> None:
    """The opened image, drawn where it was opened (``where``: ``selection.MAP``, under the maps, or
    ``GALLERY``, under the gallery's picker; None: wherever, as there is no gallery)."""
    row, origin = st.session_state.get(key(exp, OPEN)), st.session_state.get(key(exp, ORIGIN), selection.MAP)
    if row is None or not 0 <= int(row) < len(exp.images()) or where not in (None, origin):
        return
    at = np.flatnonzero(np.asarray(rows, np.int64) == int(row))  # its number in the gallery, as the picker lists it
    number = int(at[0]) + 1 if len(at) else None
    if opened_ui.opened_image(exp, opts, int(row), selection.opened_note(origin, number), key(exp, "latent_close")):
        open_row(exp, None)
        st.session_state.pop(key(exp, PICK), None)
        st.rerun()


def render(exp) -> None:
    st.title(f"Latent space: {exp.name}")
    st.caption(latent.INTRO)
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
    sync_selection(exp, opts["shown"])
    rows = selection.valid_rows(st.session_state.get(key(exp, SEL)), len(exp.images()))
    plans = plan_maps(exp, opts, rows)
    upload_notice(exp, opts)
    maps_area, below = st.container(), st.container()
    # Filled out of order: the selection's gallery (O(selection)) reaches the browser before the maps
    # (O(N) each) are serialised again. When plan_maps held an overlay change back, this run ends
    # without the maps (the browser keeps showing them: a run stopped for a rerun removes nothing) and
    # the follow-up run draws them, so a selection on a 100k map shows its images first.
    with below:
        detail_section(exp, opts, selection.MAP if len(rows) else None)  # under the maps, after a click
        selection_section(exp, opts, rows)
    if st.session_state.get(key(exp, FOLLOWUP)):
        st.rerun()
    with maps_area:
        draw_maps(exp, opts, plans)


ui.run_page("Latent space", render)
