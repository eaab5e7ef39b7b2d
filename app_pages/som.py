"""SOM page: the self-organizing map of each backbone's features, as true hexagons, tied to the images.

Controls (layer, class, split, prototype pictures) apply to every backbone's map, drawn side by side.
Click a hexagon (or type its number) to see its images, labels, predictions and statistics. The
upload of the diagnose page (``ui.upload_for``) is starred on the maps with its quantisation error
against the training images'. External test sets (``ui.external``) are diamonds on their nodes (``som_place``,
no refit), and the "Set" layer colours nodes by the set their images come from. A class-relations view shows
which classes share nodes (the paper's "which diseases sit together"). Every widget key is scoped to the
experiment (``key``): node numbers of one experiment's maps never reach another's. What is drawn: ``covidviz.views.som`` and
``covidviz.views.som_figure``. Runs under ``app.py`` or on its own (``streamlit run app_pages/som.py``).
"""

from __future__ import annotations

import functools

import streamlit as st

from covidviz import runs, ui
from covidviz.ui import external as external_ui
from covidviz.views import formats, som_figure
from covidviz.views import som as som_view
from covidviz.views.style import analyse_command, arch_label, table_height

NODE_KEY = "som_node_{}"        # a backbone's selected node (the number input): the one source of truth
CHART_KEY = "som_chart_{}"      # a backbone's map (its click events)


def key(exp, name: str) -> str:
    """This page's key ``name`` for ``exp``: no widget value survives a switch of experiment."""
    return ui.scoped(exp, name)


def _on_select(exp, arch: str, trace_index: int) -> None:
    """A click on a hexagon becomes the node number."""
    node = som_figure.node_from_selection(st.session_state.get(key(exp, CHART_KEY.format(arch))), trace_index)
    if node is not None:
        st.session_state[key(exp, NODE_KEY.format(arch))] = node


def _go_to(exp, arch: str, node: int) -> None:
    st.session_state[key(exp, NODE_KEY.format(arch))] = int(node)


def controls(exp) -> som_view.Choice:
    c1, c2, c3, c4 = st.columns([3, 2, 2, 2])
    layer = c1.selectbox("Layer", list(som_view.LAYERS), format_func=som_view.LAYERS.get, key=key(exp, "som_layer"))
    cls_name = c2.selectbox("Class", som_view.class_options(exp.labels, layer), key=key(exp, "som_class"),
                            disabled=not som_view.needs_class(layer, exp.labels),
                            help="Used by the density, mean-probability and (multi-label) error layers.")
    split = c3.selectbox("Images", list(som_view.SPLIT_CHOICES), key=key(exp, "som_split"),
                         help="Which split's images the layers, gallery and class relations count. The map itself "
                              "was trained on the training images only.")
    protos = c4.toggle("Prototype pictures", key=key(exp, "som_prototypes"),
                       help="Show in each hexagon the image closest to the node's weights (its prototype); "
                            "the layer's colour stays visible as a rim.")
    # Other hospitals' images on the stored maps: off by default (they would sit on most hexagons).
    sites = external_ui.sets_filter(exp, "som_sites", c3, shown=False)
    st.caption(som_view.LAYER_HELP[layer])
    return som_view.choice(exp.labels, layer, cls_name, split, protos, sites)


def quality(info) -> None:
    for col, (label, value, help_text) in zip(st.columns(3), som_view.quality_metrics(info)):
        col.metric(label, value, help=help_text)
    st.caption(som_view.QUALITY_HELP)


def backbone_map(exp, arch: str, som: dict, ctl: som_view.Choice, upload: dict | None, width: int) -> None:
    a = som["arrays"]
    st.subheader(arch_label(arch))
    quality(som["info"])
    nd = ui.som_nodes(exp, arch, ctl.splits)
    thresholds = som_view.youden_thresholds(exp.analysis(), arch)
    grid = som["info"].grid or som_view.grid_shape(a["hex_xy"])
    up = som_view.upload_on_map(upload, arch, grid)
    up_node = up.node if up else None
    n_nodes, node_key = len(a["hex_xy"]), key(exp, NODE_KEY.format(arch))
    if not 0 <= (st.session_state.get(node_key) or 0) < n_nodes:  # an experiment replaced under its name
        del st.session_state[node_key]
    external = ui.som_external(exp, arch, ctl.sites)
    fig = som_figure.backbone_figure(a, nd, ctl.layer, ctl.cls, thresholds,
                                     highlight=st.session_state.get(node_key), upload=up_node,
                                     mosaic=ui.som_mosaic(exp, arch) if ctl.prototypes else None, width=width,
                                     external=external, splits=exp.images()["split"],
                                     upload_label=up.label if up else "your upload")
    ui.plotly_chart(fig, width="stretch", key=key(exp, CHART_KEY.format(arch)), selection_mode="points",
                    on_select=functools.partial(_on_select, exp, arch, som_figure.centres_trace_index(fig)),
                    config={"scrollZoom": True})
    left, right = st.columns([1, 1], vertical_alignment="bottom")  # the button level with the input, not its label
    left.number_input("Node", min_value=0, max_value=n_nodes - 1, value=None, step=1, key=node_key,
                      placeholder="click a hexagon", help=f"0 … {n_nodes - 1}; click a hexagon to choose it.")
    if up_node is not None:
        right.button(f"Go to {up.label}'s node", key=key(exp, f"som_goto_upload_{arch}"),
                     on_click=_go_to, args=(exp, arch, up_node))
    if up is not None and up.has_qe:
        upload_qe(exp, arch, a, up)
    node = st.session_state.get(node_key)
    if node is None:
        st.caption("Click a hexagon (or type a node number) to see its images and statistics.")
    else:
        node_panel(exp, arch, a, nd, int(node), ctl, thresholds, grid)
        if text := som_view.external_on_node(external, int(node)):
            st.caption(text)


