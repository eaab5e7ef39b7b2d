"""How much of a heat map's weight lies on the lung fields, and where the rest lies; the lung outline
drawn over films and overlays.

- ``model_mask``: lung fields found on the film (``covidviz.anatomy.segment_lungs``, at the film's
  size) -> the same fields on the model input, through the experiment's own preprocessing
  (``Preprocessing.to_model_mask``: the centre crop or a lung input's crop, then the resize), exactly as
  ``covidviz.analysis.localisation`` maps lesion masks: the map and the mask then cover the same pixels.
- ``lung_weight(heat, lung_mask) -> LungWeight``: the share of the map's positive weight inside the
  fields (``cam.localisation.energy_inside``), the lungs' share of the image (the share a map spread
  evenly would have: chance), and where the weight outside lies (``OUTSIDE_REGIONS``, from geometry
  relative to the fields: a band along the image's border, below the lowest lung row of each side,
  above the highest, between the two fields, beside them).
- ``lung_outline`` / ``draw_outline``: the fields' contour at a displayed size, drawn in
  ``OUTLINE_COLOUR`` on a dark halo (visible on a film and on any colour map).

No sentences here: the pages' wording is ``covidviz.views.diagnose``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from covidviz.cam.localisation import energy_inside
from covidviz.cam.overlay import resize_map

OUTLINE_COLOUR = (255, 255, 255)   # the lung outline, on every film and overlay (white ...
OUTLINE_HALO = (0, 0, 0)           # ... on a 1-px dark halo, so it shows on bright bone and on red heat alike)
EDGE_BAND = 0.05                   # the film's edge: a band this share of the image's short side wide
MOSTLY_OUTSIDE = 0.5               # below this share inside, most of the map's weight lies outside the lungs

EDGE, BELOW, ABOVE, BETWEEN, BESIDE = ("the film's edge", "below the diaphragm", "above the lungs",
                                       "between the lungs", "beside the lungs")
OUTSIDE_REGIONS = (EDGE, BELOW, ABOVE, BETWEEN, BESIDE)  # in the order a pixel is assigned to them


@dataclass(frozen=True)
class LungWeight:
    """One heat map against the lung fields. ``share_inside``: the share of its positive weight inside
    the fields (NaN: the map has no positive weight); ``lung_area_share``: the fields' share of the image
    (what a map spread evenly would score: chance); ``where_outside``: the region (``OUTSIDE_REGIONS``)
    holding most of the weight outside, None when nothing lies outside; ``outside``: region -> its share
    of the map's whole weight (they add up to ``1 - share_inside``)."""

    share_inside: float
    lung_area_share: float
    where_outside: str | None
    outside: dict[str, float] = field(default_factory=dict)

    @property
    def measured(self) -> bool:
        return bool(np.isfinite(self.share_inside))

    @property
    def mostly_outside(self) -> bool:
        return self.measured and self.share_inside < MOSTLY_OUTSIDE

    @property
    def below_chance(self) -> bool:
        """Less weight on the lungs than a map spread evenly over the image would put there."""
        return self.measured and self.share_inside < self.lung_area_share

    def to_json(self) -> dict:
        return {"share_inside": None if not self.measured else float(self.share_inside),
                "lung_area_share": float(self.lung_area_share), "where_outside": self.where_outside,
                "outside": {k: float(v) for k, v in self.outside.items()}}


def model_mask(mask: np.ndarray, prep, region: np.ndarray | None = None) -> np.ndarray:
    """A bool mask at the film's size -> bool (S, S) at the model input, through ``prep.to_model_mask``
    (the film's own crop and resize), so it lines up with the model's pixels and its heat maps.
    ``region``: the film's lung region when the experiment has a lung input (``ModelInput.region``:
    a lung crop follows it)."""
    return prep.to_model_mask(mask, region)


def _side_rows(mask: np.ndarray, cols: np.ndarray) -> tuple[int, int]:
    """First and last lung rows among ``cols`` (all lung rows when that side has none)."""
    rows = np.flatnonzero(mask[:, cols].any(axis=1)) if cols.size else np.array([], int)
    if not rows.size:
        rows = np.flatnonzero(mask.any(axis=1))
    return int(rows[0]), int(rows[-1])


