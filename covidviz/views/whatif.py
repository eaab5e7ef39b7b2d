"""What the Diagnose page's "Test this explanation" panel shows, without Streamlit: ONE chart (``figure``:
per condition and per backbone the score change as a point, the random band of same-size regions as a
grey range behind it, each backbone's own hidden region on a thumbnail of the film), ONE summary line
above it (``summary_line``: what moves the score beyond chance, saturation said), the contradictions
between conditions (``contradiction_sentences``) and, for a closed expander, the per-condition sentences
(``condition_sentences``: per backbone before -> after, the band and the plain ``reading``); the user's
box as fractions; the panel's cache key. The what-ifs are ``covidviz.cam.whatif``'s, their bands, scales
and contradictions ``covidviz.cam.whatif_effects``'s."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from covidviz.cam import whatif_effects as fx
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
from covidviz.views.diagnose import SHOWN_LABEL
from covidviz.views.style import CHART_FONT, OKABE_ITO, SELECTION_COLOUR, arch_label, backbone_colours, signed_change

TITLE = "Test this explanation"
INTRO = ("A heat map shows what goes with the score, not what the score needs. Here parts of the image are hidden "
         "(filled with the film's own blurred background, not black) and both models score the altered copies: "
         "if the score holds with the highlighted region hidden, the map does not explain it. Hiding regions of "
         "the same size at random places is the reference (the grey band). See " + glossary.link("Occlusion what-if") + ".")
RUN_LABEL = "Run the what-ifs"
RUN_HELP = ("About 80 altered copies of the image per model (7 conditions, each with 10 random regions of its size), "
            "scored in batches: on a 2-core CPU about 20 s for 224-px models, 2 s for the demo's 64-px ones; "
            "much less on a GPU.")
BOX_HELP = ("Hide a box of your own: drag the sliders to place it (fractions of the image width and height, "
            "from the top-left corner). The models score the image with the box hidden, and with 10 random regions "
            "of its size hidden (its grey band); it is outlined in yellow on the thumbnails.")
BOX_TOO_BIG = ("The box covers the whole film: leave some of it outside the box, which the hidden part is filled "
               "from.")
CLASS_NOTE = ("Explaining {cls} for both models (each model's own heat map for that class decides what "
              "\"hottest\" means).")
SMALL, LARGE = fx.SMALL, 0.15   # probability changes read as "stays" (< SMALL) and "drops/rises" (>= LARGE)


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


def outlined(image: np.ndarray, box: dict[str, float] | None = None, colour=(0, 114, 178),
             width: int | None = None) -> np.ndarray:
    """RGB copy of a uint8 film (grayscale or RGB) with ``box`` (fractions) outlined, ``width`` px wide
    (default 1 px per 128 px of the image) (for "where is my box")."""
    g = np.asarray(image, np.uint8)
    rgb = g.copy() if g.ndim == 3 else np.repeat(g[..., None], 3, axis=2)
    if box is None:
        return rgb
    h, w = g.shape[:2]
    t = width or max(1, round(min(h, w) / 128))
    y0, x0 = int(box["y"] * h), int(box["x"] * w)
    y1, x1 = min(h, int(round((box["y"] + box["h"]) * h))), min(w, int(round((box["x"] + box["w"]) * w)))
    for sl in ((slice(y0, min(h, y0 + t)), slice(x0, x1)), (slice(max(0, y1 - t), y1), slice(x0, x1)),
               (slice(y0, y1), slice(x0, min(w, x0 + t))), (slice(y0, y1), slice(max(0, x1 - t), x1))):
        rgb[sl] = colour
    return rgb


def _arrow(before: float, after: float) -> str:
    return f"{before:.2f} → {after:.2f} ({signed_change(after - before)})"


def _fmt(e: fx.Effect, d: float) -> str:
    """A change on ``e``'s scale: "−0.42", "−1.31 log-odds"."""
    return signed_change(d) + (" log-odds" if e.scale == fx.LOG_ODDS else "")


BAND_NAME = f"{fx.BAND[0]:.0f}th–{fx.BAND[1]:.0f}th percentile"   # how the grey range is summarised


def band_text(e: fx.Effect) -> str:
    """"random regions of the same size: −0.12 to +0.02 (5th–95th percentile of 10): beyond chance"."""
    if e.band is None:
        return ""
    verdict = ("beyond chance" if e.clear else f"beyond chance but small (under {fx.SMALL_ON[e.scale]:g})"
               if e.beyond else "within chance")
    return (f"random regions of the same size: {signed_change(e.band[0])} to {signed_change(e.band[1])} "
            f"({BAND_NAME} of {e.n_random}): {verdict}")


