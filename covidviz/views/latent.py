"""Data shaping for the latent-space page (no streamlit here, so all of it is unit-testable).

The page shows each backbone's 2-D maps (``projections.npz``: ``coords_<method>`` (N, 2), row-aligned
with ``images.parquet``) as WebGL scatter plots. Everything is keyed by the *row* of
``images.parquet``: the same row is the same image in every backbone's map, so a selection made on
one map is highlighted on the other, in the gallery, the CSV and the detail view.

Cost model (N images, S selected): ``point_table`` and ``base_figure`` are O(N) and the page caches
them; everything that depends on the selection (overlay traces, gallery page, class mix, CSV) is
O(S). Nothing is downsampled: every image is drawn. What a selection shows (gallery, class mix, CSV,
the opened image) is ``covidviz.views.latent_selection``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from covidviz import runs
from covidviz.data.labels import MULTILABEL, split_labels
from covidviz.runs.records import Analysis, ProjectionsInfo
from covidviz.views import external as external_view
from covidviz.views import glossary, image_name, palette
from covidviz.views.formats import RAW, threshold_text
from covidviz.views.style import (
    CHART_FONT,
    MISSING_COLOUR,
    NO_FINDING,
    OKABE_ITO,
    SELECTION_COLOUR,
    UNKNOWN,
    UPLOAD_COLOUR,
    arch_label,
    class_colours,
)

METHOD_NAMES = {"tsne": "t-SNE", "umap": "UMAP", "pca": "PCA"}
METHOD_ORDER = ("tsne", "umap", "pca")
COLOUR_BY = {
    "label": "True label",
    "prediction": "Prediction",
    "outcome": "Outcome for a class (TP/FP/FN/TN)",
    "confidence": "Confidence (top probability)",
    "split": "Split",
    "set": "Set (internal splits vs external sites)",
    "source": "Source",
    "sex": "Sex",
    "age": "Age",
}
NUMERIC = {"confidence", "age"}
OUTCOMES = ("TP", "FN", "FP", "TN")
# Okabe-Ito: green = right positive, vermillion = missed, orange = false alarm, sky blue = right negative.
OUTCOME_COLOURS = {"TP": OKABE_ITO[2], "FN": OKABE_ITO[3], "FP": OKABE_ITO[1], "TN": OKABE_ITO[5]}
OPENED_COLOUR = OKABE_ITO[3]    # the opened image's cross (the selection and the upload: views.style)
INTRO = ("Each point is an image, placed by its backbone's pooled features: nearby points look alike to the model. "
         f"{glossary.link('t-SNE')} and {glossary.link('UMAP')} keep local neighbourhoods (distances between far "
         f"clusters mean little); {glossary.link('PCA')} is linear and keeps global spread. Every image is drawn "
         "(WebGL), none sampled.")
QUALITY_HELP = (f"{glossary.link('Trustworthiness')} (0–1): how far the map's neighbours are also neighbours in the "
                f"backbone's features; {glossary.link('kNN label agreement')}: the share of each image's 10 nearest "
                "map neighbours with its label — close to the features' value means the map keeps the class "
                "structure, much lower means the picture mixes classes that the features separate.")


# ---------------------------------------------------------------- one backbone's maps

@dataclass
class Maps:
    """One backbone's 2-D maps and their quality."""

    coords: dict[str, np.ndarray]   # method -> float32 (N, 2)
    info: ProjectionsInfo           # projections.json (typed): quality, parameters

    @property
    def methods(self) -> list[str]:
        return [m for m in METHOD_ORDER if m in self.coords] + [m for m in self.coords if m not in METHOD_ORDER]


def load_maps(exp: runs.Experiment, arch: str) -> Maps:
    arrays = exp.load_arrays(runs.PROJECTIONS, arch)
    info = exp.projections_info(arch) or ProjectionsInfo({})
    n = len(exp.images())
    coords = {}
    for key, value in arrays.items():
        if key.startswith("coords_"):
            value = np.asarray(value, dtype=np.float32)
            if value.shape != (n, 2):
                raise runs.RunFormatError(f"{exp.path}: {arch} {key} has shape {value.shape}, expected ({n}, 2)")
            coords[key.removeprefix("coords_")] = value
    return Maps(coords, info)


