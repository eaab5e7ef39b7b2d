"""The Diagnose page's "Test this explanation" panel (widgets only): run the occlusion what-ifs of
``covidviz.cam.whatif`` for the shown image and the explained class on every backbone, once per
(image, class, map) in this session, plus a box of the user's own (two range sliders) rescored with its
random band as it moves (once per box). Shown as ONE summary line, ONE chart, the contradictions between
conditions, the box's sliders and, in a closed expander, the sentences condition by condition. Texts,
chart and reading: ``covidviz.views.whatif``."""

from __future__ import annotations

import streamlit as st

from covidviz.cam.whatif import RANDOM_DRAWS, Scorer, WhatIfRequest, box_what_if, what_if_panel
from covidviz.ui.diagnose_cache import _session_cache
from covidviz.ui.state import scoped
from covidviz.ui.widgets import plotly_chart
from covidviz.views import whatif as view
from covidviz.views.diagnose import SHOWN_ANYWAY


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
        slot = st.empty()  # the button goes once the panel is there
        if not slot.button(view.RUN_LABEL, key=scoped(exp, "diagnose_whatif_run"), help=view.RUN_HELP,
                           icon=":material/science:"):
            return
        with st.spinner("Scoring the altered images…"):
            panel = what_if_panel(scorer, WhatIfRequest(diag.pixels, class_idx, heats=heats, before=before))
        slot.empty()
        cache.clear()  # one panel per session: bounded memory
        cache[pkey] = panel
    summary, chart, flags = st.container(), st.container(), st.container()  # filled once the box is scored
    box, row = box_section(exp, scorer, WhatIfRequest(diag.pixels, class_idx, before=before), pkey)
    reading = view.read_panel(cache[pkey], row)
    if diag.ood:  # the page runs this only when shown: an OOD image is here at the user's request
        summary.markdown(SHOWN_ANYWAY)
    summary.markdown(reading.summary())
    plotly_chart(reading.figure(box, shown_anyway=diag.ood), where=chart, width="stretch",
                 key=scoped(exp, "diagnose_whatif_chart"))
    chart.caption(view.CHART_NOTE)
    said = reading.flags()
    if said:
        flags.warning("  \n".join(said), icon=":material/compare_arrows:")
    # keyed and state-tracked: an unkeyed expander is identified by its place on the page and came back
    # closed after the box was moved and rescored (seen in CI); the tracked one keeps the reader's choice
    with st.expander(view.SENTENCES_LABEL, expanded=False, key=scoped(exp, "diagnose_whatif_sentences"),
                     on_change="rerun"):
        for text in reading.sentences():
            st.markdown(text)


def box_section(exp, scorer: Scorer, request: WhatIfRequest, pkey) -> tuple[dict | None, object]:
    """The user's box: two range sliders side by side; returns (the box, its scored row), the row None when
    the box is empty or covers the whole film (said in one line). Scored once per box and panel."""
    st.markdown("**Hide a box of your own** (outlined in yellow on the thumbnails)")
    c1, c2 = st.columns(2)
    xs = c1.slider("Box, left to right", 0.0, 1.0, (0.3, 0.7), 0.01, key=scoped(exp, "diagnose_box_x"),
                   help=view.BOX_HELP)
    ys = c2.slider("Box, top to bottom", 0.0, 1.0, (0.3, 0.7), 0.01, key=scoped(exp, "diagnose_box_y"),
                   help=view.BOX_HELP)
    box = view.box_from_ranges(xs, ys)
    if box is None:
        st.info("The box is empty: widen it with the sliders.")
        return None, None
    cache = _session_cache().setdefault("whatif_box", {})
    bkey = (pkey, tuple(sorted(box.items())))
    if bkey not in cache:
        try:
            row = box_what_if(scorer, request, box, draws=RANDOM_DRAWS)
        except ValueError:  # the box covers the whole film: no background left to fill it with
            st.info(view.BOX_TOO_BIG)
            return box, None
        cache.clear()  # one box per session
        cache[bkey] = row
    return box, cache[bkey]