def saturated_reading(e: fx.Effect) -> str:
    """What a saturated backbone's row says, from its log-odds against the band (the probability cannot)."""
    if e.beyond is None:
        return "the probability is saturated, so it cannot show what the score needs."
    if e.beyond and e.change < 0:
        return ("the score leans on this region more than on random regions of its size, though the probability "
                "stays saturated.")
    if e.beyond:
        return "hiding it pushes the score up beyond chance (the filled-in patch can itself look like an opacity)."
    return "it moves no more than with random regions of its size hidden: not specifically needed."


def row_lines(row: WhatIfRow, arch_labels: dict[str, str], scales: dict[str, str] | None = None) -> list[str]:
    """Markdown lines of one row: per backbone "**Label** before → after (change)", the random band of
    same-size regions (or, without one, the random reference), then its plain reading. A backbone whose
    ``scales`` entry (default: ``fx.scale_for`` its probability) is log-odds says it is saturated and reads
    its log-odds instead."""
    out = []
    for a in row.archs:
        e = fx.effect(row, a, (scales or {}).get(a))
        name = f"**{arch_labels.get(a, a)}**"
        if e.scale == fx.LOG_ODDS:
            text = (f"{name} saturated ({row.before[a]:.2f} → {row.after[a]:.2f}): uninformative on the probability "
                    f"scale; log-odds {e.before:.2f} → {e.after:.2f} ({_fmt(e, e.change)})")
            band = band_text(e)
            out.append(f"{text}{'; ' + band if band else ''}. {_where(row)}: {saturated_reading(e)}")
            continue
        text = f"{name} {_arrow(row.before[a], row.after[a])}"
        if row.kind == HIDE_RANDOM and row.spread.get(a, 0.0) > 0.005:
            text += f" ± {row.spread[a]:.2f} over the draws"
        if e.band is not None:
            text += "; " + band_text(e)
        elif row.kind == HIDE_HOT and row.reference is not None:
            text += f"; the same area hidden at random: {row.reference[a]:.2f}"
        out.append(f"{text}. {row_reading(row, a)}")
    return out


def _where(row: WhatIfRow) -> str:
    w = _fill(WHERE[_known(row.kind)], row.target if row.target else row.fraction, row.region)
    return w[:1].upper() + w[1:]


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


# ------------------------------------------------------------------------------------------------
# the chart, its summary line and the contradictions
# ------------------------------------------------------------------------------------------------

# Per kind: the chart's short label of a condition and the noun a contradiction sentence names it by.
SHORT = {HIDE_HOT: "Hottest {pct} hidden", HIDE_RANDOM: "Random {pct} hidden", KEEP_HOT: "Only hottest {pct} kept",
         HIDE_BORDER: "Borders hidden", HIDE_CENTRE: "Centre (lungs) hidden", HIDE_BOX: "Your box hidden",
         HIDE_MASK: "{Region} hidden"}
NOUN = {HIDE_HOT: "its hottest {pct}", HIDE_RANDOM: "a random {pct}", KEEP_HOT: "all but its hottest {pct}",
        HIDE_BORDER: "the borders", HIDE_CENTRE: "the centre", HIDE_BOX: "your box", HIDE_MASK: "{region}"}
BAND_COLOUR = "#BDBDBD"        # the random band (grey: chance, not a backbone)
BOX_COLOUR = OKABE_ITO[6]      # yellow: the user's box on the thumbnails (never a backbone's first colours)
FLAG_COLOUR = SELECTION_COLOUR
THUMB_PX = 128                 # px: each backbone's thumbnail in the chart
ROW_PX = 34                    # px per condition in the chart
HOT_ALPHA = 0.25               # tint per nested hottest region (5 % ⊂ 10 % ⊂ 20 %): darker = hotter
CHART_NOTE = (f"Each point: how much hiding that region changed the score (filled: outside the grey band by "
              f"{fx.SMALL:g} or more, {fx.SMALL_ON[fx.LOG_ODDS]:g} in log-odds; open: not). Grey: the same change with "
              "regions of the same size hidden at random places, "
              f"{BAND_NAME} of the draws. Thumbnails: each model's own hottest 5 / 10 / 20 % (darker = hotter), "
              "your box in yellow.")
