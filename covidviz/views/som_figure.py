"""The SOM page's figures, without Streamlit: hexagon geometry, the hexagonal map, the prototype
mosaic, the class-relations heat map and the upload's quantization-error histogram.

Geometry follows ``covidviz.stats.som``: node = i * grid[1] + j, centres ``hex_xy`` with
adjacent centres 1 apart and rows sqrt(3)/2 apart, so every node is a pointy-top hexagon of
circumradius R = 1 / sqrt(3) (flat-to-flat width 1): neighbouring hexagons share an edge exactly.

Performance: a map has up to 2500 nodes. Drawing one plotly trace per hexagon would make the browser
lay out thousands of SVG paths and traces; instead every colour level is ONE ``fill="toself"`` trace
whose hexagons are separated by ``None`` (a continuous layer is binned into ``N_LEVELS`` colours, a
categorical one gets a trace per class x purity level), and an invisible scatter of the centres
carries hover text, the colour bar and click selection. Prototype thumbnails are composed into ONE
RGBA mosaic image (hexagon-masked pictures at the node centres) placed as a single layout image.
What the layers hold (per-node values, class relations) is ``covidviz.views.som``.
"""

from __future__ import annotations

import base64
import io

import numpy as np

from covidviz.views import external as external_view
from covidviz.views import palette
from covidviz.views.som import LAYERS, NodeData, grid_shape, layer_values, node_cell, set_node_data
from covidviz.views.style import CHART_FONT, MAIN_WIDTH, SELECTION_COLOUR, UPLOAD_COLOUR, class_colours

R = 1.0 / np.sqrt(3.0)          # circumradius of a hexagon whose neighbours are 1 apart
N_LEVELS = 24                   # colour levels of a continuous layer
PURITY_LEVELS = (0.5, 0.75, 1.0)  # upper edges of the purity bins of the dominant-class layer
PURITY_ALPHA = (0.3, 0.6, 1.0)    # fill opacity of those bins
EMPTY_COLOUR = "#e6e6e6"
HALO_COLOUR = "white"           # under the selection and upload outlines, so they show on dark hexagons too
TRAINING_COLOUR = "#9aa5b1"     # the training images' QE histogram
# A map spans the page's main column (``style.MAIN_WIDTH``: px at a 1280 px window; the chart stretches to
# its container): side by side, two maps of an 11x9 grid were 300 px wide at 1280, too small to read.
MAP_WIDTH = MAIN_WIDTH


# ---------------------------------------------------------------- geometry

def hexagon_vertices(hex_xy: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """(n, 6, 2) vertices of the pointy-top hexagon around every centre (counter-clockwise from the top)."""
    angles = np.deg2rad(90.0 + 60.0 * np.arange(6))
    offsets = scale * R * np.column_stack([np.cos(angles), np.sin(angles)])
    return np.asarray(hex_xy, np.float64)[:, None, :] + offsets[None, :, :]


def polygon_path(vertices: np.ndarray) -> tuple[list, list]:
    """x, y lists of closed polygons separated by None: one plotly trace draws them all."""
    n = len(vertices)
    if n == 0:
        return [], []
    closed = np.concatenate([vertices, vertices[:, :1]], axis=1)  # (n, 7, 2)
    xs = np.full((n, 8), np.nan)
    ys = np.full((n, 8), np.nan)
    xs[:, :7], ys[:, :7] = closed[..., 0], closed[..., 1]
    x = [None if np.isnan(v) else round(float(v), 4) for v in xs.ravel()]
    y = [None if np.isnan(v) else round(float(v), 4) for v in ys.ravel()]
    return x, y


def neighbours(hex_xy: np.ndarray) -> list[np.ndarray]:
    """Adjacent nodes of every node (centres 1 apart)."""
    from scipy.spatial import cKDTree

    tree = cKDTree(np.asarray(hex_xy, np.float64))
    return [np.array(sorted(set(n) - {i}), dtype=np.int64)
            for i, n in enumerate(tree.query_ball_point(np.asarray(hex_xy, np.float64), 1.0 + 1e-6))]


def map_extent(hex_xy: np.ndarray) -> tuple[float, float, float, float]:
    """x0, x1, y0, y1 that hold every hexagon whole."""
    xy = np.asarray(hex_xy, np.float64)
    return (float(xy[:, 0].min() - 0.5), float(xy[:, 0].max() + 0.5),
            float(xy[:, 1].min() - R), float(xy[:, 1].max() + R))


# ---------------------------------------------------------------- colours

def _rgba(hex_colour: str, alpha: float) -> str:
    h = hex_colour.lstrip("#")
    r, g, b = (int(h[k:k + 2], 16) for k in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha:.2f})"