def quality_rows(maps: Maps, method: str) -> list[tuple[str, str]]:
    """(measure, value) lines for the quality panel of one map; measures link to the glossary."""
    info = maps.info

    def fmt(v):
        return "—" if v is None else f"{float(v):.2f}"
    knn = glossary.link("kNN label agreement")
    rows = [(glossary.link("Trustworthiness"), fmt(info.trustworthiness(method))),
            (f"{knn} (map)", fmt(info.knn_agreement(method))),
            (f"{knn} (features)", fmt(info.features_knn_agreement))]
    if info.sample_size:
        rows.append(("Measured on", f"{info.sample_size:,} images, k = {info.k}"))
    return rows


def quality_markdown(maps: Maps, arch: str, method: str) -> str:
    """The quality panel of one map: a bold title, then one "measure: **value**" line per measure."""
    return (f"**Map quality · {arch_label(arch)} {METHOD_NAMES.get(method, method)}**  \n"
            + "  \n".join(f"{k}: **{v}**" for k, v in quality_rows(maps, method)))


def common_methods(maps: list[Maps]) -> list[str]:
    """The map methods every one of ``maps`` has, in the first one's order."""
    return [m for m in maps[0].methods if all(m in other.coords for other in maps)] if maps else []


# ---------------------------------------------------------------- the per-image table of one backbone

def youden_threshold(analysis: Analysis | None, arch: str, cls: str) -> tuple[float, str]:
    """The validation-chosen Youden threshold for ``cls`` (``analysis``: ``exp.analysis()``), else 0.5;
    and where it came from."""
    t = analysis.backbone(arch).point(cls, "youden").threshold if analysis is not None else None
    if t is None or not np.isfinite(float(t)):
        return 0.5, f"{threshold_text(0.5, RAW)}, no Youden threshold stored"
    return float(t), f"{threshold_text(t, RAW)}, Youden on validation"


def thresholds_caption(analysis: Analysis | None, archs: list[str], cls: str) -> str:
    """The outcome colouring's thresholds of ``cls``, one per backbone shown."""
    return "Thresholds: " + "; ".join(f"{arch_label(a)} {youden_threshold(analysis, a, cls)[1]}" for a in archs)


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
        "set": external_view.set_values(images["split"], {}),
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

def fixed_colours(colour_by: str, names: list[str], order: list[str] | None = None) -> dict[str, str]:
    """The colours a colouring's categories have on every page: a class's (``style.class_colours``), the
    outcomes', a set's (``palette.set_colours``); none for the others (source, sex, split)."""
    if colour_by in ("label", "prediction"):
        own = class_colours(list(names) + [NO_FINDING])
        # "X +" (X and more findings: ``primary_labels``) takes X's colour when X alone is not on the map.
        return {**{f"{n} +": own[n] for n in names}, **own}
    if colour_by == "outcome":
        return dict(OUTCOME_COLOURS)
    if colour_by == "set":
        return palette.set_colours(order or external_view.set_order([]))
    return {}


def used_colours(fig: go.Figure) -> set[str]:
    """The marker colours a figure's traces already show (single colours only)."""
    return {str(t.marker.color).lower() for t in fig.data if isinstance(getattr(t.marker, "color", None), str)}


def _hover(names: list[str]) -> str:
    probs = "<br>".join(f"P({n}) = %{{customdata[{j + 1}]:.3f}}" for j, n in enumerate(names))
    return "%{text}<br>" + probs + "<extra></extra>"


