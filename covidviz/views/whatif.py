"""What the Diagnose page's "Test this explanation" panel shows, without Streamlit: per what-if row its
title, the altered image (as a thumbnail with the hidden region outlined), one line per backbone with
the probability before -> after and the random reference, and the plain reading (``reading``: one
sentence per backbone, from the change of its score); the user's box as fractions; the panel's cache
key. The what-ifs themselves are ``covidviz.cam.whatif``'s."""

from __future__ import annotations

import numpy as np

from covidviz.cam.whatif import (
    HIDE_BORDER,
    HIDE_BOX,
    HIDE_CENTRE,
    HIDE_HOT,
    HIDE_MASK,
    HIDE_RANDOM,
    KEEP_HOT,
    KINDS,
    WhatIfPanel,
    WhatIfRow,
)
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
SMALL, LARGE = 0.05, 0.15        # probability changes read as "stays" (< SMALL) and "drops/rises" (>= LARGE)


# ------------------------------------------------------------------------------------------------
# titles and plain readings of the what-ifs
# ------------------------------------------------------------------------------------------------

# Per kind: the row's title and where its reading says the image was altered ({pct}: the requested
# fraction, {draws}: "3 draws", {region}/{Region}: what a box or mask row hid).
TITLES = {HIDE_HOT: "Hottest {pct} of the heat map hidden", HIDE_RANDOM: "Random {pct} hidden ({draws})",
          KEEP_HOT: "Only the hottest {pct} kept", HIDE_BORDER: "Borders hidden (outer strip)",
          HIDE_CENTRE: "Centre hidden (lung fields)", HIDE_BOX: "Your box hidden", HIDE_MASK: "{Region} hidden"}
WHERE = {HIDE_HOT: "with the hottest {pct} of its heat map hidden",
         HIDE_RANDOM: "with a random {pct} of the image hidden (mean of the draws)",
         KEEP_HOT: "with only the hottest {pct} of its heat map kept", HIDE_BORDER: "with the borders of the film hidden",
         HIDE_CENTRE: "with the lungs hidden", HIDE_BOX: "with {region} hidden", HIDE_MASK: "with {region} hidden"}
# Per kind that hides a region: what a clear drop, some drop, a rise (None: read as no change), no change
# and little change of a low score say.
_HIDDEN = {
    HIDE_HOT: ("the score depends on the region the heat map highlights.",
               "the highlighted region carries part of the score.",
               "the highlighted region was holding the score down, not up.",
               "the score does not depend on the region the heat map highlights.", "hiding it changes little."),
    HIDE_BORDER: ("the model uses the borders (where markers, text and collimation edges sit) for this image, a "
                  "possible shortcut.", "part of the score comes from the borders (markers, text, collimation edges).",
                  None, "the score does not depend on the borders of the film.", "hiding them changes little."),
    HIDE_BOX: ("the model uses what is in {region}.", "part of the score comes from {region}.",
               "what is in {region} was holding the score down.", "the model does not need {region}.",
               "hiding it changes little."),
}
_HIDDEN[HIDE_MASK] = _HIDDEN[HIDE_BOX]


def _pct(f: float) -> str:
    return f"{100 * f:.0f} %"


def _fill(template: str, fraction: float | None, region: str, draws: int = 1) -> str:
    return template.format(pct=_pct(fraction) if "{pct}" in template else "", region=region,
                           Region=f"{region[:1].upper()}{region[1:]}", draws=f"{draws} draw{'s' if draws > 1 else ''}")


