"""What the SOM page shows, without Streamlit: per-image and per-node tables, the layers' values,
the class relations, the node panel, the map's quality and the diagnose page's upload on the maps.

A node's images are the rows of ``images.parquet`` whose best-matching node (som.npz ``node``) it is,
within the split(s) the page counts. The hexagon geometry and every plotly figure are in
``covidviz.views.som_figure``; the colours and names shared with other pages in ``covidviz.views.style``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from covidviz.data.labels import MULTILABEL, LabelSpace, split_labels
from covidviz.runs.records import Analysis, SomInfo
from covidviz.views import external as external_view
from covidviz.views import glossary, image_name
from covidviz.views.formats import ood_detail, ood_verdict_line, qe_detail, share_text, som_cell, som_position
from covidviz.views.latent_selection import file_name
from covidviz.views.style import NO_FINDING, SPLIT_LABELS, label_order

LAYERS = {
    "umatrix": "U-matrix (distance to neighbours)",
    "hits": "Hits (images per node)",
    "dominant": "Dominant class and purity",
    "density": "Density of a class",
    "mean_prob": "Mean predicted probability of a class",
    "error": "Error rate",
    "set": "Set (internal splits vs external sites)",
}
CLASS_LAYERS = ("density", "mean_prob")  # layers that need a chosen class (error too when multi-label)
INTRO = (f"A self-organizing map ({glossary.link('SOM')}) lays the images' feature vectors on a grid of hexagons, "
         "trained on the training images: similar images land on the same or nearby hexagons, so clusters of a "
         "disease, mixed regions and outliers become visible. One map per backbone; the controls apply to all.")
QUALITY_HELP = (f"**How to read:** {glossary.link('QE')} says how closely the nodes represent the images (lower = "
                f"closer; compare maps of one experiment only). {glossary.link('TE')} says whether neighbourhoods are "
                "kept: below ~10 % nearby hexagons really hold similar images, so distances on the map mean something.")
LAYER_HELP = {
    "umatrix": f"{glossary.link('U-matrix')}: mean distance between a node's weights and its neighbours'. Light = "
               "similar neighbours (inside a cluster); dark ridges = boundaries between clusters.",
    "hits": f"{glossary.link('Hits')}: how many images of the chosen split(s) have this node as their best match. "
            "Grey = no images.",
    "dominant": "Colour = the class most of the node's images carry; paler = a more mixed node "
                f"({glossary.link('Purity', 'purity')} = that class's share of the node's images: pale ≤ 50 %, "
                "medium ≤ 75 %, full > 75 %).",
    "density": "Where the chosen class lives: the share of all its images (chosen split) that sit on each node.",
    "mean_prob": "The model's mean predicted probability of the chosen class over each node's images.",
    "error": "Share of each node's images the model gets wrong (multi-class: top prediction ≠ label; multi-label: "
             "for the chosen class, thresholded prediction ≠ label). Pick the Test split for the honest rate.",
    "set": "Colour = the set most of the node's images come from: the internal splits (chosen split) and the external "
           "test sets shown, placed on the stored map without refitting (paler = a more mixed node). A node held "
           "mostly by an external site is a region the training images do not cover.",
}
SPLIT_CHOICES = {"All splits": None, "Training": ["train"], "Validation": ["val"], "Test": ["test"]}
GALLERY_MAX = 40                # thumbnails shown for a node (the table lists all its images)


# ---------------------------------------------------------------- the controls


@dataclass(frozen=True)
class Choice:
    """What the page's controls chose; it applies to every backbone's map."""

    layer: str                  # a key of LAYERS
    cls: int                    # index of ``cls_name`` in the page's classes (0 when it is not one)
    cls_name: str
    split_label: str            # a key of SPLIT_CHOICES
    prototypes: bool
    sites: tuple = ()           # external test sets shown on the maps

    @property
    def splits(self) -> list[str] | None:
        """The splits whose images are counted (None: all)."""
        return SPLIT_CHOICES[self.split_label]


def choice(labels: LabelSpace, layer: str, cls_name: str, split_label: str, prototypes: bool = False,
           sites=()) -> Choice:
    classes = label_order(labels)
    return Choice(layer, classes.index(cls_name) if cls_name in classes else 0, cls_name, split_label, bool(prototypes),
                  tuple(sites))


def class_options(labels: LabelSpace, layer: str) -> list[str]:
    """The class picker's options: "No finding" (multi-label) only for the density layer, the one
    layer that needs no model output for the class."""
    return label_order(labels) if layer == "density" else list(labels.names)


def needs_class(layer: str, labels: LabelSpace) -> bool:
    """Whether ``layer`` depends on the chosen class (the error layer does only for multi-label)."""
    return layer in CLASS_LAYERS or (layer == "error" and labels.task == MULTILABEL)


def youden_thresholds(analysis: Analysis | None, arch: str) -> dict[str, float]:
    """Validation-chosen (Youden) thresholds per class, where the analysis stored them."""
    if analysis is None:
        return {}
    per_class = analysis.backbone(arch).thresholds()
    return {cls: float(t["youden"]) for cls, t in per_class.items() if t.get("youden") is not None}


# ---------------------------------------------------------------- per-image and per-node tables

@dataclass
class NodeData:
    """Everything per image and per node that the layers need, for one backbone and one split filter."""

    labels: LabelSpace
    classes: list[str]            # label names (+ "No finding" for multi-label)
    onehot: np.ndarray            # (N, len(classes)) 0/1 of every image
    probs: np.ndarray             # (N, C) model probabilities
    node: np.ndarray              # (N,) best-matching node of every image
    mask: np.ndarray              # (N,) images in the chosen split(s)
    n_nodes: int

    def counts(self) -> np.ndarray:
        """(n_nodes, len(classes)) images with each class per node (chosen split only)."""
        out = np.zeros((self.n_nodes, len(self.classes)), np.float64)
        np.add.at(out, self.node[self.mask], self.onehot[self.mask])
        return out

    def hits(self) -> np.ndarray:
        return np.bincount(self.node[self.mask], minlength=self.n_nodes).astype(np.int64)


def class_matrix(label_cells, labels: LabelSpace) -> tuple[list[str], np.ndarray]:
    """Classes shown on the page and the (N, K) 0/1 matrix: multi-label adds a 'No finding' column
    (an image with no finding is a real group on the map, and without it purity would be undefined)."""
    onehot = labels.onehot(label_cells).astype(np.float64)
    if labels.task == MULTILABEL:
        none = (onehot.sum(axis=1) == 0).astype(np.float64)[:, None]
        return label_order(labels), np.hstack([onehot, none])
    return list(labels.names), onehot


def node_data(images: pd.DataFrame, labels: LabelSpace, probs: np.ndarray, node: np.ndarray, n_nodes: int,
              splits: list[str] | None = None) -> NodeData:
    classes, onehot = class_matrix(images["labels"], labels)
    mask = np.ones(len(images), bool) if not splits else images["split"].isin(splits).to_numpy()
    return NodeData(labels, classes, onehot, np.asarray(probs, np.float64), np.asarray(node, np.int64), mask,
                    int(n_nodes))


def set_node_data(nd: NodeData, splits, external: dict[str, np.ndarray]) -> NodeData:
    """The "Set" layer's data: ``nd``'s images (its split filter kept) and each external set's images
    (``external``: site -> best-matching nodes), with the sets as the classes (Train / Validation / Test /
    External: site, those present)."""
    values = external_view.set_values(splits, {s: len(n) for s, n in external.items()})
    mask = np.concatenate([nd.mask, np.ones(len(values) - len(nd.mask), bool)])
    order = [c for c in external_view.set_order(external) if c in set(values[mask])]
    onehot = (values[:, None] == np.asarray(order, dtype=object)[None, :]).astype(np.float64)
    nodes = [np.asarray(nd.node, np.int64)] + [np.asarray(n, np.int64).reshape(-1) for n in external.values()]
    return NodeData(nd.labels, order, onehot, np.zeros((len(values), 0)), np.concatenate(nodes), mask, nd.n_nodes)


def external_on_node(external: dict[str, np.ndarray], node: int) -> str | None:
    """"External images on this node: site-b 3, ..." (None when none of the shown sets has any)."""
    parts = [f"{site} {int(np.sum(np.asarray(n) == node))}" for site, n in external.items() if np.any(np.asarray(n) == node)]
    return ("External images on this node (placed without refitting): " + ", ".join(parts)) if parts else None


def predictions(nd: NodeData, thresholds: dict[str, float] | None = None) -> np.ndarray:
    """(N, C) 0/1 predictions: argmax for multi-class; probability >= threshold (default 0.5) per class
    for multi-label."""
    P = nd.probs
    if nd.labels.task == MULTILABEL:
        t = np.array([(thresholds or {}).get(c, 0.5) for c in nd.labels.names], np.float64)
        return (P >= t[None, :]).astype(np.float64)
    out = np.zeros_like(P)
    out[np.arange(len(P)), P.argmax(axis=1)] = 1
    return out


def layer_values(nd: NodeData, layer: str, cls: int = 0, umatrix: np.ndarray | None = None,
                 thresholds: dict[str, float] | None = None) -> dict:
    """Per-node values of a layer. Returns ``{"values": (n_nodes,) float (NaN = no images),
    "kind": "continuous" | "categorical", "title": colour-bar title, "range": (lo, hi)}``, plus
    ``"dominant"`` and ``"purity"`` for the categorical layer.

    - umatrix: the stored U-matrix (mean weight distance to the adjacent nodes, max 1);
    - hits: images of the chosen split(s) on the node;
    - dominant: the class most images on the node carry; purity = its share of the node's images;
    - density: share of ALL the class's images (chosen split) that sit on the node, in %;
    - mean_prob: mean predicted probability of the class over the node's images;
    - error: share of the node's images the model gets wrong (multi-class: argmax != label;
      multi-label: for class ``cls``, thresholded prediction != label).
    """
    n = nd.n_nodes
    hits = nd.hits().astype(np.float64)
    empty = hits == 0
    name = nd.classes[cls] if cls < len(nd.classes) else ""
    if layer == "umatrix":
        v = np.asarray(umatrix, np.float64)
        # Scale from the map's smallest value: the stored U-matrix is max-normalised, and on a map whose
        # nodes are all far apart a 0..1 scale would paint everything the same dark shade.
        lo = float(np.nanmin(v)) if np.isfinite(v).any() else 0.0
        return {"values": v, "kind": "continuous", "title": "Distance to<br>neighbours<br>(max 1)",
                "range": (min(lo, 0.999), 1.0)}
    if layer == "hits":
        v = np.where(empty, np.nan, hits)
        return {"values": v, "kind": "continuous", "title": "Images", "range": (0.0, max(1.0, float(hits.max())))}
    if layer in ("dominant", "set"):  # "set": of a ``set_node_data`` (its classes are the sets)
        counts = nd.counts()
        dom = counts.argmax(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            purity = counts[np.arange(n), dom] / hits
        dom = np.where(empty, -1, dom)
        purity = np.where(empty, np.nan, purity)
        return {"values": purity, "kind": "categorical", "dominant": dom, "purity": purity,
                "title": "Dominant set" if layer == "set" else "Dominant class", "range": (0.0, 1.0)}
    if layer == "density":
        counts = nd.counts()[:, cls]
        total = counts.sum()
        v = 100.0 * counts / total if total > 0 else np.zeros(n)
        v = np.where(empty, np.nan, v)
        return {"values": v, "kind": "continuous", "title": f"% of {name}<br>images",
                "range": (0.0, max(float(np.nanmax(v)) if np.isfinite(v).any() else 0.0, 1e-9))}
    if layer == "mean_prob":
        if cls >= nd.probs.shape[1]:
            raise ValueError(f"no model probability for {name!r}")
        s = np.zeros(n)
        np.add.at(s, nd.node[nd.mask], nd.probs[nd.mask, cls])
        with np.errstate(invalid="ignore", divide="ignore"):
            v = s / hits
        return {"values": np.where(empty, np.nan, v), "kind": "continuous", "title": f"Mean P({name})",
                "range": (0.0, 1.0)}
    if layer == "error":
        pred = predictions(nd, thresholds)
        C = nd.probs.shape[1]
        truth = nd.onehot[:, :C]
        if nd.labels.task == MULTILABEL:
            if cls >= C:
                raise ValueError(f"no model prediction for {name!r}")
            wrong = pred[:, cls] != truth[:, cls]
            title = f"Error rate<br>({name})"
        else:
            wrong = (pred != truth).any(axis=1)
            title = "Error rate"
        s = np.zeros(n)
        np.add.at(s, nd.node[nd.mask], wrong[nd.mask].astype(np.float64))
        with np.errstate(invalid="ignore", divide="ignore"):
            v = s / hits
        return {"values": np.where(empty, np.nan, v), "kind": "continuous", "title": title, "range": (0.0, 1.0)}
    raise ValueError(f"unknown layer {layer!r}; expected one of {list(LAYERS)}")


# ---------------------------------------------------------------- class relations

def class_cooccurrence(counts: np.ndarray) -> np.ndarray:
    """(K, K) cosine similarity between the classes' node-count vectors (columns of ``counts``).

    1 = the two classes are spread over the map in the same proportions (they share nodes);
    0 = they never share a node. NaN on the rows of classes with no images."""
    X = np.asarray(counts, np.float64).T
    norms = np.linalg.norm(X, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        sim = (X @ X.T) / np.outer(norms, norms)
    sim[norms == 0, :] = np.nan
    sim[:, norms == 0] = np.nan
    return sim


def share_on_dominated(counts: np.ndarray) -> np.ndarray:
    """(K, K): entry [a, b] = share of class a's images that sit on nodes whose dominant class is b
    (rows sum to 1 over classes with images)."""
    counts = np.asarray(counts, np.float64)
    K = counts.shape[1]
    occupied = counts.sum(axis=1) > 0
    dom = counts.argmax(axis=1)
    out = np.zeros((K, K))
    for b in range(K):
        out[:, b] = counts[occupied & (dom == b)].sum(axis=0)
    totals = counts.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return out / totals[:, None]


def closest_pairs(sim: np.ndarray, classes: list[str], top: int = 3) -> list[tuple[str, str, float]]:
    """The ``top`` most map-sharing class pairs (a, b, cosine), highest first."""
    K = len(classes)
    pairs = [(classes[a], classes[b], float(sim[a, b])) for a in range(K) for b in range(a + 1, K)
             if np.isfinite(sim[a, b])]
    return sorted(pairs, key=lambda p: -p[2])[:top]


def split_text(cell) -> str:
    labs = split_labels(cell)
    return ", ".join(labs) if labs else NO_FINDING


# ---------------------------------------------------------------- the map's quality and one node's panel

def quality_metrics(info: SomInfo) -> list[tuple[str, str, str | None]]:
    """(label, value, help) of the map's quality metrics, from som.json (``exp.som_info(arch)``)."""
    qe, te, grid = info.quantization_error, info.topographic_error, info.grid
    # Short labels: a metric's label is cut with "…" when it is wider than its third of a map's column.
    return [("QE", "—" if qe is None else f"{qe:.3g}",
             "Quantization error: the mean distance from a training image to its node, in the map's standardised "
             "PCA space."),
            ("TE", "—" if te is None else f"{100 * te:.1f} %",
             "Topographic error: the share of training images whose two best-matching nodes are not neighbours."),
            ("Grid", "? × ?" if grid is None else f"{grid[0]} × {grid[1]}",
             None if grid is None else f"{grid[0]} hexagons wide (columns, left to right) × {grid[1]} high "
                                       "(rows, top to bottom).")]