SENTENCES_LABEL = "Condition by condition, in words"


def condition_label(row: WhatIfRow) -> str:
    """The chart's label of a row: "Hottest 10 % hidden", "Centre (lungs) hidden", …"""
    return _fill(SHORT[_known(row.kind)], row.target, row.region)


def _noun(row: WhatIfRow) -> str:
    return _fill(NOUN[_known(row.kind)], row.target, row.region)


def conditions(panel: WhatIfPanel, box_row: WhatIfRow | None = None) -> list[WhatIfRow]:
    """The chart's rows in reading order: the panel's conditions (its random-only rows left out: they are
    the bands now), then ``box_row`` (replacing the panel's own box row, if any)."""
    rows = [r for r in panel.rows if r.kind != HIDE_RANDOM and not (box_row is not None and r.kind == HIDE_BOX)]
    return rows + ([box_row] if box_row is not None else [])


def panel_effects(rows: list[WhatIfRow]) -> dict[str, list[fx.Effect]]:
    """arch -> one ``Effect`` per row, every row of a backbone on ONE scale (``fx.scale_for`` its original
    probability: a saturated backbone reads every condition in log-odds)."""
    if not rows:
        return {}
    scales = {a: fx.scale_for(rows[0].before[a]) for a in rows[0].archs}
    return {a: [fx.effect(r, a, s) for r in rows] for a, s in scales.items()}


@dataclass(frozen=True)
class PanelReading:
    """What the chart, its summary and the sentences are drawn from: the conditions (``conditions``), per
    backbone their effects (``panel_effects``) and the contradictions between them."""

    class_name: str
    pixels: np.ndarray
    rows: list[WhatIfRow]
    effects: dict[str, list[fx.Effect]]
    found: list[fx.Contradiction]

    def summary(self) -> str:
        return summary_line(self.class_name, self.rows, self.effects, self.found)

    def figure(self, box: dict[str, float] | None = None, shown_anyway: bool = False) -> go.Figure:
        return figure(self.class_name, self.rows, self.effects, self.found, self.pixels, box, shown_anyway)

    def flags(self) -> list[str]:
        return contradiction_sentences(self.class_name, self.rows, self.found)

    def sentences(self) -> list[str]:
        return condition_sentences(self.rows, self.effects)


def read_panel(panel: WhatIfPanel, box_row: WhatIfRow | None = None) -> PanelReading:
    """The panel (and the user's box row) read for the chart."""
    rows = conditions(panel, box_row)
    effects = panel_effects(rows)
    return PanelReading(panel.class_name, panel.pixels, rows, effects, fx.contradictions(rows, effects))


def _arch_summary(arch: str, effs: list[fx.Effect], rows: list[WhatIfRow]) -> str:
    head = arch_label(arch)
    if effs and effs[0].scale == fx.LOG_ODDS:
        head += (f" (p = {rows[0].before[arch]:.2f}, saturated: uninformative on the probability scale, "
                 "read in log-odds)")
    judged = [(e, r) for e, r in zip(effs, rows) if e.beyond is not None]
    clear = [(e, r) for e, r in judged if e.clear]
    if not judged:
        return f"{head}: no random band to judge the changes against"
    if not clear:
        small = fx.SMALL_ON[effs[0].scale]
        return f"{head}: no hidden region moves the score beyond chance by {small:g} or more"
    e, r = max(clear, key=lambda er: abs(er[0].change))
    return (f"{head}: {len(clear)} of {len(judged)} hidden regions move the score beyond chance "
            f"(most: {condition_label(r).lower()}, {_fmt(e, e.change)})")


def summary_line(cls: str, rows: list[WhatIfRow], effects: dict[str, list[fx.Effect]],
                 found: list[fx.Contradiction]) -> str:
    """THE one line above the chart: per backbone how many conditions move the score beyond the random band
    (and the biggest), "saturated: uninformative on the probability scale" where it is, and how many
    contradictions are flagged."""
    line = f"**{cls}**: " + "; ".join(_arch_summary(a, effs, rows) for a, effs in effects.items()) + "."
    pairs = len({(c.inner, c.outer) for c in found})
    if pairs:
        line += f" {pairs} contradiction{'s' if pairs > 1 else ''} between conditions, flagged under the chart."
    return line


