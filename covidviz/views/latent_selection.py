"""What a selection on the latent-space maps shows, without Streamlit: rows from plotly selection
events, which map the user changed last, the paged gallery, the class mix, the CSV export and the
opened image's details.

Everything is keyed by the *row* of ``images.parquet`` (the same image in every backbone's map) and
costs O(selection), never O(N): the maps themselves are ``covidviz.views.latent``.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from covidviz.data.labels import split_labels
from covidviz.views.style import NO_FINDING

GALLERY_PAGE = 24               # images per gallery page


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


def selection_change(signatures: dict, charts: dict) -> tuple[dict, np.ndarray | None, int | None]:
    """What the maps' selection events mean: ``charts`` is each map's chart state (``{"selection": ...}``
    or None) by backbone, ``signatures`` each map's ``selection_signature`` last seen.

    Returns (the signatures to keep, rows to select or None, row to open or None). Only a map whose
    selection changed counts; a change to a single point is a click (open that image, keep the
    selection), a change to several is a new selection. An emptied chart selection does not clear the
    selection: plotly drops its own selection whenever the figure is redrawn (new rings), so "empty" is
    not a user action we can trust ("Clear selection" clears it)."""
    empty = selection_signature(None)
    signatures = dict(signatures or {})
    select, opened = None, None
    for arch, state in charts.items():
        sel = (state or {}).get("selection") if state is not None else None
        sig = selection_signature(sel)
        if signatures.get(arch, empty) == sig:
            continue
        signatures[arch] = sig
        rows = selection_rows(sel)
        if len(rows) == 1:
            opened = int(rows[0])
        elif len(rows):
            select = rows
    return signatures, select, opened


def gallery_range(page: int, shown: int, total: int, per_page: int = GALLERY_PAGE) -> str:
    """The gallery's position line, Images a–b of N, for the ``shown`` images of 1-based ``page``."""
    first = (page - 1) * per_page
    return f"Images {first + 1}–{first + shown} of {total:,}"


# ---------------------------------------------------------------- the opened image

def detail_meta(rec) -> str:
    """One markdown line about an images.parquet row: labels, split, source, sex, age, patient."""
    age = rec["age"]
    return " · ".join([f"true: **{rec['labels'].replace('|', ', ') or NO_FINDING}**", f"split: {rec['split']}",
                       f"source: {rec['source'] or rec['dataset']}", f"sex: {rec['sex'] or '—'}",
                       f"age: {'—' if pd.isna(age) else int(age)}", f"patient: {rec['patient_id']}"])


def probability_table(probs: dict[str, np.ndarray], names: list[str]) -> pd.DataFrame:
    """Class x backbone table of one image's probabilities (``probs``: backbone label -> (C,))."""
    return pd.DataFrame({k: np.asarray(p) for k, p in probs.items()}, index=list(names))


def explained_class(names: list[str], cls_idx: int | None, probs: np.ndarray) -> str:
    """The class a heatmap explains: the chosen one, else the image's top class."""
    return names[cls_idx] if cls_idx is not None else names[int(np.argmax(probs))]