def grid_shape(hex_xy) -> tuple[int, int]:
    """(columns, rows) of a map from its hexagon centres: rows are the distinct heights."""
    y = np.round(np.asarray(hex_xy, np.float64)[:, 1], 3)
    rows = len(np.unique(y))
    return len(y) // max(rows, 1), rows


# Where a node is in the picture: ``views.formats.som_position`` (one formatter for every page and the
# case report); ``node_cell`` is its (column, row), under the name ``views.som_figure`` imports.
node_cell = som_cell


def node_rows(nd: NodeData, node: int) -> np.ndarray:
    """images.parquet rows on ``node`` within the chosen split(s)."""
    return np.flatnonzero((nd.node == node) & nd.mask)


def node_metrics(arrays: dict, node: int, rows: np.ndarray, split_label: str) -> list[tuple[str, object, str | None]]:
    """(label, value, help) of a node's headline numbers; ``arrays``: som.npz (``hits``, ``umatrix``, ``qe``)."""
    qe = np.asarray(arrays["qe"], np.float64)
    return [("Images", len(rows), f"Images of the chosen split(s) on this node: {split_label.lower()}."),
            ("Hits", int(arrays["hits"][node]), "Training images on this node (what the map was fitted on)."),
            ("U-matrix", f"{float(arrays['umatrix'][node]):.2f}", "Mean distance of the node's weights to its "
                                                                     "neighbours' (max 1): high = on a border."),
            ("Mean QE", f"{qe[rows].mean():.3g}" if len(rows) else "—",
             "Mean distance of the node's images to its weights (the map's QE is the training mean).")]