def contradiction_sentences(cls: str, rows: list[WhatIfRow], found: list[fx.Contradiction]) -> list[str]:
    """One sentence per contradicting pair of conditions (a region inside another that changes the score
    more than the whole bigger region, by more than the random band), with every backbone's numbers."""
    pairs: dict[tuple[int, int], list[fx.Contradiction]] = {}
    for c in found:
        pairs.setdefault((c.inner, c.outer), []).append(c)
    out = []
    for (i, j), cs in pairs.items():
        inner, outer = _noun(rows[i]), _noun(rows[j])
        nums = "; ".join(f"{arch_label(c.arch)}: {_fmt(c.inner_effect, c.inner_effect.change)} vs "
                         f"{_fmt(c.outer_effect, c.outer_effect.change)}, band {c.margin:.2f}" for c in cs)
        out.append(f"Contradiction: hiding {inner} (inside {outer}) changes the {cls} score more than hiding "
                   f"{outer} itself ({nums}); a region cannot matter more than a bigger one containing it, so the "
                   "filled-in patch itself is probably moving the score: read these two rows with care.")
    return out


def condition_sentences(rows: list[WhatIfRow], effects: dict[str, list[fx.Effect]]) -> list[str]:
    """For the closed expander: per condition its title, then per backbone its line (``row_lines``)."""
    scales = {a: effs[0].scale for a, effs in effects.items() if effs}
    labels = {a: arch_label(a) for a in effects}
    return [f"**{row_title(r)}**  \n" + "  \n".join(row_lines(r, labels, scales)) for r in rows]


def _rgb(hex_colour: str) -> np.ndarray:
    h = hex_colour.lstrip("#")
    return np.array([int(h[k:k + 2], 16) for k in (0, 2, 4)], np.float32)


