"""The Diagnose page's what-if panel texts (Streamlit-free)."""

from __future__ import annotations

import numpy as np
import pytest

from covidviz.cam import whatif as W
from covidviz.cam.whatif import HIDE_CENTRE, HIDE_HOT, HIDE_RANDOM, WhatIfPanel, WhatIfRow
from covidviz.views import whatif as view


def _row(kind, target, before, after, reference=None, spread=0.0, draws=1, region="the box"):
    img = np.zeros((8, 8), np.uint8)
    return WhatIfRow(kind=kind, fraction=target or 0.4, images={"densenet121": img}, before={"densenet121": before},
                     after={"densenet121": after}, spread={"densenet121": spread},
                     draws={"densenet121": [after] * draws}, class_name="COVID-19", region=region,
                     reference=reference, target=target)


def test_readings_are_plain_sentences():
    assert (view.reading(W.HIDE_CENTRE, "COVID-19", 0.97, 0.97) ==
            "The COVID-19 score stays 0.97 with the lungs hidden: the model is not using the lungs for this image.")
    s = view.reading(W.HIDE_CENTRE, "COVID-19", 0.9, 0.2)
    assert "drops from 0.90 to 0.20" in s and "depends on the lung fields" in s
    s = view.reading(W.HIDE_BORDER, "COVID-19", 0.95, 0.3)
    assert "borders" in s and "shortcut" in s
    s = view.reading(W.HIDE_HOT, "Pneumonia", 0.9, 0.5, fraction=0.1, reference=0.52)
    assert "hottest 10 %" in s and "not specific" in s
    s = view.reading(W.HIDE_HOT, "Pneumonia", 0.9, 0.5, fraction=0.1, reference=0.88)
    assert "depends on the region the heat map highlights" in s
    s = view.reading(W.HIDE_CENTRE, "COVID-19", 0.3, 0.95)
    assert "rises" in s and "does not show" in s  # a rise is never read as "not needed"
    s = view.reading(W.HIDE_BOX, "Normal", 0.8, 0.78, region="the box")
    assert "does not need the box" in s
    s = view.reading(W.HIDE_RANDOM, "Normal", 0.8, 0.7, fraction=0.2, spread=0.05)
    assert "± 0.05" in s and "random 20 %" in s
    for kind in W.KINDS:
        assert view.reading(kind, "X", 0.6, 0.6, fraction=0.1).endswith(".")
    with pytest.raises(ValueError):
        view.reading("nonsense", "X", 0.5, 0.5)


@pytest.mark.parametrize("kind, d, low, text", [
    (W.HIDE_HOT, -0.2, False, "the score depends on the region the heat map highlights."),
    (W.HIDE_HOT, -0.1, False, "the highlighted region carries part of the score."),
    (W.HIDE_HOT, 0.1, False, "the highlighted region was holding the score down, not up."),
    (W.HIDE_HOT, 0.0, False, "the score does not depend on the region the heat map highlights."),
    (W.HIDE_HOT, 0.0, True, "hiding it changes little."),
    (W.HIDE_BORDER, -0.1, False, "part of the score comes from the borders (markers, text, collimation edges)."),
    (W.HIDE_BORDER, 0.1, False, "the score does not depend on the borders of the film."),  # no "holding down"
    (W.HIDE_BORDER, 0.0, True, "hiding them changes little."),
    (W.HIDE_MASK, -0.2, False, "the model uses what is in the marker."),
    (W.HIDE_MASK, 0.1, False, "what is in the marker was holding the score down."),
    (W.HIDE_BOX, 0.0, False, "the model does not need the marker."),
    (W.KEEP_HOT, 0.2, False, "that region alone carries the score, and the filled-in rest pushes it further up "
                             "(read with care)."),
    (W.KEEP_HOT, -0.1, False, "that region carries most of the score, the rest of the image adds some."),
    (W.KEEP_HOT, -0.01, True, "the region alone does not make a X call either."),
    (W.HIDE_CENTRE, -0.1, False, "the lungs carry only part of the score."),
])
def test_each_reading_by_the_size_of_the_change(kind, d, low, text):
    before = 0.3 if low else 0.7
    s = view.reading(kind, "X", before, before + d, fraction=0.1, region="the marker")
    assert s.endswith(": " + text), s