@dataclass
class NodeSummary:
    """A node's class table and one-line reading, for the images of ``rows``."""

    stats: pd.DataFrame         # per class: images, share, mean probability, predicted (and errors, multi-label)
    headline: str               # dominant class, its share (and the error rate, multi-class)
    predicted: np.ndarray       # (len(rows), C) 0/1 predictions of those images


NODE_STATS_HELP = ("**Images**: the node's images with that label (**Share** of the node's images); **Mean P**: the "
                   "backbone's mean probability of the class over them all; **Predicted**: images it calls that class "
                   "(**Errors**: its wrong calls of the class, multi-label).")


def node_summary(nd: NodeData, rows: np.ndarray, thresholds: dict[str, float] | None = None) -> NodeSummary:
    """Class counts, mean probabilities and predictions of a node's images (``rows``, not empty)."""
    counts = nd.onehot[rows].sum(axis=0)
    C = nd.probs.shape[1]
    pred = predictions(nd, thresholds)[rows]
    truth = nd.onehot[rows][:, :C]
    pad = ["—"] * (len(nd.classes) - C)  # "No finding" (multi-label) has no model output
    stats = pd.DataFrame({
        "Images": counts.astype(int),
        "Share": [f"{v:.0%}" for v in counts / len(rows)],
        "Mean P": [f"{v:.2f}" for v in nd.probs[rows].mean(axis=0)] + pad,
        "Predicted": [str(int(v)) for v in pred.sum(axis=0)] + pad,
    }, index=pd.Index(nd.classes, name="Class"))
    if nd.labels.task == MULTILABEL:
        stats["Errors"] = [str(int(v)) for v in (pred != truth).sum(axis=0)] + pad
        err_text = ""
    else:
        wrong = (pred != truth).any(axis=1)
        err_text = f" · error rate {wrong.mean():.0%} ({int(wrong.sum())} of {len(rows)})"
    dom = int(counts.argmax())
    headline = f"Dominant class **{nd.classes[dom]}** ({counts[dom] / len(rows):.0%} of its images){err_text}"
    return NodeSummary(stats, headline, pred)


