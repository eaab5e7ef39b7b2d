"""SOM page: the self-organizing map of each backbone's features, as true hexagons, tied to the images.

Controls (layer, class, split, prototype pictures) apply to every backbone's map, drawn side by side.
Click a hexagon (or type its number) to see its images, labels, predictions and statistics. The
upload of the diagnose page (``st.session_state["upload"]``) is starred on the maps with its
quantisation error against the training images'. A class-relations view shows which classes share
nodes (the paper's "which diseases sit together"). Geometry and layers: ``covidviz.som_view``.
Runs under ``app.py`` or on its own (``streamlit run app_pages/som.py``).
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from covidviz import ui
from covidviz.data.labels import MULTILABEL
from covidviz.views import som as som_view

CHART_FONT = dict(size=14)
SPLIT_CHOICES = {"All splits": None, "Training": ["train"], "Validation": ["val"], "Test": ["test"]}
GALLERY_MAX = 40
LAYER_HELP = {
    "umatrix": "Mean distance between a node's weights and its neighbours'. Light = similar neighbours (inside a "
               "cluster); dark ridges = boundaries between clusters.",
    "hits": "How many images of the chosen split(s) have this node as their best match. Grey = no images.",
    "dominant": "Colour = the class most of the node's images carry; paler = a more mixed node "
                "(purity = that class's share of the node's images: pale ≤ 50 %, medium ≤ 75 %, full > 75 %).",
    "density": "Where the chosen class lives: the share of all its images (chosen split) that sit on each node.",
    "mean_prob": "The model's mean predicted probability of the chosen class over each node's images.",
    "error": "Share of each node's images the model gets wrong (multi-class: top prediction ≠ label; multi-label: "
             "for the chosen class, thresholded prediction ≠ label). Pick the Test split for the honest rate.",
}


def _state_key(arch: str) -> str:
    return f"som_node_{arch}"


def _chart_key(arch: str) -> str:
    return f"som_chart_{arch}"


def _on_select(arch: str, trace_index: int) -> None:
    """A click on a hexagon becomes the node number (the single source of truth for the selection)."""
    node = som_view.node_from_selection(st.session_state.get(_chart_key(arch)), trace_index)
    if node is not None:
        st.session_state[_state_key(arch)] = node


def _go_to(arch: str, node: int) -> None:
    st.session_state[_state_key(arch)] = int(node)


def thresholds(exp, arch: str) -> dict[str, float]:
    """Validation-chosen (Youden) thresholds per class, where the analysis stored them."""
    analysis = exp.analysis()
    if analysis is None:
        return {}
    per_class = analysis.backbone(arch).thresholds()
    return {cls: float(t["youden"]) for cls, t in per_class.items() if t.get("youden") is not None}


def controls(exp) -> dict:
    classes = _classes(exp)
    c1, c2, c3, c4 = st.columns([3, 2, 2, 2])
    layer = c1.selectbox("Layer", list(som_view.LAYERS), format_func=som_view.LAYERS.get, key="som_layer")
    multilabel = exp.labels.task == MULTILABEL
    needs_class = layer in som_view.CLASS_LAYERS or (layer == "error" and multilabel)
    options = classes if layer == "density" else list(exp.labels.names)
    cls_name = c2.selectbox("Class", options, key="som_class", disabled=not needs_class,
                            help="Used by the density, mean-probability and (multi-label) error layers.")
    split = c3.selectbox("Images", list(SPLIT_CHOICES), key="som_split",
                         help="Which split's images the layers, gallery and class relations count. The map itself "
                              "was trained on the training images only.")
    protos = c4.toggle("Prototype pictures", key="som_prototypes",
                       help="Show in each hexagon the image closest to the node's weights (its prototype); "
                            "the layer's colour stays visible as a rim.")
    st.caption(LAYER_HELP[layer])
    return {"layer": layer, "cls": classes.index(cls_name) if cls_name in classes else 0, "cls_name": cls_name,
            "splits": SPLIT_CHOICES[split], "split_label": split, "prototypes": protos}


def _classes(exp) -> list[str]:
    return list(exp.labels.names) + ([som_view.NO_FINDING] if exp.labels.task == MULTILABEL else [])


def node_data(exp, arch: str, som: dict, splits):
    images = ui.images_table(exp)
    probs = exp.probabilities(arch)
    a = som["arrays"]
    return som_view.node_data(images, exp.labels, probs, a["node"], len(a["hex_xy"]), splits)


def quality(som: dict) -> None:
    info = som["info"]
    gx, gy = info.get("grid", ["?", "?"])
    c1, c2, c3 = st.columns(3)
    c1.metric("Quantization error", f"{info['quantization_error']:.3g}",
              help="Mean distance from a training image to its node, in the map's standardised PCA space.")
    c2.metric("Topographic error", f"{100 * info['topographic_error']:.1f} %",
              help="Share of training images whose two best-matching nodes are not neighbours.")
    c3.metric("Grid", f"{gx} × {gy}")
    st.caption("**How to read:** QE says how closely the nodes represent the images (lower = closer; compare "
               "maps of one experiment only). TE says whether neighbourhoods are kept: below ~10 % nearby "
               "hexagons really hold similar images, so distances on the map mean something.")


def backbone_map(exp, arch: str, som: dict, ctl: dict, upload: dict | None, width: int) -> None:
    a = som["arrays"]
    st.subheader(ui.arch_label(arch))
    quality(som)
    nd = node_data(exp, arch, som, ctl["splits"])
    cls = ctl["cls"]
    if ctl["layer"] == "error" and exp.labels.task == MULTILABEL:
        cls = list(exp.labels.names).index(ctl["cls_name"])
    layer = som_view.layer_values(nd, ctl["layer"], cls, umatrix=a["umatrix"], thresholds=thresholds(exp, arch))
    hover = som_view.hover_texts(nd, layer, som_view.LAYERS[ctl["layer"]].split(" (")[0], a["umatrix"])
    selected = st.session_state.get(_state_key(arch))
    up = (upload or {}).get("backbones", {}).get(arch) if upload else None
    up_node = int(up["som_node"]) if up and up.get("som_node") is not None else None
    mosaic = ui.som_mosaic(exp, arch) if ctl["prototypes"] else None
    fig = som_view.som_figure(a["hex_xy"], layer, ctl["layer"], hover, nd.classes, highlight=selected,
                              upload=up_node, mosaic=mosaic,
                              height=som_view.map_height(a["hex_xy"], width))
    st.plotly_chart(fig, width="stretch", key=_chart_key(arch), selection_mode="points",
                    on_select=functools.partial(_on_select, arch, som_view.centres_trace_index(fig)),
                    config={"scrollZoom": True, "displaylogo": False})
    n_nodes = len(a["hex_xy"])
    left, right = st.columns([2, 3])
    left.number_input("Node", min_value=0, max_value=n_nodes - 1, value=None, step=1, key=_state_key(arch),
                      placeholder="click a hexagon", help=f"0 … {n_nodes - 1}; click a hexagon to choose it.")
    if up_node is not None:
        right.button("Go to the uploaded image's node", key=f"som_goto_upload_{arch}",
                     on_click=_go_to, args=(arch, up_node))
    if up is not None and up.get("som_qe") is not None and up.get("som_qe_pct") is not None:
        upload_qe(arch, a, up, upload.get("name", "uploaded image"))
    node = st.session_state.get(_state_key(arch))
    if node is None:
        st.caption("Click a hexagon (or type a node number) to see its images and statistics.")
    else:
        node_panel(exp, arch, a, nd, int(node), ctl)


def upload_qe(arch: str, a: dict, up: dict, name: str) -> None:
    qe, pct = float(up.get("som_qe", np.nan)), float(up.get("som_qe_pct", np.nan))
    pct_text = f"{pct:.0f}" if pct < 99 else f"{pct:.1f}"
    text = (f"**{name}** (★) sits on node {up.get('som_node')}; its quantization error {qe:.3g} is larger than "
            f"{pct_text} % of the training images'.")
    if up.get("ood"):
        st.warning(text + " It is unlike the training images: treat the model's output with extra caution.",
                   icon=":material/warning:")
    else:
        st.info(text, icon=":material/star:")
    train = np.asarray(a["qe_train_sorted"], np.float64)
    fig = go.Figure(go.Histogram(x=train, nbinsx=40, marker_color="#9aa5b1", name="training images",
                                 hovertemplate="QE %{x}<br>%{y} training images<extra></extra>"))
    fig.add_vline(x=qe, line_color="#d62728", line_width=3, annotation_text=f"upload ({pct_text} %)",
                  annotation_position="top right")
    fig.update_layout(height=220, font=CHART_FONT, margin=dict(t=30, b=10, l=10, r=10), bargap=0.05,
                      xaxis_title="Quantization error (distance to best node)", yaxis_title="Training images",
                      showlegend=False)
    st.plotly_chart(fig, width="stretch", key=f"som_upload_qe_{arch}")


def node_rows(nd, node: int) -> np.ndarray:
    """images.parquet rows on ``node`` within the chosen split(s)."""
    return np.flatnonzero((nd.node == node) & nd.mask)


def node_panel(exp, arch: str, a: dict, nd, node: int, ctl: dict) -> None:
    rows = node_rows(nd, node)
    images = ui.images_table(exp)
    st.markdown(f"#### Node {node}")
    hits_train = int(a["hits"][node])
    c1, c2, c3, c4 = st.columns(4)
    c1.metric(f"Images ({ctl['split_label'].lower()})", len(rows))
    c2.metric("Training hits", hits_train)
    c3.metric("U-matrix", f"{float(a['umatrix'][node]):.2f}")
    qe = np.asarray(a["qe"], np.float64)
    c4.metric("Mean QE", f"{qe[rows].mean():.3g}" if len(rows) else "—",
              help="Mean distance of the node's images to its weights (the map's QE is the training mean).")
    if not len(rows):
        st.caption("No images of the chosen split(s) on this node.")
        return
    counts = nd.onehot[rows].sum(axis=0)
    C = nd.probs.shape[1]
    pred = som_view.predictions(nd, thresholds(exp, arch))[rows]
    truth = nd.onehot[rows][:, :C]
    pad = ["—"] * (len(nd.classes) - C)  # "No finding" (multi-label) has no model output
    stats = pd.DataFrame({
        "Images": counts.astype(int),
        "Share": [f"{v:.0%}" for v in counts / len(rows)],
        "Mean probability": [f"{v:.2f}" for v in nd.probs[rows].mean(axis=0)] + pad,
        "Predicted": [str(int(v)) for v in pred.sum(axis=0)] + pad,
    }, index=pd.Index(nd.classes, name="Class"))
    if exp.labels.task == MULTILABEL:
        stats["Errors"] = [str(int(v)) for v in (pred != truth).sum(axis=0)] + pad
        err_text = ""
    else:
        wrong = (pred != truth).any(axis=1)
        err_text = f" · error rate {wrong.mean():.0%} ({int(wrong.sum())} of {len(rows)})"
    dom = int(counts.argmax())
    st.markdown(f"Dominant class **{nd.classes[dom]}** ({counts[dom] / len(rows):.0%} of its images){err_text}")
    st.dataframe(stats, width="stretch", height=ui.table_height(stats))
    table = node_images_table(exp, images, nd, rows, pred, qe)
    shown = rows[:GALLERY_MAX]
    more = f"; the first {GALLERY_MAX} shown, all in the table below" if len(rows) > GALLERY_MAX else ""
    st.caption(f"{len(rows)} image(s) on this node{more}. Caption: label → prediction.")
    captions = [f"{t} → {p}" for t, p in zip(table["Labels"][:GALLERY_MAX], table["Predicted"][:GALLERY_MAX])]
    ui.show_thumbnails(exp, shown, captions=captions, width=96)
    st.dataframe(table, width="stretch", hide_index=True, key=f"som_node_table_{arch}")


def node_images_table(exp, images: pd.DataFrame, nd, rows: np.ndarray, pred: np.ndarray,
                      qe: np.ndarray) -> pd.DataFrame:
    names = list(exp.labels.names)
    P = nd.probs[rows]
    if exp.labels.task == MULTILABEL:
        predicted = [", ".join(n for n, v in zip(names, pr) if v) or som_view.NO_FINDING for pr in pred]
        top = [f"{names[int(p.argmax())]} {p.max():.2f}" for p in P]
    else:
        predicted = [names[int(p.argmax())] for p in P]
        top = [f"{p.max():.2f}" for p in P]
    return pd.DataFrame({
        "Image": images["image_id"].to_numpy()[rows],
        "Split": [ui.SPLIT_LABELS.get(s, s) for s in images["split"].to_numpy()[rows]],
        "Labels": [som_view.split_text(c) for c in images["labels"].to_numpy()[rows]],
        "Predicted": predicted,
        "Top probability": top,
        "QE": qe[rows].round(3),
    })


def class_relations(exp, soms: dict, ctl: dict) -> None:
    st.header("Which classes sit together")
    st.caption("Each class is a vector of its image counts over the map's nodes; the cosine similarity of two such "
               "vectors is 1 when the classes occupy the same nodes in the same proportions and 0 when they never "
               "share a node. High off-diagonal values are the paper's reading: those diseases look alike to the "
               f"network. Counted on: {ctl['split_label'].lower()}.")
    cols = st.columns(len(soms))
    for col, (arch, som) in zip(cols, soms.items()):
        with col:
            nd = node_data(exp, arch, som, ctl["splits"])
            counts = nd.counts()
            sim = som_view.class_cooccurrence(counts)
            st.subheader(ui.arch_label(arch))
            pairs = som_view.closest_pairs(sim, nd.classes, top=3)
            pairs = [p for p in pairs if p[2] >= 0.01]
            if pairs:
                st.markdown("Closest on the map: " + "; ".join(f"**{a}** & **{b}** ({s:.2f})" for a, b, s in pairs))
            else:
                st.markdown("No two classes share nodes: the map separates them completely.")
            st.plotly_chart(relation_heatmap(sim, nd.classes, "Cosine similarity", "Blues", 0, 1),
                            width="stretch", key=f"som_rel_{arch}")
            with st.expander("Share of each class's images on nodes dominated by another class"):
                share = som_view.share_on_dominated(counts)
                st.caption("Row = the class of the images, column = the dominant class of the node they sit on; "
                           "rows sum to 100 %. A large off-diagonal share means the row class is mostly mapped "
                           "among the column class's images.")
                st.dataframe(pd.DataFrame(share, index=pd.Index(nd.classes, name="Images of"), columns=nd.classes)
                             .style.format("{:.0%}", na_rep="—"), width="stretch",
                             height=ui.table_height(pd.DataFrame(index=nd.classes)))


def relation_heatmap(m: np.ndarray, classes: list[str], title: str, scale: str, lo: float, hi: float) -> go.Figure:
    m = np.array(m, np.float64)
    np.fill_diagonal(m, np.nan)  # a class always shares all its nodes with itself: blank, so the scale serves the pairs
    text = [["—" if not np.isfinite(v) else f"{v:.2f}" for v in row] for row in m]
    fig = go.Figure(go.Heatmap(z=np.where(np.isfinite(m), m, None).tolist(), x=classes, y=classes, zmin=lo, zmax=hi,
                               colorscale=scale, text=text, texttemplate="%{text}" if len(classes) <= 8 else None,
                               colorbar=dict(title=dict(text=title), thickness=14),
                               hovertemplate="%{y} & %{x}: %{text}<extra></extra>"))
    size = max(320, 60 + 34 * len(classes))
    fig.update_layout(height=size, font=CHART_FONT, margin=dict(t=10, b=10, l=10, r=10),
                      yaxis=dict(autorange="reversed", tickmode="array", tickvals=classes),
                      xaxis=dict(tickangle=-45, tickmode="array", tickvals=classes))
    return fig


def not_analysed(exp, archs: list[str]) -> None:
    what = "This experiment has" if len(archs) == len(exp.backbones) else \
        ", ".join(ui.arch_label(a) for a in archs) + (" has" if len(archs) == 1 else " have")
    st.warning(f"{what} no self-organizing map yet (the analysis step has not run). To compute it, run in "
               f"`{ui.REPO}`:", icon=":material/warning:")
    st.code(f"python train.py analyze {_runs_arg(exp)}", language="bash")


def _runs_arg(exp) -> str:
    try:
        return str(exp.path.resolve().relative_to(ui.REPO.resolve()))
    except ValueError:
        return f"runs/{exp.path.name}" if exp.path.parent.resolve() == (ui.REPO / "runs").resolve() else str(exp.path)


def forget_other_experiment(exp, soms: dict) -> None:
    """Node numbers belong to one experiment's maps: drop them when another experiment is chosen."""
    previous = st.session_state.get("som_experiment")
    if previous is not None and previous != str(exp.path):
        for key in [k for k in st.session_state if str(k).startswith("som_node_")]:
            del st.session_state[key]
    st.session_state["som_experiment"] = str(exp.path)
    for arch, som in soms.items():
        node = st.session_state.get(_state_key(arch))
        if node is not None and not 0 <= node < len(som["arrays"]["hex_xy"]):
            del st.session_state[_state_key(arch)]