def _known(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown what-if kind {kind!r}; choose from {', '.join(KINDS)}")
    return kind


def _move(cls: str, before: float, after: float, spread: float = 0.0) -> str:
    d = after - before
    sd = f" ± {spread:.2f}" if spread > 0.005 else ""
    if abs(d) < SMALL:
        return f"The {cls} score stays {before:.2f}" if f"{before:.2f}" == f"{after:.2f}" and not sd else \
            f"The {cls} score stays about the same ({before:.2f} -> {after:.2f}{sd})"
    verb = "drops" if d < 0 else "rises"
    little = " a little" if abs(d) < LARGE else ""
    return f"The {cls} score {verb}{little} from {before:.2f} to {after:.2f}{sd}"


def _graded(d: float, low: bool, texts: tuple) -> str:
    drop, part, rise, none, little = texts
    if d <= -LARGE:
        return drop
    if d <= -SMALL:
        return part
    if rise is not None and d >= SMALL:
        return rise
    return little if low else none


def _kept(cls: str, d: float, low: bool) -> str:
    if low:
        return f"the region alone does not make a {cls} call either."
    if d >= LARGE:
        return "that region alone carries the score, and the filled-in rest pushes it further up (read with care)."
    if d > -SMALL:
        return "that region alone carries the score."
    if d > -LARGE:
        return "that region carries most of the score, the rest of the image adds some."
    return "the region alone does not carry the score; the model also needs the rest of the image."


def _centre(d: float, low: bool) -> str:
    if low:
        return "hiding them changes little."
    if d > -SMALL:
        return "the model is not using the lungs for this image."
    if d > -LARGE:
        return "the lungs carry only part of the score."
    return "the score depends on the lung fields."


def reading(kind: str, cls: str, before: float, after: float, *, fraction: float | None = None,
            spread: float = 0.0, reference: float | None = None, region: str = "the box") -> str:
    """One plain sentence for one backbone's what-if (``region`` names a ``hide_mask``/``hide_box`` area).

    Changes below ``SMALL`` read as "stays", from ``LARGE`` as a clear drop or rise. A clear *rise* is
    never read as "not needed": the filled-in patch itself moved the score (a smooth patch in a lung can
    look like a hazy opacity), so that row does not show what the score depends on.
    """
    where = _fill(WHERE[_known(kind)], fraction, region)
    d = after - before
    low = before < 0.5 and after < 0.5 and abs(d) < LARGE   # nothing much to explain either way
    move = f"{_move(cls, before, after, spread)} {where}"
    if kind == HIDE_RANDOM:
        return f"{move}: the reference for hiding the heat map's own region."
    if d >= LARGE and kind != KEEP_HOT:
        return (f"{move}: the filled-in area itself pushes the score up (a smooth patch can look like a hazy "
                "opacity), so this what-if does not show what the score needs.")
    if kind == HIDE_HOT and reference is not None and d <= -SMALL and (reference - before) <= d + SMALL:
        return (f"{move}, but hiding the same area at random places does about as much ({reference:.2f}): "
                "the drop is not specific to the highlighted region.")
    if kind == KEEP_HOT:
        return f"{move}: {_kept(cls, d, low)}"
    if kind == HIDE_CENTRE:
        return f"{move}: {_centre(d, low)}"
    return f"{move}: " + _graded(d, low, _HIDDEN[kind]).format(region=region)


def row_reading(row: WhatIfRow, arch: str) -> str:
    """``reading`` of one backbone's result in ``row``."""
    ref = None if row.reference is None else row.reference.get(arch)
    return reading(row.kind, row.class_name, row.before[arch], row.after[arch],
                   fraction=row.target if row.target else row.fraction, spread=row.spread[arch], reference=ref,
                   region=row.region)


def row_label(row: WhatIfRow) -> str:
    """The row's title: "Hottest 10 % of the heat map hidden", "Random 10 % hidden (3 draws)", …"""
    return _fill(TITLES[_known(row.kind)], row.target, row.region, row.n_draws)


def panel_table(panel: WhatIfPanel) -> list[dict]:
    """One dict per (row, backbone): ``kind, label, arch, fraction, before, after, change, spread,
    reading`` (for a dataframe)."""
    return [{"kind": r.kind, "label": row_label(r), "arch": a, "fraction": r.fraction, "before": r.before[a],
             "after": r.after[a], "change": r.change(a), "spread": r.spread[a], "reading": row_reading(r, a)}
            for r in panel.rows for a in r.archs]


# ------------------------------------------------------------------------------------------------
# the panel
# ------------------------------------------------------------------------------------------------


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
        out.append(f"{text}. {row_reading(row, a)}")
    return out


def row_title(row: WhatIfRow) -> str:
    label = row_label(row)
    return f"{label} ({100 * row.fraction:.0f} % of the image)" if row.fraction else label


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
