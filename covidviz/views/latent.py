"""Data shaping for the latent-space page (no streamlit here, so all of it is unit-testable).

The page shows each backbone's 2-D maps (``projections.npz``: ``coords_<method>`` (N, 2), row-aligned
with ``images.parquet``) as WebGL scatter plots. Everything is keyed by the *row* of
``images.parquet``: the same row is the same image in every backbone's map, so a selection made on
one map is highlighted on the other, in the gallery, the CSV and the detail view.

Cost model (N images, S selected): ``point_table`` and ``base_figure`` are O(N) and the page caches
them; everything that depends on the selection (overlay traces, gallery page, class mix, CSV) is
O(S). Nothing is downsampled: every image is drawn.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from covidviz import runs
from covidviz.data.labels import MULTILABEL, split_labels
from covidviz.views.style import MISSING_COLOUR, NO_FINDING, PALETTE, UNKNOWN

METHOD_NAMES = {"tsne": "t-SNE", "umap": "UMAP", "pca": "PCA"}
METHOD_ORDER = ("tsne", "umap", "pca")
COLOUR_BY = {
    "label": "True label",
    "prediction": "Prediction",
    "outcome": "Outcome for a class (TP/FP/FN/TN)",
    "confidence": "Confidence (top probability)",
    "split": "Split",
    "source": "Source",
    "sex": "Sex",
    "age": "Age",
}
NUMERIC = {"confidence", "age"}
OUTCOMES = ("TP", "FN", "FP", "TN")
OUTCOME_COLOURS = {"TP": "#009E73", "FN": "#D55E00", "FP": "#E69F00", "TN": "#56B4E9"}
SELECTED_COLOUR = "#000000"
NEIGHBOUR_COLOUR = "#FF00FF"
UPLOAD_COLOUR = "#FF00FF"
GALLERY_PAGE = 24
QUALITY_HELP = ("Trustworthiness (0–1): how far the map's neighbours are also neighbours in the backbone's "
                "features; kNN label agreement: the share of each image's 10 nearest map neighbours with its "
                "label — close to the features' value means the map keeps the class structure, much lower "
                "means the picture mixes classes that the features separate.")


# ---------------------------------------------------------------- what the experiment holds

def analysed_backbones(exp: runs.Experiment) -> list[str]:
    """Backbones whose projections were computed (``train.py analyze`` has run)."""
    return [a for a in exp.backbones
            if exp.has_artifact(runs.PROJECTIONS, a) and exp.has_artifact(runs.PROJECTIONS_INFO, a)]


def analyze_command(exp: runs.Experiment, repo) -> str:
    """``python train.py analyze runs/<name>`` (the path relative to the repository when it is inside)."""
    try:
        where = exp.path.resolve().relative_to(repo.resolve())
    except ValueError:
        where = exp.path
    return f"python train.py analyze {where}"


@dataclass
class Maps:
    """One backbone's 2-D maps and their quality."""

    coords: dict[str, np.ndarray]   # method -> float32 (N, 2)
    quality: dict                   # projections.json "quality"
    params: dict

    @property
    def methods(self) -> list[str]:
        return [m for m in METHOD_ORDER if m in self.coords] + [m for m in self.coords if m not in METHOD_ORDER]


def load_maps(exp: runs.Experiment, arch: str) -> Maps:
    arrays = exp.load_arrays(runs.PROJECTIONS, arch)
    info = exp.load_json(runs.PROJECTIONS_INFO, arch)
    n = len(exp.images())
    coords = {}
    for key, value in arrays.items():
        if key.startswith("coords_"):
            value = np.asarray(value, dtype=np.float32)
            if value.shape != (n, 2):
                raise runs.RunFormatError(f"{exp.path}: {arch} {key} has shape {value.shape}, expected ({n}, 2)")
            coords[key.removeprefix("coords_")] = value
    return Maps(coords, info.get("quality") or {}, info.get("params") or {})


def quality_rows(maps: Maps, method: str) -> list[tuple[str, str]]:
    """(measure, value) lines for the quality panel of one map."""
    q = maps.quality or {}
    m = q.get(method) or {}

    def fmt(v):
        return "—" if v is None else f"{float(v):.2f}"
    rows = [("Trustworthiness", fmt(m.get("trustworthiness"))),
            ("kNN label agreement (map)", fmt(m.get("knn_agreement"))),
            ("kNN label agreement (features)", fmt(q.get("features_knn_agreement")))]
    if q.get("sample_size"):
        rows.append(("Measured on", f"{int(q['sample_size']):,} images, k = {q.get('k', 10)}"))
    return rows


# ---------------------------------------------------------------- the per-image table of one backbone

