"""The Diagnose page's "Test this explanation" panel (widgets only): run the occlusion what-ifs of
``covidviz.cam.whatif`` for the shown image and the explained class on every backbone, once per
(image, class, map) in this session, and a box of the user's own (two range sliders) that is rescored
as it moves. Texts and row shaping: ``covidviz.views.whatif``."""

from __future__ import annotations

import numpy as np
import streamlit as st

from covidviz.cam.whatif import Scorer, WhatIfRequest, box_what_if, what_if_panel
from covidviz.ui.diagnose_cache import _session_cache
from covidviz.ui.state import scoped
from covidviz.views import whatif as view
from covidviz.views.style import ARCH_LABELS


def _show_row(row) -> None:
    c1, c2 = st.columns([1, 6], vertical_alignment="center")
    c1.image(row.image, width=view.THUMB)
    c2.markdown(f"**{view.row_title(row)}**  \n" + "  \n".join(view.row_lines(row, ARCH_LABELS)))


def what_if_section(exp, predictor, diag, shown_cams: dict, method: str, layer: str, key) -> None:
    """``shown_cams``: arch -> the ``CamResult`` the page shows. The panel explains the first backbone's
    class for every backbone, ranking "hottest" by each backbone's map of that class (the shown one
    when it is that class, else a classic CAM). ``key``: the prediction's cache key (image + window)."""
    class_idx = int(next(iter(shown_cams.values())).class_idx[0])
    heats = {a: c for a, c in shown_cams.items() if int(c.class_idx[0]) == class_idx}
    st.subheader(view.TITLE)
    st.caption(view.INTRO)
    names = list(exp.labels.names)
    st.caption(view.CLASS_NOTE.format(cls=names[class_idx]))
    scorer = Scorer(predictor.models, predictor.prep, exp.labels.task, names,
                    {a: predictor.temperature(a) for a in predictor.archs})
    before = {a: float(diag.backbones[a].probs[class_idx]) for a in predictor.archs}
    cache = _session_cache().setdefault("whatif", {})
    pkey = view.panel_key(key, class_idx, method, layer)
    if pkey not in cache:
        if not st.button(view.RUN_LABEL, key=scoped(exp, "diagnose_whatif_run"), help=view.RUN_HELP,
                         icon=":material/science:"):
            return
        with st.spinner("Scoring the altered images…"):
            panel = what_if_panel(scorer, WhatIfRequest(diag.pixels, class_idx, heats=heats, before=before))
        cache.clear()  # one panel per session: bounded memory
        cache[pkey] = panel
    for row in view.panel_rows(cache[pkey]):
        _show_row(row)
    box_section(exp, scorer, WhatIfRequest(diag.pixels, class_idx, before=before))


def box_section(exp, scorer: Scorer, request: WhatIfRequest) -> None:
    st.markdown("**Hide a box of your own**")
    c1, c2 = st.columns([2, 3])
    with c2:
        xs = st.slider("Box, left to right", 0.0, 1.0, (0.3, 0.7), 0.01, key=scoped(exp, "diagnose_box_x"),
                       help=view.BOX_HELP)
        ys = st.slider("Box, top to bottom", 0.0, 1.0, (0.3, 0.7), 0.01, key=scoped(exp, "diagnose_box_y"),
                       help=view.BOX_HELP)
    box = view.box_from_ranges(xs, ys)
    c1.image(view.outlined(np.asarray(request.image), box), caption="Your box (blue)", width=180)
    if box is None:
        c2.info("The box is empty: widen it with the sliders.")
        return
    try:
        row = box_what_if(scorer, request, box)
    except ValueError:  # the box covers the whole film: no background left to fill it with
        c2.info(view.BOX_TOO_BIG)
        return
    c2.markdown("  \n".join(view.row_lines(row, ARCH_LABELS)))
