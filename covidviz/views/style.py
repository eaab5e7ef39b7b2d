"""The app's look, defined once: palettes, chart font, names shown for backbones, splits and
operating points, the research-use notice and small number formats. Streamlit-free.

Every page and figure builder takes its colours and labels from here, so a class or a backbone has
the same colour and name on every page and in the case report.
"""

from __future__ import annotations

import numpy as np

from covidviz.data.labels import MULTILABEL, LabelSpace

NOTICE_TITLE = "For research and education only — not for clinical diagnosis."
NOTICE = ("These models were trained on limited, possibly biased public data and have not been "
          "validated for patient care. Do not use their outputs to diagnose, treat or triage anyone.")

NO_FINDING = "No finding"           # display name of a multi-label image with no positive finding
UNKNOWN = "unknown"                 # display name of a missing metadata value
CHART_FONT = dict(size=14)
MARGIN = dict(t=50, b=10, l=10, r=10)
# Plotly draws its modebar (zoom, pan, download, Streamlit's fullscreen) over the top right corner of a
# chart on hover, where titles and top legends sit. Every chart gets a strip of this height above its
# own top margin (``with_modebar_room``), so the modebar covers nothing; the plot area keeps its size.
MODEBAR_PX = 30
PLOTLY_CONFIG = {"displaylogo": False}
PLOTLY_DEFAULT_TOP, PLOTLY_DEFAULT_HEIGHT = 100, 450  # plotly.js's, when a figure does not set them

# Okabe-Ito (distinguishable with the common colour-vision deficiencies and in grayscale print), then
# Tol's muted hues for 15-class problems; black last so it is the 16th colour, not the 8th.
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442")
EXTRA_COLOURS = ("#882255", "#44AA99", "#999933", "#AA4499", "#332288", "#DDCC77", "#117733", "#88CCEE")
PALETTE = OKABE_ITO + EXTRA_COLOURS + ("#000000",)
NO_FINDING_COLOUR = "#8c8c8c"
MISSING_COLOUR = "#BBBBBB"
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")  # a second cue besides colour
SYMBOLS = ("circle", "diamond", "square", "triangle-up", "x", "star")
# The two highlights every map shares (Latent space rings, SOM outlines, QE histogram line): "the
# selection" (what you picked on the page) and "your upload" (the Diagnose page's image). Neither is
# among the first 15 class colours, so a highlight does not read as a class.
SELECTION_COLOUR = "#000000"        # black (drawn over a white halo where the background can be dark)
UPLOAD_COLOUR = "#FF00FF"           # magenta: the upload's star, its node and its nearest neighbours

ARCH_LABELS = {"densenet121": "DenseNet121", "resnet50": "ResNet50", "tinycnn": "Tiny CNN (test model)"}
SPLIT_LABELS = {"train": "Train", "val": "Validation", "test": "Test"}

# Operating points chosen on validation (analysis/thresholds.POINTS), as every page names them.
OPERATING_POINTS = {
    "youden": "Balanced (Youden's J)",
    "high_sensitivity": "Rule-out (sensitivity ≥ 95 % on validation)",
    "high_specificity": "Rule-in (specificity ≥ 95 % on validation)",
}


def with_modebar_room(fig):
    """``fig`` with a ``MODEBAR_PX`` strip on top for the modebar: more top margin and height (the plot
    area keeps its size), and a title left at its default place (centred on the top margin, which would
    now reach into the strip) centred on the old margin below the strip. A ``go.Figure`` is changed in
    place (pages build one per run; ``ui.plotly_chart`` applies this once); a figure dict (the latent maps'
    fast path, built on a cached base) is copied, its data shared."""
    if isinstance(fig, dict):
        layout = dict(fig.get("layout") or {})
        title = layout.get("title")
        title = dict(title) if isinstance(title, dict) else ({"text": title} if title else {})
        top = (layout.get("margin") or {}).get("t")
        top = PLOTLY_DEFAULT_TOP if top is None else top
        height = (layout.get("height") or PLOTLY_DEFAULT_HEIGHT) + MODEBAR_PX
        layout.update(margin={**(layout.get("margin") or {}), "t": top + MODEBAR_PX}, height=height)
        if title.get("text") and title.get("y") is None and title.get("yref") in (None, "container"):
            layout["title"] = {**title, "y": _title_y(top, height), "yanchor": "middle"}
        return {**fig, "layout": layout}
    layout = fig.layout
    top = PLOTLY_DEFAULT_TOP if layout.margin.t is None else layout.margin.t
    height = (layout.height or PLOTLY_DEFAULT_HEIGHT) + MODEBAR_PX
    fig.update_layout(margin_t=top + MODEBAR_PX, height=height)
    if layout.title.text and layout.title.y is None and layout.title.yref in (None, "container"):
        fig.update_layout(title_y=_title_y(top, height), title_yanchor="middle")
    return fig