def node_images_table(images: pd.DataFrame, nd: NodeData, rows: np.ndarray, pred: np.ndarray,
                      qe: np.ndarray) -> pd.DataFrame:
    """One row per image of the node: file name and split, labels, prediction, top probability, QE (five
    narrow columns: the table fits half a 1280 px page; the full id is in the Latent space page's CSV)."""
    names = list(nd.labels.names)
    P = nd.probs[rows]
    qe = np.asarray(qe, np.float64)
    if nd.labels.task == MULTILABEL:
        predicted = [", ".join(n for n, v in zip(names, pr) if v) or NO_FINDING for pr in pred]
        top = [f"{names[int(p.argmax())]} {p.max():.2f}" for p in P]
    else:
        predicted = [names[int(p.argmax())] for p in P]
        top = [f"{p.max():.2f}" for p in P]
    return pd.DataFrame({
        "Image": [f"{file_name(i)} ({SPLIT_LABELS.get(s, s).lower()})"
                  for i, s in zip(images["image_id"].to_numpy()[rows], images["split"].to_numpy()[rows])],
        "Labels": [split_text(c) for c in images["labels"].to_numpy()[rows]],
        "Predicted": predicted,
        "Top P": top,
        "QE": qe[rows].round(3),
    })


# ``st.dataframe`` column settings of ``node_images_table`` (plain dicts, as ``st.column_config`` builds):
# pixel widths that add up to less than half a 1280 px page with the sidebar open (~400 px), so every
# column is in view; a longer cell shows whole on hover.
NODE_TABLE_COLUMNS = {
    "Image": {"width": 112, "help": "The image's file name (and its split)."},
    "Labels": {"width": 82, "help": "Its true label(s)."},
    "Predicted": {"width": 82, "help": "The backbone's call (multi-label: every class above its threshold)."},
    "Top P": {"width": 54, "help": "The highest probability the backbone gave (with its class, multi-label)."},
    "QE": {"width": 50, "help": "Quantization error: the image's distance to this node's weights."},
}