def outside_regions(mask: np.ndarray, edge: float = EDGE_BAND) -> dict[str, np.ndarray]:
    """The image outside a (non-empty) lung mask split into ``OUTSIDE_REGIONS`` (disjoint bool masks that
    cover exactly ``~mask``). Each side (image left / right of the fields' middle column) has its own top
    and bottom lung row, so the liver under a higher right hemidiaphragm counts as below the diaphragm."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        raise ValueError("empty lung mask: no regions to name")
    h, w = mask.shape
    cols = np.flatnonzero(mask.any(axis=0))
    mid = (cols[0] + cols[-1]) / 2.0
    c = np.arange(w)
    sides = (c <= mid, c > mid)
    below, above = np.zeros_like(mask), np.zeros_like(mask)
    for side in sides:
        top, bottom = _side_rows(mask, np.flatnonzero(side))
        below[bottom + 1:, side] = True
        above[:top, side] = True
    between = np.zeros_like(mask)
    r0, r1 = _side_rows(mask, cols)
    left_cols, right_cols = cols[cols <= mid], cols[cols > mid]
    if left_cols.size and right_cols.size:  # the gap between the fields' medial edges, over the lungs' rows
        between[r0:r1 + 1, left_cols[-1] + 1:right_cols[0]] = True
    for r in range(r0, r1 + 1):  # and, row by row, whatever lies between a left and a right lung pixel
        lc, rc = np.flatnonzero(mask[r] & sides[0]), np.flatnonzero(mask[r] & sides[1])
        if lc.size and rc.size:
            between[r, lc[-1] + 1:rc[0]] = True
    band = max(1, int(round(edge * min(h, w))))
    border = np.zeros_like(mask)
    border[:band], border[-band:], border[:, :band], border[:, -band:] = True, True, True, True
    out, taken = {}, mask.copy()
    for name, region in ((EDGE, border), (BELOW, below), (ABOVE, above), (BETWEEN, between), (BESIDE, ~taken)):
        out[name] = region & ~taken
        taken |= out[name]
    return out


def lung_weight(heat: np.ndarray, lung_mask: np.ndarray) -> LungWeight:
    """The share of ``heat``'s positive weight inside ``lung_mask`` and where the rest lies. ``heat``:
    a map of any size (resized to the mask's, as ``energy_inside`` does), e.g. ``CamResult.raw[i]``;
    ``lung_mask``: bool lung fields on the same image (``model_mask`` for a model-input map). Raises
    ``ValueError`` for an empty mask."""
    mask = np.asarray(lung_mask, bool)
    inside = energy_inside(heat, mask)
    area = float(mask.mean())
    if not np.isfinite(inside):
        return LungWeight(float("nan"), area, None, {})
    pos = np.clip(np.nan_to_num(resize_map(np.asarray(heat, np.float32), mask.shape)), 0.0, None).astype(np.float64)
    total = pos.sum()
    outside = {name: float(pos[region].sum() / total) for name, region in outside_regions(mask).items()}
    where = max(outside, key=outside.get) if max(outside.values()) > 0 else None
    return LungWeight(float(inside), area, where, outside)


def lung_outline(mask: np.ndarray, shape: tuple[int, int], width: int | None = None) -> np.ndarray:
    """Bool (h, w) contour of a lung mask drawn at ``shape`` (the displayed size): the mask resized
    (smoothly), minus its erosion by ``width`` px (default: about 1 px per 200 px of the long side)."""
    mask = np.asarray(mask, bool)
    shape = (int(shape[0]), int(shape[1]))
    big = resize_map(mask.astype(np.float32), shape) > 0.5 if mask.shape != shape else mask
    if width is None:
        width = max(1, int(round(max(shape) / 200)))
    if not big.any():
        return big
    inner = ndimage.binary_erosion(big, iterations=int(width), border_value=0)
    return big & ~inner


def draw_outline(image: np.ndarray, mask: np.ndarray, colour=OUTLINE_COLOUR, halo=OUTLINE_HALO) -> np.ndarray:
    """RGB uint8 copy of ``image`` (gray (h, w) or RGB (h, w, 3)) with the outline of the lung ``mask``
    (any size: it is drawn at the image's) in ``colour`` on a 1-px ``halo``."""
    img = np.asarray(image)
    rgb = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]
    rgb = np.array(rgb, dtype=np.uint8, copy=True)
    line = lung_outline(mask, rgb.shape[:2])
    if line.any():
        rgb[ndimage.binary_dilation(line) & ~line] = halo
        rgb[line] = colour
    return rgb
