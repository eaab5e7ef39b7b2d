"""The Diagnose page's what-if panel texts (Streamlit-free)."""

from __future__ import annotations

import numpy as np

from covidviz.cam.whatif import HIDE_CENTRE, HIDE_HOT, HIDE_RANDOM, WhatIfPanel, WhatIfRow
from covidviz.views import whatif as view


def _row(kind, target, before, after, reference=None, spread=0.0):
    img = np.zeros((8, 8), np.uint8)
    return WhatIfRow(kind=kind, label=kind, fraction=target or 0.4, images={"densenet121": img}, before={"densenet121": before},
                     after={"densenet121": after}, spread={"densenet121": spread}, draws={"densenet121": [after]},
                     readings={"densenet121": "A sentence."}, reference=reference, target=target)


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
