"""The input gate: is this upload a grayscale frontal chest radiograph? (before any model looks at it)

A model trained on frontal chest X-rays scores anything it is given; a colour photo, a screenshot, a
scanned report, a lateral film or a CT slice gets probabilities as confident as a film's. The gate
looks at the decoded image itself and fails it, with a plain-language reason, when it is clearly not
one. First the cheap checks (no model, a few milliseconds), which fail what is not a radiograph at all:

- colour: the share of clearly coloured pixels, measured by ``covidviz.data.imageio.colour_stats``
  before the upload was converted to gray (``DecodedImage.info``). Radiographs are grayscale; a
  coloured arrow or label on a film is a few percent at most;
- grey levels: how many grey levels make up 95 % of the pixels. A film uses well over 50 (the
  flattest, most washed-out real films in ``../shared/data`` use 54); a screenshot, a drawing or a
  bilevel scan uses a handful;
- one flat shade: the largest share of pixels inside any band of 8 neighbouring grey levels (pure
  black excluded: the padding around a film is black). Real films stay below ~0.42; a screen's
  background or a page's paper covers most of the image;
- a page of text: mostly near-white background AND many sharp edges (a document scan); on their own
  neither is unusual (collimated infant films are two-thirds white; text labels burn edges into
  films), together they are a page;
- sharp edges: the share of pixels on a step of 48+ grey levels between neighbours at 256 px. Films
  are smooth (real ones stay below 0.05); text and line art are edges everywhere;
- flat areas with sharp edges: perfectly flat 8x8 blocks (not black) plus edges: a screenshot;
- aspect ratio: a strip or banner (wider than 2.5:1 or taller than 1:2.5) is no chest film.

Then, when those cheap checks pass (so a photo or a screenshot never pays for it), the frontal-chest
check (``covidviz.anatomy.view.check_view``): the lung fields and the film's intensity layout, and
the DICOM tags ``Modality``, ``ViewPosition`` and ``BodyPartExamined`` (read even when a cheap check
failed: they cost nothing). It fails a lateral view, a CT slice or something that is not a chest
radiograph with ONE sentence naming the kind and this image's numbers; ``GateResult.view`` says which,
and ``GateResult.lungs`` keeps the lung fields it computed, for the lung outlines.

The thresholds (``GateRules``) were set from the statistics of the 1,048 real films in
``../shared/data`` (covid3 + nih14: adults, children, bedside films, figures from papers), leaving a
margin of 1.3-2x beyond the most extreme real film, and then checked against the generated
non-radiographs of ``covidviz.ood.samples``. They pass every real film there, the phantoms and the
test DICOMs. The cheap checks cannot tell a grayscale photograph or a CT slice from a film: the view
check is there for those, and the feature-space detector (``covidviz.ood.detector``) for what merely
looks different to the models.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from covidviz.anatomy import LungFields
from covidviz.anatomy.view import FRONTAL, NOT_CHEST, RADIOGRAPH_MODALITIES, ViewCheck, check_view, dicom_view
from covidviz.data.imageio import GRAY_COLOUR_STATS, DecodedImage, colour_stats

WORK_SIDE = 256   # edges and flat blocks are measured at this long side (any upload size gives the same answer)
HIST_PIXELS = 1_000_000  # the grey-level histogram is counted on a regular subsample of at most ~this many
EDGE_STEP = 48    # grey levels between neighbouring pixels that count as a sharp edge
BLACK = 12        # grey levels below this are film background / padding, not a flat "shade"
__all__ = ["DEFAULT_RULES", "RADIOGRAPH_MODALITIES", "GateResult", "GateRules", "check_image", "image_stats"]


@dataclass(frozen=True)
class GateRules:
    """Thresholds of the gate's checks (see the module docstring for where each comes from)."""

    max_colour_fraction: float = 0.10
    min_levels_95: int = 32
    max_flat_shade: float = 0.60
    document_bright: float = 0.70      # near-white (>= 200) share of a page ...
    document_edges: float = 0.02       # ... with at least this share of edge pixels
    max_edges: float = 0.10
    screenshot_flat: float = 0.25      # flat non-black 8x8 blocks ...
    screenshot_edges: float = 0.03     # ... with at least this share of edge pixels
    min_aspect: float = 0.4
    max_aspect: float = 2.5