def upload_qe(exp, arch: str, a: dict, up: som_view.MapUpload) -> None:
    if up.ood:
        st.warning(up.text, icon=":material/warning:")
    else:
        st.info(up.text, icon=":material/star:")
    fig = som_figure.qe_histogram(a["qe_train_sorted"], up.qe, f"{up.label} ({up.pct_text} %)")
    ui.plotly_chart(fig, width="stretch", key=key(exp, f"som_upload_qe_{arch}"))


def node_panel(exp, arch: str, a: dict, nd, node: int, ctl: som_view.Choice, thresholds: dict, grid) -> None:
    rows = som_view.node_rows(nd, node)
    st.markdown(f"#### Node {node}")
    st.caption(f"Node {node} is at {formats.som_position(node, grid)} on the map above.")
    for col, (label, value, help_text) in zip(st.columns(4), som_view.node_metrics(a, node, rows, ctl.split_label)):
        col.metric(label, value, help=help_text)
    if not len(rows):
        st.caption("No images of the chosen split(s) on this node.")
        return
    summary = som_view.node_summary(nd, rows, thresholds)
    st.markdown(summary.headline)
    st.table(summary.stats)
    st.caption(som_view.NODE_STATS_HELP)
    table = som_view.node_images_table(exp.images(), nd, rows, summary.predicted, a["qe"])
    limit = som_view.GALLERY_MAX
    more = f"; the first {limit} shown, all in the table below" if len(rows) > limit else ""
    st.caption(f"{len(rows)} image(s) on this node{more}. Caption: label → prediction.")
    ui.show_thumbnails(exp, rows[:limit], captions=som_view.gallery_captions(table, limit), width=96)
    st.dataframe(table, width="stretch", hide_index=True, key=key(exp, f"som_node_table_{arch}"),
                 column_config=som_view.NODE_TABLE_COLUMNS)


def class_relations(exp, soms: dict, ctl: som_view.Choice) -> None:
    st.header("Which classes sit together")
    st.caption("Each class is a vector of its image counts over the map's nodes; the cosine similarity of two such "
               "vectors is 1 when the classes occupy the same nodes in the same proportions and 0 when they never "
               "share a node. High off-diagonal values are the paper's reading: those diseases look alike to the "
               f"network. Counted on: {ctl.split_label.lower()}.")
    for col, arch in zip(st.columns(len(soms)), soms):
        with col:
            rel = som_view.class_relations(ui.som_nodes(exp, arch, ctl.splits))
            st.subheader(arch_label(arch))
            st.markdown(rel.headline)
            ui.plotly_chart(som_figure.relation_heatmap(rel.similarity, rel.classes), width="stretch",
                            key=key(exp, f"som_rel_{arch}"))
            with st.expander("Share of each class's images on nodes dominated by another class"):
                if len(rel.classes) <= som_view.MATRIX_MAX_CLASSES:
                    st.caption("Row = the class of the images, column = the dominant class of the node they sit on; "
                               "rows sum to 100 %. A large off-diagonal share means the row class is mostly mapped "
                               "among the column class's images.")
                    st.dataframe(rel.share.style.format("{:.0%}", na_rep="—"), width="stretch",
                                 height=table_height(rel.classes))
                else:  # a 14×14 matrix cannot fit a column at 1280 px: its non-zero off-diagonal cells as rows
                    pairs = som_view.share_pairs(rel.share)
                    st.caption("Each row: images of one class, the dominant class of the nodes they sit on, and "
                               "the share of the class's images that sit there (largest first; shares on the "
                               "class's own nodes left out).")
                    st.dataframe(pairs, width="stretch", hide_index=True, height=table_height(pairs))


def not_analysed(exp, archs: list[str]) -> None:
    what = "This experiment has" if len(archs) == len(exp.backbones) else \
        ", ".join(arch_label(a) for a in archs) + (" has" if len(archs) == 1 else " have")
    st.warning(f"{what} no self-organizing map yet (the analysis step has not run). To compute it, run in "
               f"`{ui.REPO}`:", icon=":material/warning:")
    st.code(analyse_command(exp.path, ui.REPO), language="bash")


def render(exp) -> None:
    st.title(f"Self-organizing map: {exp.name}")
    st.caption(som_view.INTRO)
    soms = {arch: ui.som_result(exp, arch) for arch in exp.analysed_backbones(runs.SOM)}
    soms = {a: s for a, s in soms.items() if s is not None}
    missing = [a for a in exp.backbones if a not in soms]
    if missing:
        not_analysed(exp, missing)
    if not soms:
        return
    ctl = controls(exp)
    upload = ui.upload_for(exp)
    elsewhere = som_view.upload_elsewhere(st.session_state.get(ui.UPLOAD_KEY), upload)
    if elsewhere:
        st.caption(f"The image uploaded on the diagnose page was scored with experiment "
                   f"'{elsewhere}'; choose that experiment to see it on its maps.")
    for arch, som in soms.items():  # one below the other, each as wide as the page (side by side: 300 px at 1280)
        backbone_map(exp, arch, som, ctl, upload, som_figure.MAP_WIDTH)
    class_relations(exp, soms, ctl)


ui.run_page("SOM", render)