def test_row_titles_and_readings_of_rows():
    assert view.row_label(_row(HIDE_HOT, 0.1, 0.9, 0.4)) == "Hottest 10 % of the heat map hidden"
    assert view.row_label(_row(HIDE_RANDOM, 0.05, 0.9, 0.4, draws=3)) == "Random 5 % hidden (3 draws)"
    assert view.row_label(_row(HIDE_RANDOM, 0.05, 0.9, 0.4)) == "Random 5 % hidden (1 draw)"
    assert view.row_label(_row(W.KEEP_HOT, 0.2, 0.9, 0.4)) == "Only the hottest 20 % kept"
    assert view.row_label(_row(W.HIDE_BORDER, None, 0.9, 0.4)) == "Borders hidden (outer strip)"
    assert view.row_label(_row(W.HIDE_BOX, None, 0.9, 0.4)) == "Your box hidden"
    assert view.row_label(_row(W.HIDE_MASK, None, 0.9, 0.4, region="the lesion")) == "The lesion hidden"
    assert view.row_title(_row(HIDE_CENTRE, None, 0.9, 0.4)) == "Centre hidden (lung fields) (40 % of the image)"
    mask = _row(W.HIDE_MASK, None, 0.9, 0.4, region="the lesion")
    assert view.row_reading(mask, "densenet121") == (
        "The COVID-19 score drops from 0.90 to 0.40 with the lesion hidden: the model uses what is in the lesion.")
    panel = WhatIfPanel(0, "COVID-19", np.zeros((8, 8), np.uint8), {"densenet121": 0.9}, [mask])
    assert view.panel_table(panel) == [{"kind": W.HIDE_MASK, "label": "The lesion hidden", "arch": "densenet121",
                                        "fraction": 0.4, "before": 0.9, "after": 0.4, "change": pytest.approx(-0.5),
                                        "spread": 0.0, "reading": view.row_reading(mask, "densenet121")}]


def test_box_from_ranges_and_outline():
    box = view.box_from_ranges((0.7, 0.3), (0.2, 0.6))
    assert box == {"x": 0.3, "y": 0.2, "w": box["w"], "h": box["h"]} and np.allclose([box["w"], box["h"]], 0.4)
    assert view.box_from_ranges((0.5, 0.5), (0.0, 1.0)) is None  # an empty box
    rgb = view.outlined(np.full((100, 100), 128, np.uint8), {"x": 0.2, "y": 0.2, "w": 0.5, "h": 0.5})
    assert rgb.shape == (100, 100, 3) and tuple(rgb[20, 40]) == (0, 114, 178) and tuple(rgb[45, 45]) == (128,) * 3


def test_row_lines_say_before_after_change_and_the_random_reference():
    hot = _row(HIDE_HOT, 0.1, 0.9, 0.4, reference={"densenet121": 0.85})
    line = view.row_lines(hot, {"densenet121": "DenseNet121"})[0]
    assert line.startswith("**DenseNet121** 0.90 → 0.40 (−0.50); the same area hidden at random: 0.85.")
    same = view.row_lines(_row(HIDE_CENTRE, None, 0.5, 0.501), {})[0]
    assert "(±0.00)" in same  # no signed zero
    rand = view.row_lines(_row(HIDE_RANDOM, 0.1, 0.9, 0.8, spread=0.05), {})[0]
    assert "± 0.05 over the draws" in rand


def test_panel_rows_put_each_random_reference_after_its_hot_row():
    rows = [_row(HIDE_HOT, 0.05, 1, 1), _row(HIDE_HOT, 0.1, 1, 1), _row(HIDE_RANDOM, 0.05, 1, 1),
            _row(HIDE_RANDOM, 0.1, 1, 1), _row(HIDE_CENTRE, None, 1, 1)]
    panel = WhatIfPanel(0, "COVID-19", np.zeros((8, 8), np.uint8), {"densenet121": 1.0}, rows)
    order = [(r.kind, r.target) for r in view.panel_rows(panel)]
    assert order == [(HIDE_HOT, 0.05), (HIDE_RANDOM, 0.05), (HIDE_HOT, 0.1), (HIDE_RANDOM, 0.1), (HIDE_CENTRE, None)]