def youden_threshold(exp: runs.Experiment, arch: str, cls: str) -> tuple[float, str]:
    """The validation-chosen Youden threshold for ``cls``, else 0.5; and where it came from."""
    analysis = exp.analysis()
    t = analysis.backbone(arch).point(cls, "youden").threshold if analysis is not None else None
    if t is None or not np.isfinite(float(t)):
        return 0.5, "0.5 (no Youden threshold stored)"
    return float(t), f"{float(t):.3f} (Youden, validation)"


def primary_labels(label_cells, names: list[str], multilabel: bool) -> np.ndarray:
    """One display label per image: its (first) label, or 'No finding'."""
    out = []
    for cell in label_cells:
        labs = [lab for lab in split_labels(cell) if lab in names]
        if not labs:
            out.append(NO_FINDING)
        elif multilabel and len(labs) > 1:
            out.append(labs[0] + " +")  # several findings: the first, marked
        else:
            out.append(labs[0])
    return np.asarray(out, dtype=object)


def point_table(images: pd.DataFrame, probs: np.ndarray, names: list[str], task: str) -> pd.DataFrame:
    """One row per image (index = images.parquet row): what the map colours and shows on hover."""
    multilabel = task == MULTILABEL
    top = probs.argmax(1)
    src = images["source"].astype(str)
    src = src.where(src.str.len() > 0, images["dataset"].astype(str))
    sex = images["sex"].astype(str).map({"M": "Male", "F": "Female"}).fillna(UNKNOWN)
    df = pd.DataFrame({
        "image_id": images["image_id"].astype(str).to_numpy(),
        "labels": images["labels"].astype(str).to_numpy(),
        "label": primary_labels(images["labels"], names, multilabel),
        "prediction": np.asarray(names, dtype=object)[top],
        "confidence": probs.max(1).astype(np.float32),
        "split": images["split"].astype(str).to_numpy(),
        "source": src.to_numpy(),
        "sex": sex.to_numpy(),
        "age": pd.to_numeric(images["age"], errors="coerce").to_numpy(np.float64),
    })
    return df


def outcomes(images: pd.DataFrame, probs: np.ndarray, names: list[str], cls: str, threshold: float) -> np.ndarray:
    """TP/FP/FN/TN per image for one class at ``threshold`` (positive = probability >= threshold)."""
    j = names.index(cls)
    truth = np.array([cls in split_labels(c) for c in images["labels"]])
    pred = probs[:, j] >= threshold
    out = np.where(truth, np.where(pred, "TP", "FN"), np.where(pred, "FP", "TN"))
    return out.astype(object)


def colour_groups(values: np.ndarray, order: list[str] | None = None) -> list[tuple[str, np.ndarray]]:
    """Category -> rows, in ``order`` (then the rest by size), 'unknown'/'' last."""
    values = np.asarray(values, dtype=object)
    values = np.where(pd.isna(values) | (values == ""), UNKNOWN, values)
    cats, inverse = np.unique(values.astype(str), return_inverse=True)
    rows_by = {c: np.flatnonzero(inverse == i) for i, c in enumerate(cats)}
    first = [c for c in (order or []) if c in rows_by]
    rest = sorted((c for c in rows_by if c not in first and c != UNKNOWN), key=lambda c: -len(rows_by[c]))
    tail = [UNKNOWN] if UNKNOWN in rows_by and UNKNOWN not in first else []
    return [(c, rows_by[c]) for c in first + rest + tail]


# ---------------------------------------------------------------- figures

def _hover(names: list[str]) -> str:
    probs = "<br>".join(f"P({n}) = %{{customdata[{j + 1}]:.3f}}" for j, n in enumerate(names))
    return "%{text}<br>" + probs + "<extra></extra>"


