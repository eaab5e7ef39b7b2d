"""What the Diagnose page shows, without Streamlit: display-size films, heat maps on a chosen scale,
overlays as PNG, the out-of-distribution sentence and the one-page case report (PIL)."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np

from covidviz.cam import METHOD_NAMES, CamResult, overlay
from covidviz.inference import Diagnosis
from covidviz.views.style import NOTICE

# ---------------------------------------------------------------------- display helpers (no streamlit)

def display_image(gray: np.ndarray, max_side: int = 512) -> np.ndarray:
    """The film at most ``max_side`` px on its long side, aspect kept (for overlays and the report)."""
    from PIL import Image

    gray = np.asarray(gray, np.uint8)
    h, w = gray.shape
    f = max_side / max(h, w)
    if f >= 1:
        return gray
    img = Image.fromarray(gray, mode="L").resize((max(1, round(w * f)), max(1, round(h * f))), Image.BILINEAR)
    return np.asarray(img)


def heat_for_display(cam: CamResult, scale: float | None = None) -> np.ndarray:
    """[0, 1] map of the first image: per-image min-max (``scale`` None) or ``raw / scale`` clipped."""
    if scale is None:
        return cam.normalised[0]
    return np.clip(cam.raw[0] / max(scale, 1e-12), 0.0, 1.0)


def overlay_image(gray: np.ndarray, heat: np.ndarray, alpha: float = 0.4, colormap: str = "jet") -> np.ndarray:
    """RGB uint8 heat map over the film at display size (the film's own aspect: the model saw the
    whole image, squashed to a square, so the square map is stretched back)."""
    return overlay(display_image(gray), heat, alpha, colormap)


def overlay_png(gray: np.ndarray, heat: np.ndarray, alpha: float = 0.4, colormap: str = "jet") -> bytes:
    """PNG bytes of ``overlay_image`` (fast zlib level: 5x quicker than the default, still lossless)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(overlay_image(gray, heat, alpha, colormap)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def ood_message(diag: Diagnosis, labels=None) -> str | None:
    """One plain sentence per flagged backbone, or None when every backbone finds the image familiar."""
    flagged = [(a, b) for a, b in diag.backbones.items() if b.ood]
    if not flagged:
        return None
    parts = [f"{labels.get(a, a) if labels else a}: " + "; ".join(b.ood_reasons) for a, b in flagged]
    return ("This image is unlike the training X-rays (above the 99th percentile of the training images). "
            "It may be a photo, a lateral view, a CT slice or another modality; the results below are "
            "shown but should not be trusted. " + " · ".join(parts) + ".")


# ---------------------------------------------------------------------- the case report

def _font(size: int, bold: bool = False):
    from PIL import ImageFont

    for path in (f"/usr/share/fonts/truetype/dejavu/DejaVuSans{'-Bold' if bold else ''}.ttf",):
        if Path(path).exists():
            return ImageFont.truetype(path, size)
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # very old Pillow
        return ImageFont.load_default()


def case_report_png(diag: Diagnosis, gray: np.ndarray, heats: dict[str, np.ndarray], names: list[str],
                    arch_labels: dict[str, str] | None = None, method: str = "cam", extra: dict | None = None,
                    alpha: float = 0.4, explained: dict[str, str] | None = None) -> bytes:
    """A one-page PNG: the film, each backbone's heat map and probabilities with its call, the model
    and experiment identity, the out-of-distribution verdict and the research-use notice."""
    from PIL import Image, ImageDraw

    arch_labels = arch_labels or {}
    archs = list(diag.backbones)
    tile = 360
    margin = 30
    cols = 1 + len(archs)
    width = margin * 2 + cols * tile + (cols - 1) * 20
    n_rows_text = len(names) + 4
    height = 170 + tile + 60 + n_rows_text * 26 + 150 + (26 * 3 if diag.ood else 0)
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    title, small, bold = _font(26, True), _font(16), _font(17, True)
    d.text((margin, 20), "covidviz case report", fill="#1F2A36", font=title)
    when = time.strftime("%Y-%m-%d %H:%M %Z")
    d.text((margin, 60), f"Image: {diag.name}    Experiment: {diag.experiment}    Generated: {when}",
           fill="#333", font=small)
    ident = "    ".join(f"{arch_labels.get(a, a)}: {v}" for a, v in (extra or {}).items())
    if ident:
        d.text((margin, 84), ident, fill="#333", font=small)
    target = "each model's top class" if not explained else "the class named above each map"
    d.text((margin, 108), f"Heat maps: {METHOD_NAMES.get(method, method)}, explaining {target}",
           fill="#333", font=small)

    def paste(rgb_or_gray, x, label):
        im = Image.fromarray(rgb_or_gray)
        f = tile / max(im.size)
        im = im.resize((max(1, round(im.width * f)), max(1, round(im.height * f))), Image.BILINEAR)
        img.paste(im, (x + (tile - im.width) // 2, 170 + (tile - im.height) // 2))
        d.text((x, 140), label, fill="#1F2A36", font=bold)

    film = display_image(gray)
    paste(film, margin, "X-ray (as given to the models)")
    for i, arch in enumerate(archs):
        x = margin + (i + 1) * (tile + 20)
        b = diag.backbones[arch]
        cls = (explained or {}).get(arch, names[b.top])
        paste(overlay(film, heats[arch], alpha), x, f"{arch_labels.get(arch, arch)}: map for {cls}")

    y = 170 + tile + 30
    d.text((margin, y), "Class", fill="#1F2A36", font=bold)
    for i, arch in enumerate(archs):
        d.text((margin + 260 + i * 330, y), f"{arch_labels.get(arch, arch)} (calibrated p, call)",
               fill="#1F2A36", font=bold)
    y += 28
    for j, cls in enumerate(names):
        d.text((margin, y), cls, fill="#222", font=small)
        for i, arch in enumerate(archs):
            c = diag.backbones[arch].calls[j]
            call = "no threshold" if c["positive"] is None else ("POSITIVE" if c["positive"] else "negative")
            d.text((margin + 260 + i * 330, y), f"{c['prob']:.3f}   {call}", fill="#222", font=small)
        y += 26
    y += 6
    d.text((margin, y), "Calls: the model's score against the validation-chosen (Youden) threshold of each class.",
           fill="#555", font=small)
    y += 30
    if diag.ood:
        msg = ood_message(diag, arch_labels) or ""
        for line in _wrap(msg, 120)[:3]:
            d.text((margin, y), line, fill="#B00020", font=small)
            y += 26
    d.rectangle((margin, y, width - margin, y + 80), outline="#B00020", width=3, fill="#FFF4F4")
    for k, line in enumerate(_wrap(NOTICE, 105)[:3]):
        d.text((margin + 12, y + 10 + k * 22), line, fill="#B00020", font=bold if k == 0 else small)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width)
