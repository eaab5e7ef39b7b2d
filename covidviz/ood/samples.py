"""Procedural NON-radiographs for tests and benches: colour photos, screenshots of text, scanned
documents, CT-like slices and grayscale photos. No downloads; every image comes from a seed.

Each generator returns a ``uint8`` array, (H, W, 3) RGB or (H, W) gray, and ``encode`` turns it into
the bytes a user would upload (PNG for screenshots, JPEG for photos and scans), so tests and
``bench/ood.py`` go through ``covidviz.data.imageio.decode_upload`` exactly as the app does.

The images are varied on purpose (sizes, aspect ratios, light and dark themes, tinted or white paper,
rotation, blur, noise), but they are still our own drawings: a gate tuned on them alone would be
tuned to the generator. The gate's thresholds were set from the real X-rays' statistics (how far a
radiograph goes), not from these images.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

KINDS = ("photo", "screenshot", "document", "ct", "gray_photo")

_WORDS = ("patient", "report", "lorem", "ipsum", "dolor", "sit", "amet", "the", "of", "and", "chest",
          "result", "normal", "findings", "impression", "study", "date", "name", "total", "value",
          "invoice", "meeting", "agenda", "project", "page", "section", "table", "figure", "see", "above")


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        return ImageFont.load_default()


def _sentence(rng: np.random.Generator, n_words: int) -> str:
    return " ".join(_WORDS[i] for i in rng.integers(0, len(_WORDS), n_words))


def _size(rng: np.random.Generator, choices) -> tuple[int, int]:
    w, h = choices[int(rng.integers(0, len(choices)))]
    return int(w), int(h)


def colour_photo(seed: int) -> np.ndarray:
    """A landscape/still-life photo: sky gradient, ground, coloured blobs, texture, blur, noise."""
    rng = np.random.default_rng([seed, 11])
    w, h = _size(rng, [(640, 480), (480, 640), (800, 600), (512, 512), (720, 405)])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    horizon = h * rng.uniform(0.35, 0.7)
    sky_top, sky_bottom = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    ground = rng.uniform(0, 255, 3)
    t = np.clip(yy / max(horizon, 1), 0, 1)[..., None]
    img = (1 - t) * sky_top + t * sky_bottom
    below = (yy > horizon + 10 * np.sin(xx / rng.uniform(20, 80)))[..., None]
    tex = rng.normal(0, 1, (h // 8 + 1, w // 8 + 1)).astype(np.float32)
    tex = np.kron(tex, np.ones((8, 8), np.float32))[:h, :w][..., None]
    img = np.where(below, ground + 25 * tex, img)
    for _ in range(int(rng.integers(3, 9))):  # objects: ellipses of saturated colours
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        rx, ry = rng.uniform(0.04, 0.25) * w, rng.uniform(0.04, 0.25) * h
        inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1
        hue = rng.uniform(0, 255, 3)
        hue[int(rng.integers(0, 3))] *= 0.2  # keep each object clearly coloured
        shade = 0.7 + 0.3 * np.clip(1 - (yy - cy) / ry, 0, 2)[..., None] / 2
        img = np.where(inside[..., None], hue * shade, img)
    img = img + rng.normal(0, 4, img.shape)
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    return np.asarray(out.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0))))


def gray_photo(seed: int) -> np.ndarray:
    """A colour photo converted to grayscale (a black-and-white picture): no colour cue at all."""
    return np.asarray(Image.fromarray(colour_photo(seed + 7919)).convert("L"))


def screenshot(seed: int) -> np.ndarray:
    """A screenshot of a text window: flat background, title and side bars, lines of text, a button."""
    rng = np.random.default_rng([seed, 12])
    w, h = _size(rng, [(1280, 720), (1024, 768), (800, 600), (1366, 768), (900, 900), (1440, 900)])
    dark = rng.random() < 0.3
    bg = (30, 30, 34) if dark else tuple(int(v) for v in rng.integers(235, 256, 3))
    fg = (220, 220, 220) if dark else (20, 20, 20)
    img = Image.new("RGB", (w, h), bg)
    d = ImageDraw.Draw(img)
    bar = tuple(int(v) for v in rng.integers(0, 256, 3)) if rng.random() < 0.7 else (200, 200, 200)
    bar_h = int(rng.integers(24, 60))
    d.rectangle([0, 0, w, bar_h], fill=bar)
    d.text((12, bar_h // 4), _sentence(rng, 3).title(), fill=(255, 255, 255), font=_font(int(bar_h * 0.5)))
    side = int(rng.integers(0, w // 4)) if rng.random() < 0.6 else 0
    if side:
        d.rectangle([0, bar_h, side, h], fill=tuple(int(v * 0.9) for v in bg))
        for i, y in enumerate(range(bar_h + 20, h - 20, 32)):
            if i > 12:
                break
            d.text((10, y), _sentence(rng, 2), fill=fg, font=_font(14))
    size = int(rng.integers(12, 22))
    y = bar_h + 20
    while y < h - size * 2:
        if rng.random() < 0.15:
            y += size  # paragraph break
            continue
        d.text((side + 20, y), _sentence(rng, int(rng.integers(4, 14))), fill=fg, font=_font(size))
        y += int(size * 1.5)
    if rng.random() < 0.5:
        bx, by = int(w * 0.7), int(h * 0.85)
        d.rectangle([bx, by, bx + 120, by + 36], fill=(0, 110, 220), outline=(0, 60, 160))
        d.text((bx + 20, by + 8), "OK", fill=(255, 255, 255), font=_font(16))
    arr = np.asarray(img)
    return np.asarray(img.convert("L")) if rng.random() < 0.25 else arr


def document_scan(seed: int) -> np.ndarray:
    """A scanned page: paper (white or tinted) with margins, text lines, a table or a form, slight
    rotation, blur, scanner noise and a darker scan-bed edge."""
    rng = np.random.default_rng([seed, 13])
    w = int(rng.integers(600, 1100))
    h = int(w * rng.choice([1.414, 1.294, 1.3]))  # A4, letter, a bit cropped
    paper = np.array([rng.uniform(225, 255)] * 3) + (rng.uniform(-15, 0, 3) if rng.random() < 0.4 else 0)
    img = Image.new("RGB", (w, h), tuple(int(v) for v in paper))
    d = ImageDraw.Draw(img)
    ink = tuple(int(v) for v in rng.integers(0, 70, 3))
    margin = int(w * rng.uniform(0.07, 0.14))
    size = int(rng.integers(11, 20))
    y = margin
    d.text((margin, y), _sentence(rng, 4).upper(), fill=ink, font=_font(int(size * 1.6)))
    y += int(size * 3)
    while y < h - margin:
        r = rng.random()
        if r < 0.08:  # a table
            rows, cols = int(rng.integers(3, 7)), int(rng.integers(2, 5))
            cw, rh = (w - 2 * margin) // cols, int(size * 1.8)
            for i in range(rows + 1):
                d.line([margin, y + i * rh, margin + cols * cw, y + i * rh], fill=ink, width=1)
            for j in range(cols + 1):
                d.line([margin + j * cw, y, margin + j * cw, y + rows * rh], fill=ink, width=1)
            for i in range(rows):
                for j in range(cols):
                    d.text((margin + j * cw + 4, y + i * rh + 3), _sentence(rng, 1), fill=ink, font=_font(size))
            y += rows * rh + size * 2
            continue
        if r < 0.2:
            y += size
            continue
        words = int(rng.integers(6, 16))
        d.text((margin, y), _sentence(rng, words), fill=ink, font=_font(size))
        y += int(size * 1.45)
    img = img.rotate(float(rng.uniform(-2.5, 2.5)), resample=Image.BILINEAR, expand=False,
                     fillcolor=tuple(int(v) for v in rng.integers(40, 120, 3)))
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    arr = np.asarray(img).astype(np.float32) + rng.normal(0, rng.uniform(1, 5), (h, w, 1))
    arr = np.clip(arr, 0, 255).astype(np.uint8)
    return arr[..., 0] if rng.random() < 0.5 else arr  # half scanned in grayscale


def ct_slice(seed: int) -> np.ndarray:
    """An axial CT-like slice of the chest: a round body on black, fat ring, two dark lungs with
    vessels, a bright vertebra and sternum, a heart; grayscale, square, soft noise."""
    rng = np.random.default_rng([seed, 14])
    n = int(rng.choice([256, 384, 512]))
    yy, xx = (np.mgrid[0:n, 0:n].astype(np.float32) / n) * 2 - 1
    img = np.zeros((n, n), np.float32)  # air outside the body
    ax, ay = rng.uniform(0.75, 0.92), rng.uniform(0.55, 0.75)
    body = (xx / ax) ** 2 + (yy / ay) ** 2 < 1
    img[body] = 0.55
    inner = (xx / (ax - 0.06)) ** 2 + (yy / (ay - 0.06)) ** 2 < 1
    img[body & ~inner] = 0.45  # subcutaneous fat
    for side in (-1, 1):
        cx = side * rng.uniform(0.33, 0.45)
        lung = ((xx - cx) / rng.uniform(0.25, 0.33)) ** 2 + ((yy + 0.02) / rng.uniform(0.38, 0.48)) ** 2 < 1
        img[lung] = 0.06
        for _ in range(int(rng.integers(15, 40))):  # vessels
            vx, vy = cx + rng.uniform(-0.25, 0.25), rng.uniform(-0.4, 0.4)
            img[lung & ((xx - vx) ** 2 + (yy - vy) ** 2 < rng.uniform(0.0001, 0.0006))] = 0.5
    heart = ((xx - 0.08) / 0.24) ** 2 + ((yy + 0.1) / 0.22) ** 2 < 1
    img[heart] = 0.6
    vert = (xx / 0.11) ** 2 + ((yy - 0.45) / 0.1) ** 2 < 1
    img[vert] = 0.95
    img[(xx / 0.05) ** 2 + ((yy - 0.45) / 0.04) ** 2 < 1] = 0.7
    img[(xx / 0.06) ** 2 + ((yy + ay - 0.08) / 0.03) ** 2 < 1] = 0.9  # sternum
    img[(xx / 0.035) ** 2 + ((yy - 0.28) / 0.035) ** 2 < 1] = 0.05  # oesophagus air
    img = img + rng.normal(0, 0.03, img.shape) * body
    out = Image.fromarray(np.clip(img * 255, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.8))
    return np.asarray(out)


GENERATORS = {"photo": colour_photo, "screenshot": screenshot, "document": document_scan, "ct": ct_slice,
              "gray_photo": gray_photo}
# What a user would save each kind as.
FORMATS = {"photo": "JPEG", "screenshot": "PNG", "document": "JPEG", "ct": "PNG", "gray_photo": "JPEG"}


def make(kind: str, seed: int) -> np.ndarray:
    """One image of ``kind`` (see ``KINDS``)."""
    if kind not in GENERATORS:
        raise ValueError(f"unknown kind {kind!r}; choose from {', '.join(KINDS)}")
    return GENERATORS[kind](seed)


def encode(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    """The bytes of ``arr`` saved as ``fmt`` (PNG, JPEG): what an upload of it would hold."""
    buf = io.BytesIO()
    img = Image.fromarray(np.asarray(arr, np.uint8))
    img.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def upload_bytes(kind: str, seed: int) -> bytes:
    """``make(kind, seed)`` encoded as a user would save it (``FORMATS``)."""
    return encode(make(kind, seed), FORMATS[kind])