def bin_values(values: np.ndarray, lo: float, hi: float, levels: int = N_LEVELS) -> np.ndarray:
    """Level 0..levels-1 of every finite value on [lo, hi]; -1 for NaN."""
    v = np.asarray(values, np.float64)
    span = hi - lo if hi > lo else 1.0
    lev = np.clip(np.floor((v - lo) / span * levels), 0, levels - 1)
    return np.where(np.isfinite(v), lev, -1).astype(np.int64)


# ---------------------------------------------------------------- the figure

CONTINUOUS_SCALE = "Viridis"
# light = close neighbours (a cluster), dark = a boundary between clusters; starts at light grey so
# the lowest hexagons stay visible on the white background.
UMATRIX_SCALE = [[0.0, "#ebebeb"], [1.0, "#111111"]]
ERROR_SCALE = "Reds"


def colourscale_for(layer: str):
    return {"umatrix": UMATRIX_SCALE, "error": ERROR_SCALE}.get(layer, CONTINUOUS_SCALE)


def som_figure(hex_xy: np.ndarray, layer: dict, layer_name: str, hover: list[str], classes: list[str],
               highlight: int | None = None, upload: int | None = None, mosaic: str | None = None,
               height: int = 560, title: str | None = None, colours: dict[str, str] | None = None,
               upload_label: str = "your upload"):
    """The hexagonal map: filled hexagons (one trace per colour level), a centres trace (hover, colour
    bar, clicks; trace named ``"nodes"``), the selected node outlined and the upload's node starred.
    ``mosaic`` is a data-URI PNG from ``prototype_mosaic`` drawn over the hexagons. A categorical layer's
    colours: ``colours`` (category -> colour) where given, else each class's own (``class_colours``); no
    two categories share one (``palette.legend_colours``: the rarest grouped as "other" if need be)."""
    import plotly.graph_objects as go
    from plotly.colors import sample_colorscale

    xy = np.asarray(hex_xy, np.float64)
    inner = 0.97 if mosaic is None else 1.0
    verts = hexagon_vertices(xy, inner)
    fig = go.Figure()
    values = layer["values"]

    def add_group(members: np.ndarray, colour: str, name: str | None = None, legend: bool = False,
                  group: str | None = None):
        if not len(members):
            return
        x, y = polygon_path(verts[members])
        fig.add_trace(go.Scatter(x=x, y=y, fill="toself", fillcolor=colour, mode="lines",
                                 line=dict(width=0.5 if mosaic is None else 0, color="rgba(255,255,255,0.6)"),
                                 hoverinfo="skip", name=name or "", showlegend=legend,
                                 legendgroup=group))

    if layer["kind"] == "categorical":
        dom, purity = layer["dominant"], layer["purity"]
        own, others = palette.legend_colours(classes, colours if colours is not None else class_colours(classes))
        # purity bin 0: <= 50 %, 1: <= 75 %, 2: above (paler = a more mixed node)
        pbin = np.digitize(np.nan_to_num(purity, nan=0.0), PURITY_LEVELS[:-1], right=True)
        ks = {cls: [k] for k, cls in enumerate(classes) if cls in own}
        if others:
            ks[palette.OTHER] = [classes.index(c) for c in others]
        for cls, k in ks.items():
            first, colour = True, own.get(cls, palette.OTHER_COLOUR)
            for b, alpha in enumerate(PURITY_ALPHA):
                members = np.flatnonzero(np.isin(dom, k) & (pbin == b))
                if len(members):
                    if first:  # legend swatch in the full colour (the fills vary with purity)
                        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=cls, legendgroup=cls,
                                                 marker=dict(symbol="hexagon", size=14, color=colour),
                                                 showlegend=True, hoverinfo="skip"))
                    add_group(members, _rgba(colour, alpha), cls, group=cls)
                    first = False
        add_group(np.flatnonzero(dom < 0), EMPTY_COLOUR, "no images", legend=True)
    else:
        lo, hi = layer["range"]
        scale = colourscale_for(layer_name)
        levels = bin_values(values, lo, hi)
        colours = sample_colorscale(scale, [(k + 0.5) / N_LEVELS for k in range(N_LEVELS)])
        for k in range(N_LEVELS):
            add_group(np.flatnonzero(levels == k), colours[k])
        empty = np.flatnonzero(levels < 0)
        if len(empty):
            add_group(empty, EMPTY_COLOUR, "no images", legend=True)

    marker = dict(size=max(4, min(22, int(600 / max(np.ptp(xy[:, 0]) + 1, 1)))), opacity=0)
    if layer["kind"] == "continuous":
        lo, hi = layer["range"]
        marker.update(color=np.nan_to_num(values, nan=lo).tolist(), cmin=lo, cmax=hi,
                      colorscale=colourscale_for(layer_name), showscale=True,
                      colorbar=dict(title=dict(text=layer["title"]), thickness=14, len=0.85))
    fig.add_trace(go.Scatter(x=xy[:, 0].round(4).tolist(), y=xy[:, 1].round(4).tolist(), mode="markers",
                             marker=marker, name="nodes", showlegend=False, customdata=np.arange(len(xy)).tolist(),
                             text=hover, hovertemplate="%{text}<extra></extra>",
                             selected=dict(marker=dict(opacity=0)), unselected=dict(marker=dict(opacity=0))))
    # Selected node and upload: layout shapes, drawn above the prototype mosaic (which covers traces),
    # each over a white halo so that it shows on the darkest hexagons too.
    for node, colour, width, dash, label in ((upload, UPLOAD_COLOUR, 4.5, "dot", upload_label),
                                            (highlight, SELECTION_COLOUR, 3.5, "solid", "selected node")):
        if node is None or not 0 <= node < len(xy):
            continue
        v = hexagon_vertices(xy[[node]], 1.0)[0]
        path = "M " + " L ".join(f"{a:.4f},{b:.4f}" for a, b in v) + " Z"
        for line in (dict(color=HALO_COLOUR, width=width + 3), dict(color=colour, width=width, dash=dash)):
            fig.add_shape(type="path", path=path, xref="x", yref="y", layer="above", line=line)
        # A legend entry for the shape (shapes have none of their own).
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", line=dict(color=colour, width=width, dash=dash),
                                 name=label, showlegend=True, hoverinfo="skip"))
    if upload is not None and 0 <= upload < len(xy) and mosaic is None:
        fig.add_trace(go.Scatter(x=[float(xy[upload, 0])], y=[float(xy[upload, 1])], mode="markers",
                                 marker=dict(symbol="star", size=18, color=UPLOAD_COLOUR,
                                             line=dict(color="black", width=1.5)),
                                 hoverinfo="skip", name=upload_label, showlegend=False))
    x0, x1, y0, y1 = map_extent(xy)
    if mosaic is not None:
        fig.add_layout_image(dict(source=mosaic, xref="x", yref="y", x=x0, y=y1, sizex=x1 - x0, sizey=y1 - y0,
                                  xanchor="left", yanchor="top", sizing="stretch", layer="above", opacity=1.0))
    fig.update_xaxes(visible=False, range=[x0 - 0.1, x1 + 0.1], constrain="domain")
    fig.update_yaxes(visible=False, range=[y0 - 0.1, y1 + 0.1], scaleanchor="x", scaleratio=1)
    fig.update_layout(height=height, margin=dict(t=40 if title else 10, b=10, l=10, r=10), title=title,
                      plot_bgcolor="white", dragmode="pan", clickmode="event+select", font=CHART_FONT,
                      legend=dict(orientation="h", yanchor="top", y=-0.02, x=0), hoverlabel=dict(align="left"))
    return fig