def base_figure(coords: np.ndarray, table: pd.DataFrame, probs: np.ndarray, names: list[str], colour_by: str,
                colour_values=None, order: list[str] | None = None, title: str = "",
                height: int = 620, reserve: int = 0) -> go.Figure:
    """The O(N) part of a map: one WebGL trace per colour (or one colour-scaled trace). Categories take
    colours of one palette, never two alike, the rarest grouped as "other" when it runs out
    (``palette.legend_colours``), ``reserve`` colours left free for the external sets drawn over it.

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
        groups = colour_groups(values, order)
        colours, others = palette.legend_colours([c for c, _ in groups], fixed_colours(colour_by, names, order),
                                                 reserve=0 if colour_by == "set" else reserve)
        for cat, rows in groups:
            if cat in colours:
                add(rows, f"{cat} ({len(rows):,})", dict(size=size, color=colours[cat]))
        if others:  # the rarest categories, once the palette has no colour left: one legend entry
            rows = np.sort(np.concatenate([r for c, r in groups if c in set(others)]))
            add(rows, palette.other_label(others, len(rows)), dict(size=size, color=palette.OTHER_COLOUR))
    fig.update_layout(
        title=title, height=height, dragmode="select", font=CHART_FONT, hovermode="closest",
        legend=dict(orientation="h", yanchor="top", y=-0.04, itemsizing="constant"),
        margin=dict(t=40 if title else 10, b=10, l=10, r=10),
        xaxis=dict(showticklabels=False, title=None, zeroline=False),
        yaxis=dict(showticklabels=False, title=None, zeroline=False, scaleanchor="x", scaleratio=1),
        uirevision="latent")  # keep zoom and pan when the overlays change
    return fig


EXTERNAL_SYMBOLS = ("diamond-open", "square-open", "triangle-up-open", "pentagon-open", "hexagram-open")


def external_traces(placed: dict[str, dict], method: str, names: list[str], colour_by: str,
                    size: int = 8, used=()) -> list[go.Scattergl]:
    """One trace per external set placed on the map (``placed``: site -> ``{"coords": method -> (M, 2),
    "image_id", "labels", "probs" (M, C)}``, from ``views.external.place_on_maps``), as outlines (open
    diamonds, then other open shapes per site) so the training points under them stay visible. With the
    "Set" colouring each site has its set colour (``palette.set_colours``); otherwise a palette colour
    that the map does not show (``used``: its colours; ``base_figure(..., reserve=)`` leaves them), else
    the "other" grey. Their customdata row is -1,
    so a box or lasso never selects them (they are not in images.parquet), but the hover shows their
    probabilities."""
    order = external_view.set_order(placed)
    sets = palette.set_colours(order)
    spare = palette.free_colours(used, len(placed))
    traces = []
    for k, (site, p) in enumerate(placed.items()):
        xy = p["coords"].get(method)
        if xy is None or not len(xy):
            continue
        name = external_view.test_set_label(site)
        colour = sets[name] if colour_by == "set" else (spare[k] if k < len(spare) else palette.OTHER_COLOUR)
        text = [f"{name}<br>{i}<br>{lab or NO_FINDING}" for i, lab in zip(p["image_id"], p["labels"])]
        custom = np.column_stack([np.full(len(xy), -1.0, np.float32), np.asarray(p["probs"], np.float32)])
        traces.append(go.Scattergl(x=xy[:, 0], y=xy[:, 1], mode="markers", name=f"{name} ({len(xy):,})",
                                   marker=dict(symbol=EXTERNAL_SYMBOLS[k % len(EXTERNAL_SYMBOLS)], size=size + 3,
                                               color=colour, line=dict(width=2, color=colour)),
                                   text=np.asarray(text, dtype=str), customdata=custom, hovertemplate=_hover(names)))
    return traces


def overlay_traces(coords: np.ndarray, selected=(), opened: int | None = None, upload_xy=None,
                   neighbours=(), size: int = 9, upload_name: str = "your upload") -> list[go.Scattergl]:
    """The O(selection) part: rings round the selection and the upload's neighbours, the upload itself
    (named ``upload_name``: ``views.image_name.short_label``, so a picked test image is not "your upload"),
    and the opened image. Their customdata is the row (-1 for the upload) so clicks on them work too."""
    traces = []

    def ring(rows, name, colour, symbol="circle-open", width=1.5, sz=size):
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows):
            traces.append(go.Scattergl(
                x=coords[rows, 0], y=coords[rows, 1], mode="markers", name=name,
                marker=dict(symbol=symbol, size=sz, color=colour, line=dict(width=width, color=colour)),
                customdata=rows[:, None].astype(np.float32), hovertemplate="row %{customdata[0]}<extra>" + name + "</extra>"))

    ring(selected, f"selected ({len(selected):,})", SELECTION_COLOUR)
    ring(neighbours, f"upload's nearest neighbours ({len(neighbours)})", UPLOAD_COLOUR, "diamond-open", 2, size + 3)
    if opened is not None:
        ring([opened], "opened image", OPENED_COLOUR, "x-thin-open", 3, size + 8)
    if upload_xy is not None:
        traces.append(go.Scattergl(x=[float(upload_xy[0])], y=[float(upload_xy[1])], mode="markers", name=upload_name,
                                   marker=dict(symbol="star", size=22, color=UPLOAD_COLOUR, line=dict(width=1.5, color="black")),
                                   customdata=[[-1.0]], hovertemplate=f"{upload_name}<extra></extra>"))
    return traces


def with_overlays(base: dict, coords: np.ndarray, selected=(), opened: int | None = None, upload=None,
                  revision: int = 0, upload_name: str = "your upload") -> dict:
    """The cached base figure (a plotly dict, shared: not modified) plus ``overlay_traces``; ``upload``:
    ``upload_for(...)`` of this map, or None; a ``revision`` > 0 makes the figure differ from the same
    overlays at another revision (so the browser re-creates the map, dropping plotly's own selection)."""
    selected = np.asarray(selected if selected is not None else [], dtype=np.int64)
    xy, nbrs = (upload[0], upload[1]) if upload is not None else (None, ())
    overlays = overlay_traces(coords, selected, opened, xy, nbrs, upload_name=upload_name)
    layout = {**base["layout"], "datarevision": revision} if revision else base["layout"]
    return {**base, "layout": layout, "data": list(base["data"]) + [t.to_plotly_json() for t in overlays]}


def overlay_key(opened: int | None, upload) -> tuple:
    """What a map's overlays show besides the selection rings (``upload``: ``upload_for(...)`` or None),
    to tell whether the map must be redrawn."""
    if upload is None:
        return (opened, None, ())
    xy, nbrs = upload[0], upload[1]
    return (opened, None if xy is None else tuple(float(v) for v in xy), tuple(int(r) for r in nbrs))


def drawn_figure(base: dict, coords: np.ndarray, rings, others: tuple, revision: int = 0,
                 upload_name: str = "your upload") -> dict:
    """``with_overlays`` from the selection ``rings`` and an ``overlay_key`` (what a map drew last run can
    be drawn again, byte for byte, from these)."""
    opened, xy, nbrs = others or (None, None, ())
    upload = None if xy is None and not nbrs else (None if xy is None else np.asarray(xy), np.asarray(nbrs, np.int64))
    return with_overlays(base, coords, rings, opened, upload, revision, upload_name)


def figure_dict(fig: go.Figure) -> dict:
    """``fig.to_dict()`` with hover texts as fixed-width strings: Streamlit validates and copies the
    figure on every run, and a 100k-element object array of strings costs ~1 s to deep-copy, a numpy
    string array a memcpy (the JSON sent is the same)."""
    out = fig.to_dict()
    for trace in out["data"]:
        text = trace.get("text")
        if isinstance(text, np.ndarray) and text.dtype == object:
            trace["text"] = text.astype(str)
    return out


# ---------------------------------------------------------------- the upload from the diagnose page

def upload_for(upload: dict | None, arch: str, method: str):
    """(coords (2,) or None, neighbour rows, distances, record) of the diagnose page's upload on this
    backbone's ``method`` map, or None when it has no record for the backbone. ``upload``: the record
    already matched to this experiment (``ui.upload_for(exp)``), or None."""
    if not isinstance(upload, dict):
        return None
    rec = (upload.get("backbones") or {}).get(arch)
    if not isinstance(rec, dict):
        return None
    xy = (rec.get("coords") or {}).get(method)
    xy = None if xy is None or len(xy) != 2 else np.asarray(xy, dtype=np.float64)
    nbrs = np.asarray(rec.get("neighbors") or [], dtype=np.int64).ravel()
    dists = np.asarray(rec.get("distances") or [], dtype=np.float64).ravel()
    return xy, nbrs, dists, rec


def upload_notice(upload: dict | None, archs: list[str], method: str) -> tuple[str, np.ndarray] | None:
    """The notice about the upload on the maps shown (markdown) and its neighbours on them all (rows),
    or None when no backbone shown has it."""
    found = [(a, upload_for(upload, a, method)) for a in archs]
    found = [(a, u) for a, u in found if u is not None]
    if not found:
        return None
    parts = []
    for arch, (xy, nbrs, _, rec) in found:
        where = "placed on this map" if xy is not None else "not placed on this map"
        ood = (f" — **outside the training distribution** ({glossary.link('Out-of-distribution', 'what this means')}): "
               "its neighbours may not resemble it") if rec.get("ood") else ""
        parts.append(f"{arch_label(arch)}: {where}, {len(nbrs)} nearest neighbours ringed{ood}")
    text = (f"{image_name.phrase(upload, start=True)} (from the diagnose page) is the magenta star; its nearest "
            f"training images (by distance in {glossary.link('PCA-50 units')}) are ringed with magenta diamonds. "
            + "; ".join(parts))
    return text, np.unique(np.concatenate([u[1] for _, u in found]))
