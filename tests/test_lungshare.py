"""Heat-map weight on the lung fields (covidviz.cam.lungshare): shares and places on hand-built maps, the
mask carried onto the model input exactly like the film, the outline, and the sentences that say it."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from covidviz import inference
from covidviz.anatomy import QUALITY_OK, LungFields
from covidviz.cam import lungshare
from covidviz.cam.lungshare import OUTSIDE_REGIONS, lung_outline, lung_weight, model_mask, outside_regions
from covidviz.data.preprocess import Preprocessing
from covidviz.views import diagnose as view

S = 64


def lungs_mask(size: int = S, right_bottom: int = 50) -> np.ndarray:
    """Two upright fields, image left (patient's right, shorter: its diaphragm is higher) and image right."""
    m = np.zeros((size, size), bool)
    m[12:right_bottom, 10:28] = True
    m[12:54, 36:54] = True
    return m


def heat_at(rows: slice, cols: slice, size: int = S) -> np.ndarray:
    h = np.zeros((size, size), np.float32)
    h[rows, cols] = 1.0
    return h


def test_all_weight_inside_is_one_and_an_even_map_scores_the_lungs_share():
    mask = lungs_mask()
    w = lung_weight(mask.astype(np.float32) * 3.0, mask)
    assert w.share_inside == pytest.approx(1.0) and w.where_outside is None and not w.mostly_outside
    assert sum(w.outside.values()) == pytest.approx(0.0)
    assert w.lung_area_share == pytest.approx(mask.mean())
    even = lung_weight(np.ones((S, S), np.float32), mask)  # chance: the lungs' own share of the film
    assert even.share_inside == pytest.approx(mask.mean()) and not even.below_chance
    # negative values are no weight; a map with none is not measured
    signed = lung_weight(np.where(mask, 1.0, -5.0).astype(np.float32), mask)
    assert signed.share_inside == pytest.approx(1.0)
    none = lung_weight(-np.ones((S, S), np.float32), mask)
    assert not none.measured and none.where_outside is None and not none.mostly_outside


@pytest.mark.parametrize("rows, cols, where", [
    (slice(57, 61), slice(12, 52), lungshare.BELOW),     # under both lungs, inside the border band's margin
    (slice(0, 2), slice(0, 64), lungshare.EDGE),         # along the top border
    (slice(20, 40), slice(62, 64), lungshare.EDGE),      # along the right border
    (slice(5, 9), slice(14, 50), lungshare.ABOVE),       # neck and shoulders
    (slice(20, 40), slice(29, 35), lungshare.BETWEEN),   # mediastinum
    (slice(20, 40), slice(55, 60), lungshare.BESIDE),    # lateral soft tissue
    (slice(51, 54), slice(12, 26), lungshare.BELOW),     # under the higher right hemidiaphragm only
])
def test_where_the_weight_outside_lies(rows, cols, where):
    w = lung_weight(heat_at(rows, cols), lungs_mask())
    assert w.share_inside == pytest.approx(0.0) and w.mostly_outside
    assert w.where_outside == where and w.outside[where] == pytest.approx(1.0)


def test_regions_split_exactly_the_outside_and_shares_add_up():
    mask = lungs_mask()
    regions = outside_regions(mask)
    assert list(regions) == list(OUTSIDE_REGIONS)
    stack = np.stack(list(regions.values()))
    assert (stack.sum(0) == ~mask).all()  # disjoint, and covering exactly the outside
    heat = np.random.default_rng(0).random((8, 8)).astype(np.float32)  # a coarse map: resized to the mask
    w = lung_weight(heat, mask)
    assert w.share_inside + sum(w.outside.values()) == pytest.approx(1.0)
    assert abs(w.share_inside - mask.mean()) < 0.2  # a random map scores about chance
    with pytest.raises(ValueError):
        lung_weight(heat, np.zeros((S, S), bool))


def test_mask_follows_the_model_input_through_a_centre_crop():
    """A film wider than tall, a centre-cropped preprocessing: the lung mask lands where the film's pixels do."""
    h, w = 80, 120
    film = np.zeros((h, w), np.uint8)
    lung = np.zeros((h, w), bool)
    lung[20:60, 30:50] = True    # inside the centre square (columns 20..99)
    lung[20:60, 5:15] = True     # cut away by the crop
    film[lung] = 255
    prep = Preprocessing(image_size=32, crop="center")
    got = model_mask(lung, prep)
    assert got.shape == (32, 32)
    assert np.array_equal(got, prep.to_model_pixels(film) > 127)  # the same pixels as the film's
    cols = np.flatnonzero(got.any(0))  # columns 30..49 of the film are 10..29 of the 80-px square: 4..11 at 32 px
    assert cols[0] == 4 and cols[-1] == 11
    plain = model_mask(lung, Preprocessing(image_size=32))  # without the crop both blocks stay
    assert len(np.flatnonzero(np.diff(plain.any(0).astype(int)) == 1)) == 2


def test_outline_is_the_contour_at_the_displayed_size():
    mask = lungs_mask()
    line = lung_outline(mask, (128, 128))
    assert line.shape == (128, 128) and line.any()
    big = np.kron(mask, np.ones((2, 2), bool))
    assert not (line & ~big).any()                      # on the fields, never outside them
    assert not line[40:80, 30:46].any()                 # not across their inside
    film = np.full((128, 128), 90, np.uint8)
    drawn = lungshare.draw_outline(film, mask)
    assert drawn.shape == (128, 128, 3)
    assert (drawn[line] == lungshare.OUTLINE_COLOUR).all()
    assert (drawn[60:70, 30:40] == 90).all()            # the film elsewhere untouched


def _fields(quality=1.0, issues=()) -> LungFields:
    m = lungs_mask()
    return LungFields(m, m & (np.arange(S) > 32), m & (np.arange(S) <= 32), quality, tuple(issues))


def test_lung_fields_reuses_the_gates_and_the_mask_needs_reliable_fields():
    fields = _fields()
    gray = np.zeros((S, S), np.uint8)
    verdict = SimpleNamespace(gate=SimpleNamespace(lungs=fields))
    assert inference.lung_fields(gray, verdict) is fields
    assert inference.lung_fields(np.zeros((8, 8), np.uint8)) is None  # too small to segment: none
    prep = Preprocessing(image_size=32)
    assert inference.lung_mask_for(fields, prep).shape == (32, 32)
    assert inference.lung_mask_for(_fields(QUALITY_OK - 0.1, ["only one lung field found"]), prep) is None


def test_sentences_say_the_share_chance_and_where():
    fields = _fields()
    inside = lung_weight(lungs_mask().astype(np.float32), lungs_mask())
    text = view.lung_text(inside, fields)
    assert text.startswith(view.LUNG_PREFIX) and "**100 %** of this map's weight lies inside the lung fields" in text
    assert f"the lungs are {100 * lungs_mask().mean():.0f} % of the film" in text and "outside" not in text
    below = view.lung_text(lung_weight(heat_at(slice(57, 61), slice(12, 52)), lungs_mask()), fields)
    assert "**0 %**" in below and ("Most of it lies outside the lungs, the largest part below the diaphragm (the "
                                   "abdomen: 100 % of the map)") in below.replace("**", "")
    edge = view.lung_text(lung_weight(heat_at(slice(0, 2), slice(0, 64)), lungs_mask()), fields)
    assert "the largest part **at the film's edge**" in edge and "markers" in edge
    bad = view.lung_text(None, _fields(0.2, ["only one lung field found"]))
    assert "could not be found reliably (only one lung field found" in bad and "%" not in bad.split("(")[0]
    assert "could not be looked for" in view.lung_text(None, None)