def prototype_mosaic(hex_xy: np.ndarray, thumbs: np.ndarray, prototype: np.ndarray, px_per_unit: int | None = None,
                     inner: float = 0.8, max_width: int = 1200) -> str:
    """One RGBA PNG (data URI) covering ``map_extent``: every node's prototype thumbnail, masked to a
    hexagon of ``inner`` x the node's size at the node's centre; transparent elsewhere, so the layer's
    colour stays visible as a rim around each picture."""
    from PIL import Image

    xy = np.asarray(hex_xy, np.float64)
    x0, x1, y0, y1 = map_extent(xy)
    if px_per_unit is None:
        px_per_unit = int(np.clip(max_width / (x1 - x0), 12, 64))
    s = float(px_per_unit)
    W, H = int(np.ceil((x1 - x0) * s)), int(np.ceil((y1 - y0) * s))
    r = inner * R * s
    P = max(2, int(np.ceil(2 * r)))
    # Hexagon mask of a P x P patch (pointy top): |dx| <= w/2 and |dy| <= r - |dx| / sqrt(3)
    c = (P - 1) / 2.0
    dy, dx = np.mgrid[0:P, 0:P] - c
    mask = (np.abs(dx) <= r * np.sqrt(3) / 2) & (np.abs(dy) <= r - np.abs(dx) / np.sqrt(3))
    proto = np.asarray(prototype, np.int64)
    t = np.asarray(thumbs)
    idx = np.clip((np.arange(P) + 0.5) * t.shape[1] / P, 0, t.shape[1] - 1).astype(np.int64)
    patches = np.asarray(t[np.sort(np.unique(proto))])
    lookup = {int(p): k for k, p in enumerate(np.sort(np.unique(proto)))}
    patches = patches[:, idx][:, :, idx]  # nearest-neighbour resize to P x P
    canvas = np.zeros((H, W, 4), np.uint8)
    for n, (cx, cy) in enumerate(xy):
        col = int(round((cx - x0) * s - c))
        row = int(round((y1 - cy) * s - c))
        r0, c0 = max(row, 0), max(col, 0)
        r1, c1 = min(row + P, H), min(col + P, W)
        if r1 <= r0 or c1 <= c0:
            continue
        patch = patches[lookup[int(proto[n])]][r0 - row:r1 - row, c0 - col:c1 - col]
        m = mask[r0 - row:r1 - row, c0 - col:c1 - col]
        region = canvas[r0:r1, c0:c1]
        region[m, 0] = region[m, 1] = region[m, 2] = patch[m]
        region[m, 3] = 255
    buf = io.BytesIO()
    Image.fromarray(canvas, "RGBA").save(buf, format="PNG", optimize=False, compress_level=3)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def map_height(hex_xy: np.ndarray, width_px: int, lo: int = 320, hi: int = 820) -> int:
    """Figure height that fits the map's aspect ratio at ``width_px`` (equal axis scales), plus margins."""
    x0, x1, y0, y1 = map_extent(hex_xy)
    return int(np.clip(width_px * (y1 - y0) / max(x1 - x0, 1e-9) + 70, lo, hi))