def gallery_captions(table: pd.DataFrame, limit: int = GALLERY_MAX) -> list[str]:
    """The thumbnails' captions, label → prediction, of the first ``limit`` rows of ``node_images_table``."""
    return [f"{t} → {p}" for t, p in zip(table["Labels"][:limit], table["Predicted"][:limit])]


# ---------------------------------------------------------------- which classes sit together

@dataclass
class Relations:
    """How a map's classes share its nodes (chosen split)."""

    classes: list[str]
    similarity: np.ndarray               # (K, K) cosine of the classes' node-count vectors
    share: pd.DataFrame                  # share of each class's images on nodes dominated by another class
    pairs: list[tuple[str, str, float]]  # the closest pairs (cosine >= 0.01), highest first

    @property
    def headline(self) -> str:
        if not self.pairs:
            return "No two classes share nodes: the map separates them completely."
        return "Closest on the map: " + "; ".join(f"**{a}** & **{b}** ({s:.2f})" for a, b, s in self.pairs)


def class_relations(nd: NodeData, top: int = 3) -> Relations:
    counts = nd.counts()
    sim = class_cooccurrence(counts)
    pairs = [p for p in closest_pairs(sim, nd.classes, top=top) if p[2] >= 0.01]
    share = pd.DataFrame(share_on_dominated(counts), index=pd.Index(nd.classes, name="Images of"), columns=nd.classes)
    return Relations(list(nd.classes), sim, share, pairs)


