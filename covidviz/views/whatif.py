"""What the Diagnose page's "Test this explanation" panel shows, without Streamlit: per what-if row the
altered image (as a thumbnail with the hidden region outlined), one line per backbone with the
probability before -> after and the random reference, and the plain reading; the user's box as
fractions; the panel's cache key. The what-ifs themselves are ``covidviz.cam.whatif``'s."""

from __future__ import annotations

import numpy as np

from covidviz.cam.whatif import HIDE_HOT, HIDE_RANDOM, WhatIfPanel, WhatIfRow
from covidviz.views import glossary
from covidviz.views.style import signed_change

TITLE = "Test this explanation"
INTRO = ("A heat map shows what goes with the score, not what the score needs. Here parts of the image are hidden "
         "(filled with the film's own blurred background, not black) and both models score the altered copies: "
         "if the score holds with the highlighted region hidden, the map does not explain it. Hiding the same "
         "area at random places is the reference. See " + glossary.link("Occlusion what-if") + ".")
RUN_LABEL = "Run the what-ifs"
RUN_HELP = ("About a dozen altered copies of the image per model, scored in one batched pass per model "
            "(a few seconds on a CPU).")
BOX_HELP = ("Hide a box of your own: drag the sliders to place it (fractions of the image width and height, "
            "from the top-left corner). The models score the image with the box hidden.")
BOX_TOO_BIG = ("The box covers the whole film: leave some of it outside the box, which the hidden part is filled "
               "from.")
CLASS_NOTE = ("Explaining {cls} for both models (each model's own heat map for that class decides what "
              "\"hottest\" means).")
THUMB = 96                     # px: the altered images in the panel


def box_from_ranges(x_range: tuple[float, float], y_range: tuple[float, float]) -> dict[str, float] | None:
    """The user's box ``{"x", "y", "w", "h"}`` (fractions) from two slider ranges; None when empty."""
    x0, x1 = sorted(float(v) for v in x_range)
    y0, y1 = sorted(float(v) for v in y_range)
    if x1 - x0 <= 0 or y1 - y0 <= 0:
        return None
    return {"x": x0, "y": y0, "w": x1 - x0, "h": y1 - y0}


def outlined(image: np.ndarray, box: dict[str, float] | None = None, colour=(0, 114, 178)) -> np.ndarray:
    """RGB copy of a uint8 film with ``box`` (fractions) outlined, 2 px wide (for "where is my box")."""
    g = np.asarray(image, np.uint8)
    rgb = np.repeat(g[..., None], 3, axis=2).copy()
    if box is None:
        return rgb
    h, w = g.shape
    t = max(1, round(min(h, w) / 128))
    y0, x0 = int(box["y"] * h), int(box["x"] * w)
    y1, x1 = min(h, int(round((box["y"] + box["h"]) * h))), min(w, int(round((box["x"] + box["w"]) * w)))
    for sl in ((slice(y0, min(h, y0 + t)), slice(x0, x1)), (slice(max(0, y1 - t), y1), slice(x0, x1)),
               (slice(y0, y1), slice(x0, min(w, x0 + t))), (slice(y0, y1), slice(max(0, x1 - t), x1))):
        rgb[sl] = colour
    return rgb


def _arrow(before: float, after: float) -> str:
    return f"{before:.2f} → {after:.2f} ({signed_change(after - before)})"


def row_lines(row: WhatIfRow, arch_labels: dict[str, str]) -> list[str]:
    """Markdown lines of one row: per backbone "**Label** before → after (change)", the random reference
    for the hottest-region rows and the spread of the random draws, then its plain reading."""
    out = []
    for a in row.archs:
        text = f"**{arch_labels.get(a, a)}** {_arrow(row.before[a], row.after[a])}"
        if row.kind == HIDE_RANDOM and row.spread.get(a, 0.0) > 0.005:
            text += f" ± {row.spread[a]:.2f} over the draws"
        if row.kind == HIDE_HOT and row.reference is not None:
            text += f"; the same area hidden at random: {row.reference[a]:.2f}"
        out.append(f"{text}. {row.readings[a]}")
    return out


def row_title(row: WhatIfRow) -> str:
    return f"{row.label} ({100 * row.fraction:.0f} % of the image)" if row.fraction else row.label


def panel_rows(panel: WhatIfPanel) -> list[WhatIfRow]:
    """The rows in reading order: each hottest-region row followed by its random reference, then the rest."""
    hot = [r for r in panel.rows if r.kind == HIDE_HOT]
    rand = {r.target: r for r in panel.rows if r.kind == HIDE_RANDOM}
    out = []
    for r in hot:
        out.append(r)
        if r.target in rand:
            out.append(rand.pop(r.target))
    out += list(rand.values())
    out += [r for r in panel.rows if r.kind not in (HIDE_HOT, HIDE_RANDOM)]
    return out


def panel_key(prediction_key, class_idx: int, method: str, layer: str) -> tuple:
    """What a computed panel depends on (the image and window, the class, the heat map that ranks pixels)."""
    return (prediction_key, int(class_idx), method, layer)