def render(exp) -> None:
    st.title(f"Self-organizing map: {exp.name}")
    st.caption("A self-organizing map (SOM) lays the images' feature vectors on a grid of hexagons, trained on the "
               "training images: similar images land on the same or nearby hexagons, so clusters of a disease, "
               "mixed regions and outliers become visible. One map per backbone; the controls apply to all.")
    soms = {arch: ui.som_result(exp, arch) for arch in exp.backbones}
    missing = [a for a, s in soms.items() if s is None]
    soms = {a: s for a, s in soms.items() if s is not None}
    if missing:
        not_analysed(exp, missing)
    if not soms:
        return
    forget_other_experiment(exp, soms)
    ctl = controls(exp)
    upload = ui.upload_for(exp)
    other = st.session_state.get("upload")
    if upload is None and isinstance(other, dict) and other.get("experiment"):
        st.caption(f"The image uploaded on the diagnose page was scored with experiment "
                   f"'{other['experiment']}'; choose that experiment to see it on its maps.")
    width = 1100 if len(soms) == 1 else 540  # plot area of a map in a wide layout, px (without colour bar)
    cols = st.columns(len(soms))
    for col, (arch, som) in zip(cols, soms.items()):
        with col:
            backbone_map(exp, arch, som, ctl, upload, width)
    class_relations(exp, soms, ctl)


experiment = ui.page_setup("SOM")
if experiment is None:
    ui.no_experiment_help()
else:
    render(experiment)