def thumbnail(pixels: np.ndarray, hot: list[np.ndarray], colour: str, box: dict[str, float] | None = None,
              size: int = THUMB_PX) -> str:
    """A PNG data URI of the film at ``size`` px with the ``hot`` masks (nested regions, any order) tinted in
    ``colour`` (``HOT_ALPHA`` per region covering a pixel: darker = hotter) and ``box`` outlined in yellow."""
    from PIL import Image

    g = np.asarray(Image.fromarray(np.asarray(pixels, np.uint8)).resize((size, size), Image.BILINEAR), np.float32)
    alpha = np.zeros((size, size), np.float32)
    for m in hot:
        small = np.asarray(Image.fromarray(np.asarray(m, np.uint8) * 255).resize((size, size), Image.NEAREST)) > 127
        alpha += HOT_ALPHA * small
    alpha = np.clip(alpha, 0, 0.85)[..., None]
    rgb = (1 - alpha) * g[..., None] + alpha * _rgb(colour)
    rgb = outlined(rgb.astype(np.uint8), box, tuple(int(v) for v in _rgb(BOX_COLOUR)), width=2)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _unique(labels: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for lab in labels:
        seen[lab] = seen.get(lab, 0) + 1
        out.append(lab if seen[lab] == 1 else f"{lab} ({seen[lab]})")
    return out


def _x_range(effs: list[fx.Effect]) -> list[float]:
    """The changes and bands with a margin, and at least ± ``SMALL_ON`` the scale: changes of a few
    thousandths then look as small as they are."""
    small = fx.SMALL_ON[effs[0].scale] if effs else fx.SMALL
    vals = [v for e in effs for v in (e.change, *(e.band or ()))] + [-small, small]
    lo, hi = min(vals), max(vals)
    pad = 0.08 * (hi - lo)
    return [lo - pad, hi + pad]


def figure(cls: str, rows: list[WhatIfRow], effects: dict[str, list[fx.Effect]], found: list[fx.Contradiction],
           pixels: np.ndarray, box: dict[str, float] | None = None, shown_anyway: bool = False) -> go.Figure:
    """THE chart: one column per backbone (its own scale: probability, or log-odds when saturated). On top
    its thumbnail (``thumbnail``: the hottest regions it hid, the user's box); under it per condition the
    grey random band (one bar per condition, legend group "random") and the change as a point in the
    backbone's colour (legend group = the backbone; filled when beyond the band), contradicting points
    ringed in black (legend group "contradiction"), a line at no change. ``shown_anyway``: the image failed
    the out-of-distribution check and the user asked to see it anyway: the chart says so in its corner."""
    archs = list(effects)
    n = max(1, len(archs))
    labels = _unique([condition_label(r) for r in rows])
    colours = backbone_colours(archs)
    top = 34 + (28 if shown_anyway else 0)  # the subplot titles (and the "shown at your request" line above)
    thumb, gap, chart, bottom = THUMB_PX, 56, ROW_PX * max(1, len(rows)) + 10, 96
    height = top + thumb + gap + chart + bottom
    fig = make_subplots(rows=2, cols=n, row_heights=[thumb, chart], vertical_spacing=gap / (height - top - bottom),
                        horizontal_spacing=0.08,
                        subplot_titles=[f"{arch_label(a)}: the regions it hid" for a in archs] + [""] * n)
    flagged = {(c.arch, c.inner): c for c in found}
    for k, a in enumerate(archs):
        col, effs = k + 1, effects[a]
        colour = colours[arch_label(a)]
        hot = [r.masks[a] for r in rows if r.kind == HIDE_HOT and a in r.masks]
        fig.add_trace(go.Image(source=thumbnail(pixels, hot, colour, box), hoverinfo="skip", name=arch_label(a)),
                      row=1, col=col)
        lo = [e.band[0] if e.band else None for e in effs]
        width = [e.band_width if e.band else None for e in effs]
        fig.add_trace(go.Bar(orientation="h", y=labels, x=width, base=lo, width=0.6, marker_color=BAND_COLOUR,
                             name=f"random regions of the same size ({BAND_NAME})", legendgroup="random",
                             showlegend=k == 0,
                             customdata=[[e.n_random, *(e.band or (np.nan, np.nan))] for e in effs],
                             hovertemplate="random regions of the same size: %{customdata[1]:+.2f} to "
                                           "%{customdata[2]:+.2f} (%{customdata[0]} draws)<extra></extra>"),
                      row=2, col=col)
        unit = "log-odds" if effs and effs[0].scale == fx.LOG_ODDS else "probability"
        fig.add_trace(go.Scatter(
            x=[e.change for e in effs], y=labels, mode="markers", name=arch_label(a), legendgroup=a,
            marker=dict(color=colour, size=13, line=dict(color=colour, width=2),
                        symbol=["circle" if e.clear else "circle-open" for e in effs]),
            customdata=[[e.before, e.after] for e in effs],
            hovertemplate=f"%{{y}}: {unit} %{{customdata[0]:.2f}} → %{{customdata[1]:.2f}} "
                          "(%{x:+.2f})<extra>" + arch_label(a) + "</extra>"), row=2, col=col)
        mine = [(i, flagged[(a, i)]) for i in range(len(rows)) if (a, i) in flagged]
        fig.add_trace(go.Scatter(
            x=[c.inner_effect.change for _, c in mine], y=[labels[i] for i, _ in mine], mode="markers",
            marker=dict(symbol="diamond-open", size=24, color=FLAG_COLOUR, line=dict(width=2, color=FLAG_COLOUR)),
            name="contradicts a bigger region", legendgroup="contradiction", showlegend=bool(found) and k == 0,
            hoverinfo="skip"), row=2, col=col)
        fig.add_vline(x=0, line=dict(color="#666666", width=1), row=2, col=col)
        title = f"change of the {cls} {unit}" + (" (saturated)" if unit == "log-odds" else "")
        fig.update_xaxes(title_text=title, zeroline=False, range=_x_range(effs), row=2, col=col)
        fig.update_yaxes(type="category", categoryorder="array", categoryarray=labels[::-1], row=2, col=col,
                         showticklabels=k == 0, matches=f"y{n + 1}" if k else None)  # row 2's first y axis
        fig.update_xaxes(visible=False, row=1, col=col)
        fig.update_yaxes(visible=False, scaleanchor=f"x{col if col > 1 else ''}", row=1, col=col)
    fig.update_layout(height=height, margin=dict(t=top, b=bottom, l=10, r=10), font=CHART_FONT, barmode="overlay",
                      plot_bgcolor="white", legend=dict(orientation="h", yref="container", y=0, yanchor="bottom",
                                                        x=0, xanchor="left"), hoverlabel=dict(align="left"))
    fig.update_xaxes(showgrid=True, gridcolor="#EEEEEE", row=2)
    if shown_anyway:  # like the stamped heat maps: a copied chart still says it is not a call
        fig.add_annotation(text=SHOWN_LABEL, xref="paper", yref="paper", x=0, y=1, xanchor="left", yanchor="bottom",
                           yshift=30, showarrow=False, font=dict(color="#666666"), bgcolor="#EEEEEE")
    return fig