DEFAULT_RULES = GateRules()


@dataclass(frozen=True)
class GateResult:
    """``passed``: the image looks like a grayscale frontal chest radiograph; ``reasons``: one plain
    phrase per failed check (empty when passed), the view check's sentence first; ``stats``: the
    measured numbers (JSON-ready). ``view``: ``"frontal"``, ``"lateral"``, ``"ct"`` or ``"not a chest
    radiograph"`` (``covidviz.anatomy.view``; None when the view check was not run); ``view_reason``:
    the view check's sentence naming the kind (empty when frontal, or when a cheap check failed
    first); ``lungs``: the ``LungFields`` the view check computed (None when it did not segment), kept
    for the lung outlines so they are not computed twice; not serialised."""

    passed: bool
    reasons: list[str] = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    view: str | None = None
    view_reason: str = ""
    lungs: LungFields | None = field(default=None, repr=False, compare=False)

    @property
    def lung_quality(self) -> float | None:
        """The lung fields' quality in [0, 1] (``covidviz.anatomy``), None when not segmented."""
        return None if self.lungs is None else float(self.lungs.quality)

    @property
    def summary(self) -> str:
        """ONE sentence: what kind of image it looks like, with the numbers that decided."""
        if self.passed:
            if self.view == FRONTAL:
                return "It looks like a frontal chest radiograph."
            return "It looks like a grayscale radiograph."
        if self.view_reason:
            return self.view_reason
        return "It does not look like a grayscale radiograph: " + "; ".join(self.reasons) + "."

    def to_json(self) -> dict:
        return {"passed": bool(self.passed), "reasons": list(self.reasons), "stats": dict(self.stats),
                "view": self.view, "lung_quality": self.lung_quality}