def node_from_selection(selection, trace_index: int) -> int | None:
    """The node clicked in a ``st.plotly_chart`` selection event (points of the centres trace only)."""
    try:
        points = (selection or {}).get("selection", {}).get("points", [])
    except AttributeError:
        return None
    for p in points:
        if p.get("curve_number") == trace_index:
            cd = p.get("customdata")
            if isinstance(cd, (list, tuple)):
                cd = cd[0] if cd else None
            if cd is not None:
                return int(cd)
            if p.get("point_index") is not None:
                return int(p["point_index"])
    return None


def centres_trace_index(fig) -> int:
    return next(k for k, t in enumerate(fig.data) if t.name == "nodes")


def hover_texts(nd: NodeData, layer: dict, layer_label: str, umatrix: np.ndarray, grid=None) -> list[str]:
    """One hover line block per node: id (and its column and row when ``grid`` is given), images,
    dominant class and purity, the layer's value."""
    counts = nd.counts()
    hits = nd.hits()
    dom = counts.argmax(axis=1)
    out = []
    vals = layer["values"]
    for n in range(nd.n_nodes):
        name = f"node {n}" if grid is None else "node {} (column {}, row {})".format(n, *node_cell(n, grid))
        if hits[n] == 0:
            out.append(f"{name}<br>no images<br>U-matrix {umatrix[n]:.2f}")
            continue
        share = counts[n, dom[n]] / hits[n]
        v = vals[n]
        vtxt = "" if layer["kind"] == "categorical" or not np.isfinite(v) else f"<br>{layer_label}: {v:.3g}"
        out.append(f"{name}<br>{hits[n]} images<br>{nd.classes[dom[n]]} {share:.0%}{vtxt}")
    return out