def base_figure(coords: np.ndarray, table: pd.DataFrame, probs: np.ndarray, names: list[str], colour_by: str,
                colour_values=None, order: list[str] | None = None, title: str = "",
                height: int = 620) -> go.Figure:
    """The O(N) part of a map: one WebGL trace per colour (or one colour-scaled trace).

    Every trace's ``customdata`` holds (row, probabilities...), so a selection or click maps back to
    images.parquet rows whatever the trace; ``text`` is the hover's id and labels.
    """
    values = table[colour_by].to_numpy() if colour_values is None else colour_values
    # Hover text = id + labels only (probabilities come from customdata): at 100k points every
    # character here costs 100 kB of page weight per map.
    text = (table["image_id"].astype(str) + "<br>" + table["labels"].replace("", NO_FINDING).astype(str)).to_numpy()
    custom = np.column_stack([np.arange(len(table), dtype=np.float32), probs.astype(np.float32)])
    size = 4 if len(table) > 20000 else (6 if len(table) > 2000 else 8)
    fig = go.Figure()
    hover = _hover(names)

    def add(rows, name, marker, showlegend=True):
        fig.add_trace(go.Scattergl(x=coords[rows, 0], y=coords[rows, 1], mode="markers", name=name,
                                   marker=marker, text=text[rows], customdata=custom[rows],
                                   hovertemplate=hover, showlegend=showlegend))

    if colour_by in NUMERIC:
        v = np.asarray(values, dtype=np.float64)
        known = np.flatnonzero(np.isfinite(v))
        missing = np.flatnonzero(~np.isfinite(v))
        if len(known):
            add(known, COLOUR_BY[colour_by], dict(size=size, color=v[known], colorscale="Viridis", showscale=True,
                                                 colorbar=dict(title=COLOUR_BY[colour_by].split(" (")[0], thickness=12)),
                showlegend=False)
        if len(missing):
            add(missing, f"{UNKNOWN} ({len(missing):,})", dict(size=size, color=MISSING_COLOUR))
    else:
        for k, (cat, rows) in enumerate(colour_groups(values, order)):
            colour = (OUTCOME_COLOURS.get(cat) if colour_by == "outcome" else None) or (
                MISSING_COLOUR if cat == UNKNOWN else PALETTE[k % len(PALETTE)])
            add(rows, f"{cat} ({len(rows):,})", dict(size=size, color=colour))
    fig.update_layout(
        title=title, height=height, dragmode="select", font=dict(size=14), hovermode="closest",
        legend=dict(orientation="h", yanchor="top", y=-0.04, itemsizing="constant"),
        margin=dict(t=40 if title else 10, b=10, l=10, r=10),
        xaxis=dict(showticklabels=False, title=None, zeroline=False),
        yaxis=dict(showticklabels=False, title=None, zeroline=False, scaleanchor="x", scaleratio=1),
        uirevision="latent")  # keep zoom and pan when the overlays change
    return fig


def overlay_traces(coords: np.ndarray, selected=(), opened: int | None = None, upload_xy=None,
                   neighbours=(), size: int = 9) -> list[go.Scattergl]:
    """The O(selection) part: rings round the selection and the upload's neighbours, the upload itself,
    and the opened image. Their customdata is the row (-1 for the upload) so clicks on them work too."""
    traces = []

    def ring(rows, name, colour, symbol="circle-open", width=1.5, sz=size):
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows):
            traces.append(go.Scattergl(
                x=coords[rows, 0], y=coords[rows, 1], mode="markers", name=name,
                marker=dict(symbol=symbol, size=sz, color=colour, line=dict(width=width, color=colour)),
                customdata=rows[:, None].astype(np.float32), hovertemplate="row %{customdata[0]}<extra>" + name + "</extra>"))

    ring(selected, f"selected ({len(selected):,})", SELECTED_COLOUR)
    ring(neighbours, f"upload's nearest neighbours ({len(neighbours)})", NEIGHBOUR_COLOUR, "diamond-open", 2, size + 3)
    if opened is not None:
        ring([opened], "opened image", "#D55E00", "x-thin-open", 3, size + 8)
    if upload_xy is not None:
        traces.append(go.Scattergl(x=[float(upload_xy[0])], y=[float(upload_xy[1])], mode="markers", name="your upload",
                                   marker=dict(symbol="star", size=22, color=UPLOAD_COLOUR, line=dict(width=1.5, color="black")),
                                   customdata=[[-1.0]], hovertemplate="your upload<extra></extra>"))
    return traces


# ---------------------------------------------------------------- selection -> rows

def selection_rows(selection) -> np.ndarray:
    """images.parquet rows of a plotly selection (``event.selection`` or its dict), in selection order,
    without duplicates (an image can sit in a base trace and an overlay ring) and without the upload."""
    points = (selection or {}).get("points") or []
    rows = []
    for p in points:
        cd = p.get("customdata")
        if cd is None:
            continue
        # The browser sends a typed-array row as a list, or as an object {"0": row, "1": p0, ...}.
        if isinstance(cd, dict):
            r = cd.get("0", cd.get(0))
        else:
            r = cd[0] if isinstance(cd, (list, tuple)) else cd
        try:
            r = int(round(float(r)))
        except (TypeError, ValueError):
            continue
        if r >= 0:
            rows.append(r)
    if not rows:
        return np.zeros(0, np.int64)
    rows = np.asarray(rows, np.int64)
    _, first = np.unique(rows, return_index=True)
    return rows[np.sort(first)]


def selection_signature(selection) -> tuple:
    """A cheap identity of a selection state, to tell which map the user changed last."""
    sel = selection or {}
    return (len(sel.get("points") or []), repr(sel.get("box") or [])[:500], repr(sel.get("lasso") or [])[:500],
            tuple(selection_rows(sel)[:5]))