def image_stats(gray: np.ndarray, info: dict | None = None) -> dict:
    """The numbers the gate decides on, from a (H, W) uint8 image and the decoder's ``info``."""
    g = np.asarray(gray)
    if g.ndim != 2 or g.dtype != np.uint8:
        raise ValueError(f"expected a (H, W) uint8 image, got {g.dtype} {g.shape}")
    info = info or {}
    h, w = g.shape
    stride = int(np.ceil(np.sqrt(h * w / HIST_PIXELS)))  # a regular subsample keeps the exact grey levels
    hist = np.bincount(g[::stride, ::stride].ravel(), minlength=256).astype(np.float64)
    p = hist / max(hist.sum(), 1.0)
    levels_95 = int(np.searchsorted(np.cumsum(np.sort(p)[::-1]), 0.95) + 1)
    band = np.convolve(p, np.ones(8), "valid")  # share of pixels in each 8-level band starting at 0..248
    flat_shade = float(band[BLACK:].max())

    if max(h, w) > WORK_SIDE:
        s = WORK_SIDE / max(h, w)
        size = (max(8, round(w * s)), max(8, round(h * s)))
        work = np.asarray(Image.fromarray(np.ascontiguousarray(g)).reduce(max(1, min(h, w) // 512) or 1)
                          .resize(size, Image.BOX), np.float32)
    else:
        work = g.astype(np.float32)
    step = np.maximum(np.abs(np.diff(work, axis=1))[:-1], np.abs(np.diff(work, axis=0))[:, :-1])
    edges = float((step >= EDGE_STEP).mean()) if step.size else 0.0
    hh, ww = (work.shape[0] // 8) * 8, (work.shape[1] // 8) * 8
    flat_blocks = 0.0
    if hh and ww:
        blocks = work[:hh, :ww].reshape(hh // 8, 8, ww // 8, 8).swapaxes(1, 2).reshape(-1, 64)
        flat_blocks = float(((blocks.std(axis=1) < 1.0) & (blocks.mean(axis=1) >= BLACK)).mean())
    return {
        "width": int(w), "height": int(h), "aspect": round(w / h, 4),
        "colour_fraction": float(info.get("colour_fraction", GRAY_COLOUR_STATS["colour_fraction"])),
        "colour_saturation": float(info.get("colour_saturation", GRAY_COLOUR_STATS["colour_saturation"])),
        "levels_95": levels_95, "flat_shade": round(flat_shade, 4), "bright": round(float(p[200:].sum()), 4),
        "edges": round(edges, 4), "flat_blocks": round(flat_blocks, 4),
        "modality": str(info.get("Modality", "")).strip().upper() if info.get("format") == "DICOM" else None,
    }


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %"


def check_image(image, info: dict | None = None, rules: GateRules = DEFAULT_RULES, *, view: bool = True) -> GateResult:
    """Run the gate on a ``DecodedImage`` (preferred: it carries the colour statistics and the DICOM
    tags), a (H, W) uint8 gray array (colour unknown: that check is skipped) or an (H, W, 3) uint8 RGB
    array. ``view=False`` skips the image part of the frontal-chest check (no segmentation: the cheap
    checks and the DICOM tags alone)."""
    if isinstance(image, DecodedImage):
        gray, info = image.gray, {**image.info, **(info or {})}
    else:
        arr = np.asarray(image)
        if arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.dtype == np.uint8:
            info = {**colour_stats(arr), **(info or {})}
            gray = np.asarray(Image.fromarray(np.ascontiguousarray(arr[..., :3])).convert("L"))
        else:
            gray = arr
    st = image_stats(gray, info)
    r = rules
    reasons = []
    if st["colour_fraction"] > r.max_colour_fraction:
        reasons.append(f"{_pct(st['colour_fraction'])} of its pixels are in colour (X-rays are grayscale)")
    if st["levels_95"] < r.min_levels_95:
        reasons.append(f"95 % of it uses only {st['levels_95']} grey levels, like a screenshot, a drawing or a "
                       "black-and-white scan (a film uses well over 50)")
    if st["flat_shade"] > r.max_flat_shade:
        reasons.append(f"{_pct(st['flat_shade'])} of it is one flat shade, like a screen or a page background")
    if st["bright"] > r.document_bright and st["edges"] > r.document_edges:
        reasons.append(f"it is {_pct(st['bright'])} near-white background with sharp edges, like a page of text")
    elif st["edges"] > r.max_edges:
        reasons.append(f"{_pct(st['edges'])} of it is sharp edges, like text or line art (films are smooth)")
    if st["flat_blocks"] > r.screenshot_flat and st["edges"] > r.screenshot_edges and st["flat_shade"] <= r.max_flat_shade:
        reasons.append(f"{_pct(st['flat_blocks'])} of it is perfectly flat areas with sharp edges, like a screenshot")
    if not r.min_aspect <= st["aspect"] <= r.max_aspect:
        reasons.append(f"its shape ({st['width']} x {st['height']} pixels) is a strip, not a chest film")
    tagged = dicom_view(info) is not None  # the tags are free: always read
    if not tagged and (reasons or not view):  # no segmentation: a cheap check failed, or it was not asked for
        if not view:
            return GateResult(passed=not reasons, reasons=reasons, stats=st)
        return GateResult(passed=False, reasons=reasons, stats={**st, "view": NOT_CHEST}, view=NOT_CHEST)
    checked: ViewCheck = check_view(gray, info)  # tagged: decided by the tags, without segmenting
    st = {**st, **checked.stats}
    if not checked.frontal:
        reasons = [checked.reason, *reasons]
    return GateResult(passed=not reasons, reasons=reasons, stats=st, view=checked.view,
                      view_reason=checked.reason, lungs=checked.lungs)