def external_markers(hex_xy: np.ndarray, external: dict[str, np.ndarray], used=()) -> list:
    """One trace per external set: an outlined diamond (no fill, so the hexagon's colour shows through) on
    every node holding some of its images (size by count, nudged per set so that two sets on a node stay
    apart), in a palette colour that the map's legend does not show (``used``: its colours), else the
    "other" grey; hover = the set and its count there."""
    import plotly.graph_objects as go

    xy = np.asarray(hex_xy, np.float64)
    spare = palette.free_colours(used, len(external))
    colours = {external_view.test_set_label(s): spare[k] if k < len(spare) else palette.OTHER_COLOUR
               for k, s in enumerate(external)}
    traces = []
    for k, (site, nodes) in enumerate(external.items()):
        counts = np.bincount(np.asarray(nodes, np.int64).reshape(-1), minlength=len(xy))[:len(xy)]
        held = np.flatnonzero(counts)
        if not len(held):
            continue
        dx = 0.18 * (k - (len(external) - 1) / 2)
        size = 7 + 9 * np.sqrt(counts[held] / counts.max())
        name = external_view.test_set_label(site)
        traces.append(go.Scatter(x=(xy[held, 0] + dx).round(4).tolist(), y=xy[held, 1].round(4).tolist(), mode="markers",
                                 name=f"{name} ({int(counts.sum())})", showlegend=True,
                                 marker=dict(symbol="diamond-open", size=size.round(1).tolist(), color=colours[name],
                                             line=dict(color=colours[name], width=2.5)),
                                 text=[f"External: {site}<br>node {n}: {counts[n]} images" for n in held],
                                 hovertemplate="%{text}<extra></extra>"))
    return traces


def backbone_figure(arrays: dict, nd: NodeData, layer: str, cls: int = 0, thresholds: dict[str, float] | None = None,
                    highlight: int | None = None, upload: int | None = None, mosaic: str | None = None,
                    width: int = MAP_WIDTH, external: dict[str, np.ndarray] | None = None, splits=None,
                    upload_label: str = "your upload"):
    """One backbone's map as the page shows it: ``layer`` (a key of ``LAYERS``) over the SOM's
    ``arrays`` (som.npz: ``hex_xy``, ``umatrix``), hover text per node, sized to fit ``width`` px.
    ``upload_label``: the Diagnose page's image in the legend ("your upload", "test image ID").
    ``external``: site -> best-matching nodes of its images, drawn as diamonds; with the "set" layer they
    are counted with the internal images (``splits``: every image's split) by ``set_node_data``."""
    external = external or {}
    colours = None
    if layer == "set":
        nd = set_node_data(nd, splits, external)
        colours = palette.set_colours(external_view.set_order(external))  # as the external markers
    values = layer_values(nd, layer, cls, umatrix=arrays["umatrix"], thresholds=thresholds)
    hover = hover_texts(nd, values, LAYERS[layer].split(" (")[0], arrays["umatrix"], grid_shape(arrays["hex_xy"]))
    fig = som_figure(arrays["hex_xy"], values, layer, hover, nd.classes, highlight=highlight, upload=upload,
                     mosaic=mosaic, height=map_height(arrays["hex_xy"], width), colours=colours,
                     upload_label=upload_label)
    if layer != "set":  # on the "Set" layer the sites are counted in the hexagons' colours instead
        used = {str(t.marker.color) for t in fig.data if t.showlegend and isinstance(t.marker.color, str)}
        fig.add_traces(external_markers(arrays["hex_xy"], external, used))
    return fig


# ---------------------------------------------------------------- class relations and the upload's QE

def relation_heatmap(m: np.ndarray, classes: list[str], title: str = "Cosine similarity", scale: str = "Blues",
                     lo: float = 0.0, hi: float = 1.0):
    """Class x class heat map of ``m`` with a blank diagonal (a class always shares all its nodes with
    itself), values written in the cells up to 8 classes."""
    import plotly.graph_objects as go

    m = np.array(m, np.float64)
    np.fill_diagonal(m, np.nan)  # blank, so the colour scale serves the pairs
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


def qe_histogram(train_qe: np.ndarray, qe: float, label: str):
    """The training images' quantization errors, with the upload's as a vertical line labelled ``label``."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Histogram(x=np.asarray(train_qe, np.float64), nbinsx=40, marker_color=TRAINING_COLOUR,
                                 name="training images",
                                 hovertemplate="QE %{x}<br>%{y} training images<extra></extra>"))
    fig.add_vline(x=float(qe), line_color=UPLOAD_COLOUR, line_width=3, annotation_text=label,
                  annotation_position="top right")
    fig.update_layout(height=220, font=CHART_FONT, margin=dict(t=30, b=10, l=10, r=10), bargap=0.05,
                      xaxis_title="Quantization error (distance to best node)", yaxis_title="Training images",
                      showlegend=False)
    return fig
