"""The Diagnose page's one-page case report, without Streamlit: what it says (``report_blocks``: the
image's identity, the film and heat maps (with the lung outline) and each map's evidence on the lungs, the
out-of-distribution verdict, the calls at the chosen operating point with what the model knows about each
class (test AUC with its CI, sensitivity and specificity, indeterminate / not reliable readings, the
shortcut audit's findings, a weak experiment's banner), the research-use notice) and the PNG it is drawn
as (``case_report_png``, PIL), from one ``CaseReport``. Withheld calls are not printed and no class is
named; calls shown at the user's request are said to be so, greyed, and their maps stamped. The page's
own texts and the out-of-distribution sentences it shares with the report are ``covidviz.views.diagnose``'s;
the calls' sentences are ``views.diagnose_calls``', what the model knows ``views.reliability``'s. Facts the
other pages state too (where the image falls on the SOM, thresholds with their scale, the verdict and its
yardstick) go through ``views.formats``, so the report reads like the pages."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from covidviz.cam import METHOD_NAMES, OVERLAY_ALPHA, lungshare, overlay
from covidviz.cam.lungshare import LungWeight
from covidviz.data.labels import MULTICLASS
from covidviz.inference import Diagnosis
from covidviz.views import diagnose_calls as dc
from covidviz.views import reliability as rel
from covidviz.views.diagnose import (
    REPORT_RESULTS,
    REPORT_SECTIONS,
    REPORT_SHOWN_ANYWAY,
    REPORT_WITHHELD,
    display_image,
    lung_text,
    ood_message,
    stamp,
)
from covidviz.views.formats import ood_detail, ood_summary, ood_yardstick, qe_detail, som_node_text
from covidviz.views.style import NOTICE, NOTICE_TITLE, arch_label

REPORT_NOTE = ("Image, heat maps, probabilities and calls at the chosen operating point, model and experiment identity, "
               "the research-use notice.")
REPORT_TILE, REPORT_MARGIN, REPORT_GAP, REPORT_LINE = 360, 30, 20, 24
# The calls table, one per backbone (px per column, in ``dc.calls_table``'s order, the probability's and
# threshold's headers naming their scale; the shortcut audit's column takes what is left).
REPORT_WIDTHS = (200, 115, 115, 115, 170, 70, 70)
REPORT_SHORT = {"Sensitivity": "Sens.", "Specificity": "Spec."}
REPORT_AUDIT = "Shortcut audit"
WITHHELD_TILE = (236, 236, 236)  # the grey of a heat map's place when the calls are withheld
FONTS = {"title": (26, True), "text": (16, False), "note": (16, False), "warning": (16, False),
         "heading": (20, True), "bold": (17, True), "notice": (16, False)}   # block kind -> (size, bold)
COLOURS = {"title": "#1F2A36", "text": "#222", "note": "#555", "warning": "#B00020", "heading": "#1F2A36",
           "bold": "#1F2A36", "notice": "#B00020"}


@dataclass(frozen=True)
class CaseReport:
    """What one case report states: the prediction (``diag``) with the experiment's class ``names`` and
    ``task``; how the backbones are named (``arch_labels``) and described (``identity``: backbone -> a
    line such as ``report_identity`` gives); the heat maps' ``method`` and the class each explains
    (``explained``: backbone -> class name; None: each model's top class); the calls (``calls``:
    backbone -> ``Predictor.calls`` at ``point``; None: the prediction's own, balanced); whether an
    out-of-distribution image's calls are reported anyway (``show_anyway``, then marked unreliable);
    each drawn map's weight on the lungs (``lung_weights``: backbone -> ``LungWeight``, None when the lung
    fields were not usable; a backbone left out has no map drawn; None: the prediction's own, top class);
    the shortcut audit's ``findings``, the ``weak`` experiment's banner and each backbone's SOM grid
    (``som_grids``: backbone -> (columns, rows), ``Predictor.som_grid``; where the image falls on the SOM
    is reported, as the SOM page names it, for the backbones given)."""

    diag: Diagnosis
    names: list[str]
    task: str = MULTICLASS
    arch_labels: dict[str, str] | None = None
    identity: dict[str, str] | None = None
    method: str = "cam"
    explained: dict[str, str] | None = None
    calls: dict[str, list[dict]] | None = None
    point: str = "youden"
    show_anyway: bool = False
    lung_weights: dict[str, LungWeight | None] | None = None
    findings: dict | None = None   # (backbone, class) -> reliability.ShortcutFinding: the shortcut audit's
    weak: str | None = None        # the weak-experiment banner (reliability.low_auc_banner), or None
    som_grids: dict | None = None  # backbone -> its SOM's (columns, rows)

    @property
    def withheld(self) -> bool:
        """The image failed the out-of-distribution check and the user did not ask to see the calls."""
        return self.diag.ood and not self.show_anyway

    def label(self, arch: str) -> str:
        return (self.arch_labels or {}).get(arch) or arch_label(arch)


# ---------------------------------------------------------------------- text

def _font(size: int, bold: bool = False):
    from PIL import ImageFont

    for path in (f"/usr/share/fonts/truetype/dejavu/DejaVuSans{'-Bold' if bold else ''}.ttf",):
        if Path(path).exists():
            return ImageFont.truetype(path, size)
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # very old Pillow
        return ImageFont.load_default()


def wrap_px(text: str, font, width: float) -> list[str]:
    """``text`` as lines no wider than ``width`` pixels in ``font``, broken between words; a single word
    wider than a line (a long file name) is broken between characters. Nothing is dropped: the lines'
    words are the text's words, in order."""
    def fits(t: str) -> bool:
        return font.getlength(t) <= width

    lines, cur = [], ""
    for word in text.split():
        trial = f"{cur} {word}" if cur else word
        if fits(trial):
            cur = trial
            continue
        if cur:
            lines.append(cur)
        cur = word
        while len(cur) > 1 and not fits(cur):
            k = len(cur) - 1
            while k > 1 and not fits(cur[:k]):
                k -= 1
            lines.append(cur[:k])
            cur = cur[k:]
    if cur:
        lines.append(cur)
    return lines


def report_identity(exp, archs) -> dict[str, str]:
    """Per backbone, the line the case report prints: initial weights, best epoch, image size."""
    out = {}
    for a in archs:
        rec = exp.record(a)
        out[a] = (f"initial weights {rec.init.get('source') or 'unknown'}, best epoch {rec.get('best_epoch', '?')}, "
                  f"{exp.preprocessing.image_size} px")
    return out


# ---------------------------------------------------------------------- what the report says

def _plain(markdown: str) -> str:
    """Markdown of the page as plain report text (bold, italics, links and glossary links dropped)."""
    import re

    text = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", markdown)
    return text.replace("**", "").replace("*", "")


def _calls_table(report: CaseReport, arch: str, calls: list[dict]) -> dict:
    """One backbone's calls as a report table: ``{"title", "columns": [(name, px)], "rows", "greyed"}``."""
    d = dc.decimals(calls)  # enough that no call contradicts its printed numbers
    table = dc.calls_table(calls, report.findings, arch)
    audit = dc.AUDIT_COLUMN in table.columns
    rows = []
    for r in table.itertuples(index=False):
        row = [r[0], f"{r[1]:.{d}f}", "—" if r[2] != r[2] else f"{r[2]:.{d}f}", *map(str, r[3:7])]
        rows.append(row + ([str(r[7])] if audit else []))
    columns = [(REPORT_SHORT.get(name, name), w) for name, w in zip(table.columns[:7], REPORT_WIDTHS)]
    columns += [(REPORT_AUDIT, 0)] if audit else []
    return {"title": report.label(arch), "columns": columns, "rows": rows, "greyed": report.diag.ood}


def som_lines(report: CaseReport) -> list[str]:
    """Per backbone with a SOM: where the image falls on it, as the SOM page names it, and its quantisation
    error against the training images' as a detail of the verdict above (not a second test)."""
    out = []
    for arch, b in report.diag.backbones.items():
        grid = (report.som_grids or {}).get(arch)
        if b.som_node is None or not grid:
            continue
        line = f"{report.label(arch)}: SOM {som_node_text(b.som_node, grid)}."
        if b.som_qe is not None and b.som_qe_pct is not None:
            line += f" {ood_detail(qe_detail(b.som_qe, b.som_qe_pct))}"
        out.append(line)
    return out


def report_blocks(report: CaseReport) -> list[tuple[str, object]]:
    """What the case report says, in order, as ``(kind, payload)`` blocks: ``title``, ``text``, ``note``
    (grey), ``heading`` (a section, named in ``REPORT_SECTIONS``), ``bold``, ``images`` (the tiles),
    ``warning`` (red), ``table`` (``_calls_table``: one per backbone) and ``notice`` (the boxed
    research-use notice). An out-of-distribution image's calls are withheld, and no class named, unless
    ``report.show_anyway`` (then said to be shown at the user's request, greyed)."""
    diag, method, point, task = report.diag, report.method, report.point, report.task
    calls = report.calls or {a: b.calls for a, b in diag.backbones.items()}
    when = time.strftime("%Y-%m-%d %H:%M %Z")
    blocks: list[tuple[str, object]] = [
        ("title", "covidviz case report"),
        ("text", f"Image: {diag.name} · Experiment: {diag.experiment} · Generated: {when}")]
    blocks += [("text", f"{report.label(a)}: {v}.") for a, v in (report.identity or {}).items()]
    target = "each model's top class" if not report.explained else "the class named above each map"
    if report.withheld:
        images = "The X-ray as given to the models; the heat maps are withheld with the calls."
    else:
        images = (f"The X-ray as given to the models, and each model's heat map: {METHOD_NAMES.get(method, method)}, "
                  f"explaining {target}." + (" Shown at the user's request, not as calls." if diag.ood else ""))
    blocks += [("heading", REPORT_SECTIONS[0]), ("note", images), ("images", None)]
    weights = {} if report.withheld else report.lung_weights if report.lung_weights is not None else {
        a: b.lung_weight for a, b in diag.backbones.items()}
    blocks += [("text", f"{report.label(a)}: {lung_text(weights[a], diag.lungs, diag.view).replace('**', '')}")
               for a in diag.backbones if a in weights]
    message = ood_message(diag, report.arch_labels or {}, REPORT_RESULTS, shown_anyway=report.show_anyway)
    if message:
        blocks += [("heading", REPORT_SECTIONS[1]), ("warning", message)]
    elif diag.verdict is not None:
        blocks += [("heading", REPORT_SECTIONS[1]), ("text", ood_summary(diag.verdict))]
    if diag.verdict is not None and (rule := ood_yardstick(diag.verdict)):
        blocks.append(("note", rule))  # THE yardstick, as the pages cite it
    if not report.withheld:  # placements are withheld with the calls, as on the page
        blocks += [("text", line) for line in som_lines(report)]
    if report.withheld:
        blocks += [("heading", REPORT_SECTIONS[2]), ("warning", REPORT_WITHHELD), ("notice", f"{NOTICE_TITLE} {NOTICE}")]
        return blocks
    blocks.append(("heading", REPORT_SECTIONS[2]))
    if diag.ood:
        blocks.append(("warning", REPORT_SHOWN_ANYWAY))
    if report.weak:
        blocks.append(("warning", _plain(report.weak)))
    blocks += [("note", f"{dc.SCREENING_TITLE}: {dc.point_label(point)}. A call is Positive when the calibrated "
                        "probability reaches the class's threshold, chosen on validation and put on the same scale; "
                        f"it reads indeterminate within ±{rel.BAND:.2f} of the threshold and not reliable where the "
                        "class's test AUC interval is not clearly above 0.5. Each class is screened on its own, one against the "
                        "rest. Sens. and Spec.: the threshold's sensitivity and specificity on the test images.")]
    for arch, b in diag.backbones.items():
        blocks.append(("bold", report.label(arch)))
        blocks.append(("text", dc.headline(calls[arch], b.top, task).replace("**", "") + "."))
        sentence = dc.screening_sentence(calls[arch], b.top, task, point)
        if sentence:
            blocks.append(("text", sentence))
        blocks.append(("table", _calls_table(report, arch, calls[arch])))
        if raw := dc.raw_thresholds_line(calls[arch]):
            blocks.append(("note", raw))
        blocks += [("warning", rel.shortcut_sentence(f)) for (a, _), f in (report.findings or {}).items() if a == arch]
    blocks.append(("notice", f"{NOTICE_TITLE} {NOTICE}"))
    return blocks


# ---------------------------------------------------------------------- the page

def _tiles(report: CaseReport, gray: np.ndarray, heats: dict, alpha: float,
           lungs: np.ndarray | None = None) -> list[tuple[str, np.ndarray]]:
    """(caption, RGB or gray array): the film, then each backbone's heat map over it (the plain film
    when a backbone has no evidence for its class; a grey tile naming no class when the calls are
    withheld; stamped when shown at the user's request); the outline of the lung mask ``lungs`` on each."""
    diag = report.diag
    film = display_image(gray)

    def outlined(img: np.ndarray) -> np.ndarray:
        return img if lungs is None else lungshare.draw_outline(img, lungs)

    tiles = [("X-ray (as given to the models)" + (", lung fields outlined" if lungs is not None else ""), outlined(film))]
    for a in diag.backbones:
        if report.withheld:
            tiles.append((f"{report.label(a)}: heat map withheld", np.full((*film.shape[:2], 3), WITHHELD_TILE, np.uint8)))
            continue
        cls = (report.explained or {}).get(a, report.names[diag.backbones[a].top])
        none = heats.get(a) is None
        img = outlined(np.repeat(film[..., None], 3, axis=2) if none else overlay(film, heats[a], alpha))
        tiles.append((f"{report.label(a)}: map for {cls}" + (" (no evidence: no heat drawn)" if none else "")
                      + (", shown at the user's request" if diag.ood else ""), stamp(img) if diag.ood else img))
    return tiles


class _Page:
    """Lays the blocks out on a page as wide as the tiles (one per column): ``render(None)`` measures the
    height they need, ``render(img)`` draws them."""

    def __init__(self, blocks: list[tuple[str, object]], tiles: list[tuple[str, np.ndarray]]):
        self.blocks, self.tiles = blocks, tiles
        self.width = REPORT_MARGIN * 2 + len(tiles) * REPORT_TILE + (len(tiles) - 1) * REPORT_GAP
        self.text_width = self.width - 2 * REPORT_MARGIN
        self.fonts = {kind: _font(size, bold) for kind, (size, bold) in FONTS.items()}
        self.tile_labels = [wrap_px(t, self.fonts["bold"], REPORT_TILE) for t, _ in tiles]
        self.img = self.draw = None

    def _lines(self, x: int, y: int, lines: list[str], kind: str) -> None:
        if self.draw is not None:
            for k, line in enumerate(lines):
                self.draw.text((x, y + k * REPORT_LINE), line, fill=COLOURS[kind], font=self.fonts[kind])

    def _images(self, y: int) -> int:
        from PIL import Image

        top = y + max(len(t) for t in self.tile_labels) * REPORT_LINE + 6
        for i, ((_, arr), lines) in enumerate(zip(self.tiles, self.tile_labels)):
            x = REPORT_MARGIN + i * (REPORT_TILE + REPORT_GAP)
            self._lines(x, y, lines, "bold")
            if self.img is not None:
                im = Image.fromarray(arr)
                f = REPORT_TILE / max(im.size)
                im = im.resize((max(1, round(im.width * f)), max(1, round(im.height * f))), Image.BILINEAR)
                self.img.paste(im, (x + (REPORT_TILE - im.width) // 2, top + (REPORT_TILE - im.height) // 2))
        return top + REPORT_TILE + 14

    def _table(self, y: int, payload: dict) -> int:
        """A table as wide as the text: its columns' widths, the last one (0) taking what is left; every
        cell wrapped, never cut; grey when ``payload["greyed"]`` (shown at the user's request)."""
        widths = [w for _, w in payload["columns"]]
        if widths and widths[-1] == 0:
            widths[-1] = max(80, self.text_width - sum(widths[:-1]))
        scale = min(1.0, self.text_width / max(sum(widths), 1))  # fewer backbones' tiles: a narrower page
        widths = [int(w * scale) for w in widths]
        xs = [REPORT_MARGIN + int(sum(widths[:k])) for k in range(len(widths))]
        body = "note" if payload.get("greyed") else "text"
        for r, row in enumerate([[name for name, _ in payload["columns"]]] + payload["rows"]):
            kind = "bold" if r == 0 else body
            cells = [wrap_px(str(cell), self.fonts[kind], w - 8) for cell, w in zip(row, widths)]
            for x, lines in zip(xs, cells):
                self._lines(x, y, lines, kind)
            y += max(len(c) for c in cells) * REPORT_LINE + (6 if r == 0 else 2)
        return y + 14

    def _notice(self, y: int, text: str) -> int:
        lines = wrap_px(text, self.fonts["notice"], self.text_width - 24)
        box = len(lines) * REPORT_LINE + 20
        if self.draw is not None:
            self.draw.rectangle((REPORT_MARGIN, y, self.width - REPORT_MARGIN, y + box), outline="#B00020", width=3,
                                fill="#FFF4F4")
        self._lines(REPORT_MARGIN + 12, y + 10, lines, "notice")
        return y + box + 20

    def _paragraph(self, y: int, kind: str, text: str) -> int:
        if kind == "heading":
            y += 8
        step = {"title": 38, "heading": 30}.get(kind, REPORT_LINE)
        for line in wrap_px(text, self.fonts[kind], self.text_width):
            if self.draw is not None:
                self.draw.text((REPORT_MARGIN, y), line, fill=COLOURS[kind], font=self.fonts[kind])
            y += step
        return y + 4

    def render(self, img=None) -> int:
        """Draw the blocks on ``img`` (None: only measure); returns the height used."""
        from PIL import ImageDraw

        self.img, self.draw = img, (None if img is None else ImageDraw.Draw(img))
        y = 20
        for kind, payload in self.blocks:
            if kind == "images":
                y = self._images(y)
            elif kind == "table":
                y = self._table(y, payload)
            elif kind == "notice":
                y = self._notice(y, payload)
            else:
                y = self._paragraph(y, kind, str(payload))
        return y


def case_report_png(report: CaseReport, gray: np.ndarray, heats: dict[str, np.ndarray | None],
                    alpha: float = OVERLAY_ALPHA, lungs: np.ndarray | None = None) -> bytes:
    """A one-page PNG of ``report_blocks(report)``: every sentence wrapped to the page (never cut), the
    page as tall as its text needs, the film ``gray`` and each backbone's heat map (``heats``: backbone ->
    a [0, 1] map, or None when it has no evidence) over it, side by side, with the outline of the lung
    mask ``lungs`` (at ``gray``'s size or any other; None: no outline) on each."""
    from PIL import Image

    page = _Page(report_blocks(report), _tiles(report, gray, heats or {}, alpha, lungs))
    img = Image.new("RGB", (page.width, page.render(None)), "white")
    page.render(img)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
