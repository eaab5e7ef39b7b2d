"""Is this a frontal chest radiograph? ``check_view(gray, info) -> ViewCheck``: ``"frontal"``,
``"lateral"``, ``"ct"`` or ``"not a chest radiograph"``, with one sentence that names the kind and
the numbers measured on THIS image.

The app's models were trained on frontal (PA/AP) chest films only. A lateral film, a CT slice or a
picture of something else still gets confident probabilities, so the input gate
(``covidviz.ood.gate.check_image``) runs this check once the cheap "is it a radiograph at all"
checks have passed. Hand-built rules on a few interpretable measurements, no learned classifier:

1. DICOM tags, when the file has them (free, decisive): ``Modality`` CT -> a CT slice; another
   non-radiograph modality (MR, US, NM, PT...) -> not a chest radiograph; ``BodyPartExamined``
   present and not the chest -> not a chest radiograph; ``ViewPosition`` LL / RL / LATERAL -> a
   lateral view. Tags only ever flag: a film tagged PA is still looked at.
2. Two-toned (``ct``): a CT slice shown in a lung window is nearly two grey levels, black lungs
   and white (saturated) soft tissue, and the few mid-grey pixels lie on the sharp edges between
   them. A projection film adds up tissue along every ray, so mid-greys are everywhere and the
   transitions are soft. Measured inside the lung fields' bounding box at 256 px (so black
   padding, labels and collimation around a film do not count): ``mid_grey`` = share of pixels in
   the middle third of the box's grey range (2nd-98th percentile); ``steepness`` = the 75th
   percentile of the gradient at those pixels, over the grey range (1 / the width of a
   transition in pixels). CT when ``mid_grey < 0.20`` AND ``steepness > 0.10``; with soft edges
   but ``mid_grey < 0.12`` it is two-toned all the same (a blurred slice, a drawing, a photo of
   dark shapes on a light ground): not a chest radiograph.
3. No fine structure (not a chest radiograph): a film shows ribs, vessels, edges of organs and
   quantum noise at every scale; a gradient, a vignette or a heavily blurred picture does not.
   ``detail`` = the 90th percentile of |image - its Gaussian blur (sigma 2 px)| inside the box, over
   the grey range. Below 0.015 -> not a chest radiograph.
4. Lung fields (``covidviz.anatomy.segment_lungs``): a frontal film has two lung fields side by
   side, of lung-like size and place; its ``quality`` is below ``QUALITY_OK`` for a lateral film
   (one field, or two that overlap or differ), a CT slice, noise, a photo. Low quality with a
   chest-sized lung region (0.12-0.60 of the image) lying inside the image (walled by the body on
   both sides, not running off its edge) -> a lateral view; otherwise -> not a chest radiograph.
5. Mediastinum: on a chest film the band between the two lung fields (heart, spine) is brighter
   than the fields. When it is clearly darker (``mediastinum < -0.08`` of the grey range) the two
   "fields" are just two dark blobs -> not a chest radiograph.

The measurements were chosen by looking at the 25 lateral films and 30 CT slices of
``../shared/data/views`` beside the 1,048 real frontal films of ``../shared/data`` (covid3 + nih14,
adults and children, every source); each threshold sits beyond the most extreme frontal film (or,
for CT, where no frontal film meets both conditions), not where a fit to those 55 images would put it.
``docs/lungs.md`` ("View check") and ``bench/ood.py`` give the measured rates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from scipy import ndimage

from covidviz.anatomy.lungs import MIN_SIDE, QUALITY_OK, LungFields, segment_lungs

FRONTAL, LATERAL, CT, NOT_CHEST = "frontal", "lateral", "ct", "not a chest radiograph"
VIEWS = (FRONTAL, LATERAL, CT, NOT_CHEST)
WORK_SIDE = 256   # the image measurements are made at this long side (any upload size, same answer)

# DICOM Modality values of projection radiographs (plain films): computed / digital radiography,
# X-ray angiography's spot films, mammography, intra-oral, panoramic, "other" and empty.
RADIOGRAPH_MODALITIES = {"CR", "DX", "RG", "XA", "RF", "MG", "IO", "PX", "OT", ""}
CT_MODALITIES = {"CT"}
# ViewPosition values of a lateral projection (DICOM: LL left lateral, RL right lateral).
LATERAL_POSITIONS = {"LL", "RL", "LAT", "LATERAL", "LLAT", "RLAT"}
# BodyPartExamined values that are the chest (substrings; English, German and Romance spellings).
CHEST_PARTS = ("CHEST", "THORA", "TORA", "LUNG", "BRUST")

_TRAINED_ON = "the models were trained on plain frontal chest films"


@dataclass(frozen=True)
class ViewRules:
    """Thresholds of the view check (the module docstring says what each measures and why)."""

    # CT needs both: of the 1,048 frontal films 3 have mid_grey < 0.20 and 12 steepness > 0.10, none
    # both (films with mid_grey < 0.25 stay below 0.09 steepness); CT slices: mid_grey <= 0.18 and
    # steepness >= 0.125.
    ct_max_mid_grey: float = 0.20
    ct_min_steepness: float = 0.10
    min_mid_grey: float = 0.12        # frontal films >= 0.175: fewer mid-greys is two-toned, soft or not
    min_detail: float = 0.015         # frontal (and lateral) films >= 0.024; gradients ~0.005-0.04
    # Which kind a film without two trusted lung fields is: a lateral view when the lung region is
    # chest-sized (lateral films: 0.18-0.48 of the image, frontal 0.08-0.62) and lies inside the
    # image, walled by the body on both sides (a texture or photo's "field" runs off the edge);
    # else not a chest radiograph.
    lateral_min_area: float = 0.12
    lateral_max_area: float = 0.60
    lateral_margin: float = 0.01      # share of the width that must be left on each side of the lungs
    min_mediastinum: float = -0.08    # frontal films: >= -0.04 (lowest with trusted fields)


DEFAULT_VIEW_RULES = ViewRules()


@dataclass(frozen=True)
class ViewCheck:
    """``view``: one of ``VIEWS``; ``reason``: one sentence naming the kind, with this image's numbers
    (empty when frontal); ``decided_by``: ``"dicom"`` (a tag) or ``"image"``; ``stats``: the measured
    numbers (JSON-ready); ``lungs``: the ``LungFields`` computed on the way (None when a DICOM tag
    decided first, or the image is too small to segment)."""

    view: str
    reason: str = ""
    decided_by: str = "image"
    stats: dict = field(default_factory=dict)
    lungs: LungFields | None = field(default=None, repr=False, compare=False)

    @property
    def frontal(self) -> bool:
        return self.view == FRONTAL

    @property
    def lung_quality(self) -> float | None:
        return None if self.lungs is None else float(self.lungs.quality)


def _sentence(kind: str, why: str) -> str:
    if kind == LATERAL:
        return f"It looks like a lateral view ({why}); {_TRAINED_ON}."
    if kind == CT:
        return f"It looks like a CT slice ({why}); {_TRAINED_ON}."
    return f"It does not look like a chest radiograph ({why}); {_TRAINED_ON}."


def dicom_view(info: dict | None) -> tuple[str, str] | None:
    """(view, why) when the decoder's DICOM tags (``DecodedImage.info``) say this is no frontal chest
    film; None when they say nothing against it (or the file is not a DICOM)."""
    info = info or {}
    if info.get("format") != "DICOM":
        return None
    modality = str(info.get("Modality", "")).strip().upper()
    if modality in CT_MODALITIES:
        return CT, f"the DICOM file says its modality is {modality}"
    if modality not in RADIOGRAPH_MODALITIES:
        return NOT_CHEST, f"the DICOM file says its modality is {modality}, not a plain radiograph (CR/DX)"
    part = str(info.get("BodyPartExamined", "")).strip().upper()
    if part and not any(p in part for p in CHEST_PARTS):
        return NOT_CHEST, f"the DICOM file says the body part examined is {part}, not the chest"
    position = str(info.get("ViewPosition", "")).strip().upper()
    if position in LATERAL_POSITIONS or position.startswith("LATERAL"):
        return LATERAL, f"the DICOM file says its view position is {position}"
    return None


def _work(gray: np.ndarray) -> np.ndarray:
    """The film at ``WORK_SIDE`` long side (area-averaged), float32."""
    h, w = gray.shape
    if max(h, w) <= WORK_SIDE:
        return gray.astype(np.float32)
    s = WORK_SIDE / max(h, w)
    size = (max(8, round(w * s)), max(8, round(h * s)))
    return np.asarray(Image.fromarray(np.ascontiguousarray(gray)).resize(size, Image.BOX), np.float32)


def _resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if mask.shape == shape:
        return mask
    im = Image.fromarray(mask.astype(np.uint8) * 255).resize((shape[1], shape[0]), Image.NEAREST)
    return np.asarray(im) > 127


def view_stats(gray: np.ndarray, lungs: LungFields | None) -> dict:
    """The measurements the image rules decide on (JSON-ready floats; see the module docstring)."""
    work = _work(np.asarray(gray))
    shape = work.shape
    right = _resize_mask(lungs.right, shape) if lungs is not None else np.zeros(shape, bool)
    left = _resize_mask(lungs.left, shape) if lungs is not None else np.zeros(shape, bool)
    lung = right | left
    if lung.any():  # the chest: the lung fields' bounding box (black padding, labels and collimation left out)
        rows, cols = np.flatnonzero(lung.any(axis=1)), np.flatnonzero(lung.any(axis=0))
        box = work[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    if not lung.any() or min(box.shape) < 8:
        box = work
    lo, hi = np.percentile(box, [2, 98])
    span = max(float(hi - lo), 1.0)
    mid = (box > lo + span / 3) & (box < lo + 2 * span / 3)
    gy, gx = np.gradient(box)
    steep = np.hypot(gx, gy)[mid]
    detail = np.abs(box - ndimage.gaussian_filter(box, 2.0))

    mediastinum = None
    if right.any() and left.any():  # rows holding both fields: the band between them
        both = np.flatnonzero(right.any(axis=1) & left.any(axis=1))
        band = np.zeros(shape, bool)
        for y in both:
            a, b = np.flatnonzero(right[y]).max(), np.flatnonzero(left[y]).min()
            if b > a + 1:
                band[y, a + 1:b] = True
        if band.sum() >= 20:
            lo1, hi1 = np.percentile(work, [1, 99])
            m = float(np.median(work[band]))
            mediastinum = min(m - float(np.median(work[right])), m - float(np.median(work[left]))) / max(hi1 - lo1, 1.0)
    n_fields = int(right.any()) + int(left.any()) if lungs is not None else 0
    # where the lung region lies across the image (fractions of the width; 0, 0 without lungs)
    across = (cols[0] / shape[1], (cols[-1] + 1) / shape[1]) if lung.any() else (0.0, 0.0)
    return {
        "lung_quality": None if lungs is None else round(float(lungs.quality), 4),
        "lung_fields": n_fields,
        "lung_area": round(float(lung.mean()), 4),
        "lung_x0": round(float(across[0]), 4), "lung_x1": round(float(across[1]), 4),
        "mid_grey": round(float(mid.mean()), 4),
        "steepness": round(float(np.percentile(steep, 75)) / span, 4) if steep.size >= 20 else 0.0,
        "detail": round(float(np.percentile(detail, 90)) / span, 4),
        "mediastinum": None if mediastinum is None else round(float(mediastinum), 4),
    }


def _lung_words(lungs: LungFields, st: dict, kind: str) -> str:
    n = st["lung_fields"]
    area = f"{100 * st['lung_area']:.0f} %"
    if n == 0:
        found = "no lung field found"
    elif n == 1:
        found = f"one lung field covering {area} of the image, not two side by side"
    else:
        found = f"two lung fields covering {area} of the image"
    issues = [i for i in lungs.issues if not i.startswith(("only one lung field", "no lung field"))]
    if kind == NOT_CHEST and n and (st["lung_x0"] < DEFAULT_VIEW_RULES.lateral_margin
                                    or st["lung_x1"] > 1 - DEFAULT_VIEW_RULES.lateral_margin):
        issues.append("they run off the edge of the image")
    if issues:
        found += ", but " + " and ".join(issues)
    return f"{found}; lung-field quality {lungs.quality:.2f}, where a frontal film scores at least {QUALITY_OK}"


def classify(st: dict, lungs: LungFields | None, rules: ViewRules = DEFAULT_VIEW_RULES) -> tuple[str, str]:
    """(view, why) from ``view_stats``' numbers and the lung fields (the rules in the module docstring)."""
    r = rules
    if st["mid_grey"] < r.ct_max_mid_grey and st["steepness"] > r.ct_min_steepness:
        return CT, (f"two-toned: only {100 * st['mid_grey']:.0f} % of the chest is mid-grey, all on sharp edges "
                    f"of steepness {st['steepness']:.2f}, where a plain film has at least "
                    f"{100 * r.ct_max_mid_grey:.0f} % mid-grey and soft edges, below {r.ct_min_steepness:.2f}")
    if st["mid_grey"] < r.min_mid_grey:
        return NOT_CHEST, (f"two-toned: only {100 * st['mid_grey']:.0f} % of it is mid-grey, where a film, adding up "
                           f"tissue along every ray, has at least {100 * r.ct_max_mid_grey:.0f} %")
    if st["detail"] < r.min_detail:
        return NOT_CHEST, (f"almost no fine structure, detail {st['detail']:.3f}, where a film's ribs, vessels and "
                           f"grain give at least {r.min_detail}: a gradient or a blurred picture")
    if lungs is None:
        return NOT_CHEST, "no lung fields were looked for"
    if lungs.quality < QUALITY_OK:
        chest_sized = r.lateral_min_area <= st["lung_area"] <= r.lateral_max_area
        inside = st["lung_x0"] >= r.lateral_margin and st["lung_x1"] <= 1.0 - r.lateral_margin
        kind = LATERAL if chest_sized and inside else NOT_CHEST
        return kind, _lung_words(lungs, st, kind)
    if st["mediastinum"] is not None and st["mediastinum"] < r.min_mediastinum:
        return NOT_CHEST, (f"the band between the two dark fields is darker than they are, by {-st['mediastinum']:.2f} "
                           "of the grey range, where on a chest film the mediastinum between the lungs is brighter")
    return FRONTAL, ""


