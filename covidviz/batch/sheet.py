"""The contact sheet of a batch: a selection of scored rows drawn as one PNG, per image the film and each
backbone's CAM overlay for its top class, captioned with the file name and each backbone's top class.

An out-of-distribution row is withheld as on the Diagnose page: its tile shows the film, grey panels
stamped "withheld" instead of heat maps, and names no class."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

from covidviz.batch.scoring import BackboneScore, ScoredImage
from covidviz.cam import DEFAULT_COLORMAP, OVERLAY_ALPHA, overlay, resize_map


def cam_heat(score: BackboneScore, size: int) -> np.ndarray:
    """A [0, 1] heat map at ``size`` px from a row's stored CAM: rectified, upsampled, min-max
    normalised per image (what ``CamResult.normalised`` holds for the same pass)."""
    heat = resize_map(np.maximum(score.cam, 0.0), (size, size))
    lo, hi = float(heat.min()), float(heat.max())
    return (heat - lo) / (hi - lo) if hi > lo else np.zeros_like(heat)


def _fit_text(draw, text: str, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength("…" + text, font=font) > width:
        text = text[1:]
    return "…" + text  # keep the end of a long path: the file name


WITHHELD = "withheld"
WITHHELD_GREY = (225, 225, 225)


def contact_sheet(rows: Sequence[ScoredImage], names: Sequence[str], archs: Sequence[str] | None = None,
                  columns: int = 3, tile: int = 160, colormap: str = DEFAULT_COLORMAP, alpha: float = OVERLAY_ALPHA,
                  labels: Sequence[str] | None = None, captions: Sequence[Sequence[str]] | None = None):
    """A PIL RGB image: one tile per row (the film, then each backbone's CAM overlay for its top class),
    captioned with the file name (``labels``: one per row; default the rows' names) and each backbone's
    top class, probability and call (``captions``: per row one line per backbone instead, e.g. the call
    as the Batch page reads it). An out-of-distribution row: the film, grey "withheld" panels, no class
    named."""
    from PIL import Image, ImageDraw, ImageFont

    if not rows:
        raise ValueError("no images to draw")
    archs = list(archs or rows[0].backbones)
    font = ImageFont.load_default(size=12)
    line = 15
    caption = line * (1 + len(archs)) + 4
    tw, th = tile * (1 + len(archs)), tile + caption
    columns = max(1, min(int(columns), len(rows)))
    n_rows = -(-len(rows) // columns)
    pad = 6
    sheet = Image.new("RGB", (columns * (tw + pad) + pad, n_rows * (th + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, row in enumerate(rows):
        x0, y0 = pad + (k % columns) * (tw + pad), pad + (k // columns) * (th + pad)
        film = np.asarray(Image.fromarray(row.pixels).resize((tile, tile), Image.BILINEAR))
        sheet.paste(Image.fromarray(film).convert("RGB"), (x0, y0))
        for j, arch in enumerate(archs):
            x = x0 + (j + 1) * tile
            if row.ood:
                draw.rectangle([x, y0, x + tile - 1, y0 + tile - 1], fill=WITHHELD_GREY)
                w = draw.textlength(WITHHELD, font=font)
                draw.text((x + (tile - w) / 2, y0 + tile / 2 - 6), WITHHELD, fill=(110, 110, 110), font=font)
                continue
            heat = cam_heat(row.backbones[arch], tile)
            sheet.paste(Image.fromarray(overlay(film, heat, alpha, colormap)), (x, y0))
        y = y0 + tile + 2
        title = (row.name if labels is None else labels[k]) + ("  [out of distribution]" if row.ood else "")
        draw.text((x0 + 2, y), _fit_text(draw, title, font, tw - 4), fill=(200, 0, 0) if row.ood else (0, 0, 0), font=font)
        for j, arch in enumerate(archs):
            if row.ood:
                text = f"{arch}: {WITHHELD} (see the verdict)"
                draw.text((x0 + 2, y + line * (j + 1)), _fit_text(draw, text, font, tw - 4), fill=(120, 120, 120), font=font)
                continue
            b = row.backbones[arch]
            call = b.calls[b.top]
            mark = "" if call is None else (" (call +)" if call else " (call -)")
            text = captions[k][j] if captions is not None else f"{arch}: {names[b.top]} {b.probs[b.top]:.2f}{mark}"
            draw.text((x0 + 2, y + line * (j + 1)), _fit_text(draw, text, font, tw - 4), fill=(40, 40, 40), font=font)
    return sheet


def contact_sheet_png(rows: Sequence[ScoredImage], names: Sequence[str], **kwargs) -> bytes:
    """``contact_sheet`` encoded as PNG bytes (for a download button or a file)."""
    buf = io.BytesIO()
    contact_sheet(rows, names, **kwargs).save(buf, format="PNG")
    return buf.getvalue()
