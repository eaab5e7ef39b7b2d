"""What a selection on the latent-space maps shows, without Streamlit: rows from plotly selection
events, which map the user changed last, the paged gallery, the class mix, the CSV export and the
opened image's details.

Everything is keyed by the *row* of ``images.parquet`` (the same image in every backbone's map) and
costs O(selection), never O(N): the maps themselves are ``covidviz.views.latent``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from covidviz.data.labels import split_labels
from covidviz.views.style import NO_FINDING

GALLERY_PAGE = 24               # images per gallery page
GALLERY, MAP = "gallery", "map"  # where an image was opened: it is drawn there, where the user is looking


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


def valid_rows(rows, n: int) -> np.ndarray:
    """``rows`` that exist in an experiment of ``n`` images (a selection kept in a session must never
    index past a smaller experiment's table, e.g. one replaced under the same name)."""
    rows = np.asarray(rows if rows is not None else [], np.int64).ravel()
    return rows[(rows >= 0) & (rows < n)]


# ---------------------------------------------------------------- gallery, class mix, CSV (all O(selection))

def page_count(n: int, per_page: int = GALLERY_PAGE) -> int:
    return max(1, -(-n // per_page))


def gallery_page(rows: np.ndarray, page: int, per_page: int = GALLERY_PAGE) -> np.ndarray:
    """Rows shown on 1-based ``page`` (clamped to the valid range)."""
    page = min(max(1, int(page)), page_count(len(rows), per_page))
    return np.asarray(rows)[(page - 1) * per_page: page * per_page]


def file_name(image_id: str) -> str:
    """The file name of an image id (``covid3:images/000185.png`` -> ``000185.png``): what a caption has
    room for; the full id is in the CSV and the opened image's header."""
    return str(image_id).replace("\\", "/").rsplit("/", 1)[-1].rsplit(":", 1)[-1] or str(image_id)


def gallery_caption(table: pd.DataFrame, row: int, names: list[str], probs: np.ndarray) -> str:
    """A thumbnail's caption: file name, true label(s), top prediction; breaks between words."""
    r = table.iloc[int(row)]
    j = int(np.argmax(probs[int(row)]))
    true = r["labels"].replace("|", ", ") or NO_FINDING
    return f"{file_name(r['image_id'])} · true: {true} · pred: {names[j]} {probs[int(row), j]:.2f}"


def _png_data_uri(thumb: np.ndarray) -> str:
    import base64

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(thumb, dtype=np.uint8)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def gallery_html(thumbs, rows, captions: list[str], first: int = 1) -> str:
    """One HTML block for a gallery page: a wrapping grid of numbered thumbnails with their captions.

    One element instead of three per image (picture, caption, button): the browser builds a 24-image
    page in one step. Pictures are inline data-URI PNGs (~2-4 kB each), so they show with the page's
    own update, without a media request queued behind a map's redraw; captions wrap between any
    characters rather than being cut. ``thumbs``: all thumbnails (row-aligned), ``rows``: the page's;
    ``first``: the number of the first image (its position in the selection), as the "Open" picker lists it.
    """
    import html

    cells = []
    for k, (row, caption) in enumerate(zip(rows, captions)):
        thumb, text = thumbs[int(row)], html.escape(f"{first + k}. {caption}")
        cells.append(f'<figure class="latent-cell" style="margin:0;min-width:0">'
                     f'<img class="latent-thumb" alt="{text}" src="{_png_data_uri(thumb)}" '
                     'style="width:100%;aspect-ratio:1;border-radius:4px;display:block">'
                     f'<figcaption class="latent-caption" style="font-size:0.8rem;line-height:1.3;opacity:0.7;'
                     f'overflow-wrap:anywhere;margin-top:2px">{text}</figcaption></figure>')
    return ('<div class="latent-gallery" style="display:grid;grid-template-columns:repeat(auto-fill,minmax(104px,1fr));'
            'gap:10px 8px">' + "".join(cells) + "</div>")


def pick_labels(rows, table: pd.DataFrame, first: int = 1) -> dict[int, str]:
    """The gallery's "Open an image" choices: row -> "number. file name", numbered as the gallery is."""
    return {int(r): f"{first + k}. {file_name(table['image_id'].iat[int(r)])}" for k, r in enumerate(rows)}


def table_html(df: pd.DataFrame, css_class: str = "latent-table", float_format: str | None = None) -> str:
    """A small table (index first) as one HTML block that always fits its container: as wide as its
    content, and where the container is narrower a cell breaks inside a word rather than push the
    table past the edge (a dataframe would scroll and hide columns). Drawn with ``st.html``, whose code
    the page loads before the first selection (``EMPTY_GALLERY_HTML``)."""
    import html

    cell = "padding:4px 8px;border-bottom:1px solid rgba(49,51,63,0.12);overflow-wrap:anywhere;"
    head = [df.index.name or ""] + [str(c) for c in df.columns]
    numeric = [False] + [pd.api.types.is_numeric_dtype(df[c]) for c in df.columns]  # right-aligned
    df = df.apply(lambda col: col.map(float_format.format) if float_format and pd.api.types.is_float_dtype(col) else col)

    def row(values, tag: str) -> str:
        return "<tr>" + "".join(f'<{tag} style="{cell}text-align:{"right" if num else "left"}">{html.escape(str(v))}</{tag}>'
                                for v, num in zip(values, numeric)) + "</tr>"
    body = "".join(row([i, *r], "td") for i, r in zip(df.index, df.itertuples(index=False)))
    return (f'<table class="{css_class}" style="max-width:100%;border-collapse:collapse;font-size:0.875rem">'
            f"<thead>{row(head, 'th')}</thead><tbody>{body}</tbody></table>")


EMPTY_GALLERY_HTML = ('<div class="latent-gallery-empty" style="border:1px dashed rgba(49,51,63,0.3);border-radius:6px;'
                      'padding:18px;font-size:0.9rem;opacity:0.75">Draw a box or a lasso on a map (the toolbar\'s '
                      'box/lasso tools; box is the default drag) to list the images inside it here, with their class '
                      'mix and a CSV, or click a point to open it.</div>')


def class_mix_help(multilabel: bool = False) -> str:
    """What the class mix's short headers count."""
    return ("**Labelled**: selected images with that true label (**Share** of the selection); one column per "
            "backbone: the images it predicts as that class." + (" An image can carry several findings, so the "
                                                                  "labels can sum to more than the selection."
                                                                  if multilabel else ""))


def class_mix(tables: dict[str, pd.DataFrame], rows: np.ndarray, names: list[str]) -> pd.DataFrame:
    """Counts and shares of the selection's true labels and of each backbone's predictions (``tables``:
    backbone label -> point table). Headers are short (``CLASS_MIX_HELP`` says what they count), so the
    table fits a third of a 1280 px page."""
    rows = np.asarray(rows, np.int64)
    order = list(names) + [NO_FINDING]
    first = next(iter(tables.values()))
    truth = pd.Series([lab for c in first["labels"].to_numpy()[rows] for lab in (split_labels(c) or [NO_FINDING])])
    out = pd.DataFrame(index=pd.Index(order, name="Class"))
    out["Labelled"] = truth.value_counts().reindex(order, fill_value=0)
    for name, t in tables.items():
        pred = pd.Series(t["prediction"].to_numpy()[rows], dtype=object)
        out[name] = pred.value_counts().reindex(order, fill_value=0)
    out = out.fillna(0).astype(int)
    out = out[(out != 0).any(axis=1)]
    if len(rows):
        out.insert(1, "Share", (out["Labelled"] / len(rows)).map(lambda v: f"{v:.0%}"))
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


# ---------------------------------------------------------------- the Diagnose page's image and its neighbours

def neighbour_counts(record: dict | None, archs: list[str]) -> list[int]:
    """How many nearest neighbours the upload notice rings for each backbone shown that has the image
    (``record``: the Diagnose page's record for this experiment), in the order shown."""
    backbones = (record or {}).get("backbones") or {}
    return [len(backbones[a].get("neighbors") or []) for a in archs if isinstance(backbones.get(a), dict)]


def neighbours_button(counts: list[int], union: int) -> str:
    """The neighbours button's label, with the notice's numbers (``counts``: per backbone; ``union``: the
    different images among them, what the button selects): "Select the 10 ringed neighbours", "Select the
    ringed neighbours: 10 + 10 = 20 images", or "…: 10 + 10, 17 different images" when they share some."""
    if len(counts) <= 1:
        return f"Select the {union} ringed neighbours"
    total = " + ".join(str(c) for c in counts)
    if sum(counts) == union:
        return f"Select the ringed neighbours: {total} = {union} images"
    return f"Select the ringed neighbours: {total}, {union} different images"


def opened_note(origin: str, number: int | None = None) -> str:
    """The line under an opened image's header: where it was opened, so the reader knows why it is here."""
    if origin == GALLERY:
        return f"Opened from the gallery{f' (number {number} of the selection)' if number else ''}."
    return "Opened by a click on the map."


# ---------------------------------------------------------------- the opened image

def detail_meta(rec) -> str:
    """One markdown line about an images.parquet row: labels, split, source, sex, age, patient."""
    age = rec["age"]
    return " · ".join([f"true: **{rec['labels'].replace('|', ', ') or NO_FINDING}**", f"split: {rec['split']}",
                       f"source: {rec['source'] or rec['dataset']}", f"sex: {rec['sex'] or '—'}",
                       f"age: {'—' if pd.isna(age) else int(age)}", f"patient: {rec['patient_id']}"])


def probability_table(probs: dict[str, np.ndarray], names: list[str]) -> pd.DataFrame:
    """Class x backbone table of one image's probabilities (``probs``: backbone label -> (C,))."""
    return pd.DataFrame({k: np.asarray(p) for k, p in probs.items()}, index=pd.Index(list(names), name="Class"))


def explained_class(names: list[str], cls_idx: int | None, probs: np.ndarray) -> str:
    """The class a heatmap explains: the chosen one, else the image's top class."""
    return names[cls_idx] if cls_idx is not None else names[int(np.argmax(probs))]


# ---------------------------------------------------------------- when a map is redrawn (speed at 100k points)

@dataclass(frozen=True)
class MapDrawing:
    """What one map shows: its cached base figure (``base``: the figure cache's key) and the overlays.

    Any change re-sends the whole map to the browser, which re-creates it from scratch (Streamlit keys a
    chart by its figure): ~1-2 s of the browser's main thread per 100k-point map. ``next_drawing``
    decides when that is worth it."""

    base: tuple                 # (method, colouring, class, height)
    rings: tuple = ()           # the selection rows ringed on this map
    others: tuple = ()          # the other overlays (``latent.overlay_key``: opened image, upload)
    revision: int = 0           # bumped to redraw a map whose only change is dropping plotly's own selection


def next_drawing(drawn: MapDrawing | None, base: tuple, selected, others: tuple, chart_rows,
                 followup: bool) -> tuple[MapDrawing, bool]:
    """What to draw on one map this run, and whether a follow-up run must draw the rest.

    ``drawn``: this map last run (None: not shown); ``selected``: the page's selection rows;
    ``chart_rows``: the rows plotly itself shows selected on this map (the user's box or lasso, kept by
    the browser until the map is re-created); ``followup``: this run is the follow-up.

    - A map the user just selected on already shows the selection (plotly dims the other points): it
      gets no rings, so it is not redrawn at all.
    - Any other overlay change waits for a follow-up run (the map is drawn as before now): the gallery,
      class mix and detail reach the browser first, before its main thread is busy re-creating maps.
    - A new base figure (map, colouring, size) is drawn at once, rings included (the browser's own
      selection does not survive it).
    """
    sel = tuple(int(r) for r in selected)
    chart = set(int(r) for r in chart_rows)
    if drawn is None or drawn.base != base:
        return MapDrawing(base, sel, others, drawn.revision if drawn else 0), False
    live = bool(chart) and chart == set(sel)
    keep_native = live and not drawn.rings and drawn.others == others
    want = replace(drawn, rings=() if keep_native else sel, others=others)
    if chart and not live and want == drawn:  # plotly still shows a selection that is no longer the page's
        want = replace(want, revision=drawn.revision + 1)
    if want == drawn:
        return drawn, False
    return (want, False) if followup else (drawn, True)


def plan_drawings(drawn: dict | None, bases: dict, selected, others: dict, charts: dict,
                  followup: bool) -> tuple[dict, bool]:
    """``next_drawing`` for every map shown (``bases``, ``others``, ``charts``: by backbone; ``charts``
    holds each map's chart state, ``{"selection": ...}`` or None): the drawings, and whether a follow-up
    run is needed. Maps not shown are forgotten (shown again, they are drawn anew)."""
    drawn = drawn or {}
    plans, pending = {}, False
    for arch, base in bases.items():
        rows = selection_rows((charts.get(arch) or {}).get("selection"))
        plans[arch], wait = next_drawing(drawn.get(arch), base, selected, others[arch], rows, followup)
        pending = pending or wait
    return plans, pending