def _title_y(top: float, height: float) -> float:
    """Title position (fraction of the figure's height) centred on the old top margin, under the strip."""
    return 1 - (MODEBAR_PX + top / 2) / height


def colour(i: int) -> str:
    """The i-th colour of the palette (wraps after 16)."""
    return PALETTE[i % len(PALETTE)]


def class_colours(classes) -> dict[str, str]:
    """Class name -> colour, by position in ``classes``; "No finding" is always grey."""
    out = {c: colour(i) for i, c in enumerate(c for c in classes if c != NO_FINDING)}
    if NO_FINDING in classes:
        out[NO_FINDING] = NO_FINDING_COLOUR
    return out


def arch_label(arch: str) -> str:
    return ARCH_LABELS.get(arch, arch)


def backbone_colours(archs) -> dict[str, str]:
    """Display name -> colour, stable within an experiment so every chart agrees. ``archs``: the
    experiment's backbones (or the experiment itself)."""
    archs = getattr(archs, "backbones", archs)
    return {arch_label(a): colour(i) for i, a in enumerate(archs)}


def label_order(labels: LabelSpace) -> list[str]:
    """The classes as tables list them: the label space's order, then "No finding" for multi-label."""
    return list(labels.names) + ([NO_FINDING] if labels.task == MULTILABEL else [])


def task_label(labels: LabelSpace) -> str:
    if labels.task == MULTILABEL:
        return "Multi-label (zero or more findings per image)"
    return "Multi-class (exactly one label per image)"


def format_seconds(seconds) -> str:
    if seconds is None or not np.isfinite(seconds):
        return "—"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def signed_change(d: float, digits: int = 2) -> str:
    """A change as shown: "+0.12", "−0.05" (a true minus sign), "±0.00" when it rounds to nothing."""
    sign = "±" if round(abs(d), digits) == 0 else "+" if d > 0 else "−"
    return f"{sign}{abs(d):.{digits}f}"


def table_height(rows, max_rows: int = 25) -> int:
    """Pixel height that shows every row (up to ``max_rows``) of a table (or a row count) without scrolling."""
    n = len(rows) if hasattr(rows, "__len__") else int(rows)
    return 35 * (min(n, max_rows) + 1) + 3


def analyse_command(exp_path, repo) -> str:
    """The command that analyses (or re-analyses) an experiment, relative to the repository when it
    can be, so a user can paste it in the repository root."""
    from pathlib import Path

    path = Path(exp_path)
    try:
        shown = path.resolve().relative_to(Path(repo).resolve())
    except ValueError:
        shown = path
    return f"python train.py analyze {shown}"


# ``st.table`` shows every column and wraps cells at spaces, but a word cannot break: a table whose
# longest words add up to more than its column's width scrolls sideways (hiding columns). These size
# side-by-side tables for the narrowest window the app is laid out for.
MAIN_WIDTH = 820        # px of the main column of a 1280 px window, sidebar open, wide layout
CHAR_PX, CELL_PAD_PX, COLUMN_GAP_PX = 8, 16, 16   # generous: 14 px text is ~7 px a character


def min_table_width(frame) -> int:
    """The narrowest width (px) at which ``st.table`` shows ``frame`` without a sideways scroll: per column
    (the index included) its longest unbreakable word, plus the cell padding."""
    columns = [[str(frame.index.name or "")] + [str(v) for v in frame.index]]
    columns += [[str(c)] + [str(v) for v in frame.iloc[:, k]] for k, c in enumerate(frame.columns)]
    return sum(CELL_PAD_PX + CHAR_PX * max((len(w) for cell in col for w in cell.split()), default=1) for col in columns)


def tables_per_row(frames, width: int = MAIN_WIDTH) -> int:
    """How many of ``frames`` (None: a place without a table) fit side by side in ``width`` px (at least
    1, at most all of them)."""
    tables = [f for f in frames if f is not None]
    if not tables:
        return max(1, len(frames))
    need = max(min_table_width(f) for f in tables) + COLUMN_GAP_PX
    return max(1, min(len(frames), width // need))
