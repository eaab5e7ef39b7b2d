"""The Compare page's source section: how the experiment was trained against the source, the source
probe and the within-source AUCs (widgets only; tables and sentences: ``views.sources``)."""

from __future__ import annotations

import streamlit as st

from covidviz.runs import RunFormatError
from covidviz.ui.compare_cache import compare_sources
from covidviz.views import sources as view
from covidviz.views.compare import below_chance_note


def sources_section(exp, archs, ext=None, internal_caption: str | None = None) -> None:
    """Always on the internal test set (an external set has no stored features per source); with ``ext``
    chosen, ``internal_caption`` says so."""
    st.subheader(view.PROBE_TITLE)
    if text := view.deconfound_text(exp.info.deconfound):
        st.markdown(text)
    try:
        ev = compare_sources(exp)
    except RunFormatError as exc:
        st.warning(f"The stored source evidence cannot be read ({exc}); run the analysis again.",
                   icon=":material/warning:")
        return
    if ev is None:
        st.caption(view.NOT_ANALYSED.format(path=exp.path))
        return
    if len(ev.sources) < 2:
        st.caption(view.NO_SOURCES)
        return
    archs = [a for a in archs if a in ev.models]
    if ext is not None:
        st.caption(internal_caption or f"On the internal test split: {ext.name} is not measured here.")
    st.caption(view.probe_caption(ev))
    st.table(view.probe_table(ev, archs).set_index("Class"))
    for sentence in view.probe_sentences(ev, archs):
        st.markdown(f"- {sentence}")
    st.subheader(view.WITHIN_TITLE)
    st.caption(view.within_caption(ev))
    table = view.within_table(ev, archs)
    if len(table):
        st.table(table.set_index(["Source", "Classes"]))
        if note := below_chance_note(table):
            st.caption(note)
    for sentence in view.within_sentences(ev, archs):
        st.markdown(f"- {sentence}")