# ---------------------------------------------------------------- the diagnose page's upload

@dataclass(frozen=True)
class MapUpload:
    """The diagnose page's upload on one backbone's SOM (``inference.Diagnosis.session_record``)."""

    name: str                   # the image in a sentence (``image_name.phrase``): an upload's file, a test image
    node: int | None            # its best-matching node (None: this backbone has no SOM)
    qe: float | None            # its quantization error
    pct: float | None           # the share of training images (%) whose QE is smaller
    ood: bool
    position: str | None = None  # where the node is in the picture (``formats.som_position``)
    verdict: dict | None = None  # the image's one out-of-distribution verdict (``OodVerdict.to_json``)
    label: str = "your upload"   # its kind, for a button or legend (``image_name.kind_label``: ids do not fit)

    @property
    def has_qe(self) -> bool:
        return self.qe is not None and self.pct is not None

    @property
    def pct_text(self) -> str:
        return share_text(self.pct).removesuffix(" %")

    @property
    def text(self) -> str:
        """Where it sits, the image's ONE out-of-distribution verdict with its yardstick (the Diagnose
        page's), and its QE against the training images' as a detail of that verdict (``has_qe`` only)."""
        where = f", at {self.position}" if self.position else ""
        text = f"{self.name} (★) sits on node {self.node}{where}."
        verdict = self.verdict or {"status": "ood" if self.ood else None, "checked": False}  # an older record: the flag
        line = ood_verdict_line(verdict, glossary.link("Out-of-distribution"))
        if line:
            text += f" {line}"
        if self.ood:
            text += " Treat the model's output with extra caution."
        return f"{text} {ood_detail(qe_detail(self.qe, self.pct, 'SOM ' + glossary.link('QE', 'quantization error')))}"


def upload_on_map(upload: dict | None, arch: str, grid=None) -> MapUpload | None:
    """The upload on ``arch``'s map, or None; ``upload``: the record already matched to this
    experiment (``ui.upload_for(exp)``); ``grid``: the map's (columns, rows), to say where its node is."""
    rec = ((upload or {}).get("backbones") or {}).get(arch)
    if not isinstance(rec, dict):
        return None

    def number(key, kind=float):
        return None if rec.get(key) is None else kind(rec[key])
    node = number("som_node", int)
    verdict = upload.get("verdict")
    return MapUpload(image_name.phrase(upload, start=True), node, number("som_qe"), number("som_qe_pct"),
                     bool(rec.get("ood")), som_position(node, grid) if node is not None and grid else None,
                     verdict if isinstance(verdict, dict) else None, image_name.kind_label(upload))


def upload_elsewhere(upload, matched: dict | None) -> str | None:
    """The experiment the diagnose page's ``upload`` record was scored with when it is not this one
    (``matched``: ``ui.upload_for(exp)``, None when the record is another experiment's), else None."""
    if matched is None and isinstance(upload, dict) and upload.get("experiment"):
        return str(upload["experiment"])
    return None



MATRIX_MAX_CLASSES = 6   # above this many classes the class-share matrix is shown as rows of pairs


def share_pairs(share) -> pd.DataFrame:
    """The class-share matrix (row: the images' class, column: the node's dominant class) as one row per
    non-zero off-diagonal cell, largest share first: a narrow table for many classes."""
    rows = [(r, c, share.loc[r, c]) for r in share.index for c in share.columns
            if r != c and pd.notna(share.loc[r, c]) and share.loc[r, c] > 0]
    out = pd.DataFrame(rows, columns=["Images of", "Sit on nodes of", "Share"]).sort_values("Share", ascending=False)
    out["Share"] = out["Share"].map(lambda v: f"{v:.0%}")
    return out.reset_index(drop=True)