# ---------------------------------------------------------------- gallery, class mix, CSV (all O(selection))

def page_count(n: int, per_page: int = GALLERY_PAGE) -> int:
    return max(1, -(-n // per_page))


def gallery_page(rows: np.ndarray, page: int, per_page: int = GALLERY_PAGE) -> np.ndarray:
    """Rows shown on 1-based ``page`` (clamped to the valid range)."""
    page = min(max(1, int(page)), page_count(len(rows), per_page))
    return np.asarray(rows)[(page - 1) * per_page: page * per_page]


def gallery_caption(table: pd.DataFrame, row: int, names: list[str], probs: np.ndarray) -> str:
    r = table.iloc[int(row)]
    j = int(np.argmax(probs[int(row)]))
    true = r["labels"].replace("|", ", ") or NO_FINDING
    return f"{r['image_id'][-16:]} · true: {true} · pred: {names[j]} {probs[int(row), j]:.2f}"


def thumbnail_html(thumb: np.ndarray, alt: str) -> str:
    """An inline (data-URI PNG) <img> of a uint8 thumbnail: it shows with the page's own update, without
    a media request queued behind the maps' redraw in the browser (a 64x64 PNG is ~2-4 kB)."""
    import base64
    import html

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(thumb, dtype=np.uint8)).save(buf, format="PNG")
    src = base64.b64encode(buf.getvalue()).decode()
    return (f'<img class="latent-thumb" alt="{html.escape(alt)}" src="data:image/png;base64,{src}" '
            'style="width:100%;aspect-ratio:1;border-radius:4px;display:block">')


def class_mix(tables: dict[str, pd.DataFrame], rows: np.ndarray, names: list[str]) -> pd.DataFrame:
    """Counts and shares of the selection's true labels and of each backbone's predictions."""
    rows = np.asarray(rows, np.int64)
    order = list(names) + [NO_FINDING]
    first = next(iter(tables.values()))
    truth = pd.Series([lab for c in first["labels"].to_numpy()[rows] for lab in (split_labels(c) or [NO_FINDING])])
    out = pd.DataFrame(index=pd.Index(order, name="Class"))
    out["True label"] = truth.value_counts().reindex(order, fill_value=0)
    for name, t in tables.items():
        pred = pd.Series(t["prediction"].to_numpy()[rows], dtype=object)
        out[f"Predicted by {name}"] = pred.value_counts().reindex(order, fill_value=0)
    out = out.fillna(0).astype(int)
    out = out[(out != 0).any(axis=1)]
    if len(rows):
        out.insert(1, "Share (true)", (out["True label"] / len(rows)).map(lambda v: f"{v:.0%}"))
    return out


def selection_csv(images: pd.DataFrame, rows: np.ndarray, probs: dict[str, np.ndarray], names: list[str],
                  coords: dict[str, np.ndarray] | None = None) -> bytes:
    """CSV of the selected images: identity, metadata, each backbone's prediction and probabilities."""
    rows = np.asarray(rows, np.int64)
    cols = [c for c in ("image_id", "path", "labels", "split", "patient_id", "source", "sex", "age") if c in images]
    df = images.iloc[rows][cols].reset_index(names="row")
    for arch, p in probs.items():
        sub = p[rows]
        df[f"{arch}:prediction"] = np.asarray(names, dtype=object)[sub.argmax(1)] if len(rows) else []
        for j, n in enumerate(names):
            df[f"{arch}:p::{n}"] = np.round(sub[:, j], 5)
    for key, c in (coords or {}).items():
        df[f"{key}:x"], df[f"{key}:y"] = c[rows, 0], c[rows, 1]
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    return buf.getvalue().encode()


# ---------------------------------------------------------------- the upload from the diagnose page

def upload_for(upload, exp_names, arch: str, method: str):
    """(coords (2,) or None, neighbour rows, distances, record) of the diagnose page's upload on this map,
    or None when there is no upload for this experiment (any of ``exp_names``: its name or folder) or
    backbone."""
    names = {exp_names} if isinstance(exp_names, str) else set(exp_names)
    if not isinstance(upload, dict) or upload.get("experiment") not in names:
        return None
    rec = (upload.get("backbones") or {}).get(arch)
    if not isinstance(rec, dict):
        return None
    xy = (rec.get("coords") or {}).get(method)
    xy = None if xy is None or len(xy) != 2 else np.asarray(xy, dtype=np.float64)
    nbrs = np.asarray(rec.get("neighbors") or [], dtype=np.int64).ravel()
    dists = np.asarray(rec.get("distances") or [], dtype=np.float64).ravel()
    return xy, nbrs, dists, rec