def check_view(gray, info: dict | None = None, *, lungs: LungFields | None = None,
               rules: ViewRules = DEFAULT_VIEW_RULES) -> ViewCheck:
    """Judge one (H, W) uint8 image (``DecodedImage.gray``) and the decoder's ``info`` (DICOM tags).
    ``lungs``: its ``segment_lungs`` result when the caller has it already (else computed here)."""
    g = np.asarray(gray)
    if g.ndim != 2 or g.dtype != np.uint8:
        raise ValueError(f"expected a (H, W) uint8 image, got {g.dtype} {g.shape}")
    tagged = dicom_view(info)
    if tagged is not None:
        return ViewCheck(tagged[0], _sentence(*tagged), "dicom", {"view": tagged[0]}, lungs)
    if min(g.shape) < MIN_SIDE:
        why = f"{g.shape[1]} x {g.shape[0]} pixels is too small to be a film"
        return ViewCheck(NOT_CHEST, _sentence(NOT_CHEST, why), "image", {"view": NOT_CHEST}, None)
    if lungs is None:
        lungs = segment_lungs(g)
    st = view_stats(g, lungs)
    view, why = classify(st, lungs, rules)
    st["view"] = view
    return ViewCheck(view, "" if view == FRONTAL else _sentence(view, why), "image", st, lungs)
