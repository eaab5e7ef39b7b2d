"""Glossary page: every statistic and map the app shows, in plain words, with how to read it.

A contents list at the top links every group and term; each group and term heading carries the anchor
that captions on the other pages link to (``covidviz.views.glossary.link``: ``/glossary#<anchor>``).
"""

from __future__ import annotations

import streamlit as st

from covidviz import ui
from covidviz.views import glossary


def render(_exp) -> None:
    st.title("Glossary", anchor=glossary.CONTENTS_ANCHOR)
    st.caption("What each number and picture in this app means, and how to read it. "
               "Terms are grouped by the page where you meet them most.")
    search = st.text_input("Find a term", key="glossary_search", placeholder="e.g. PPV, U-matrix, Youden")
    needle = search.strip().lower()
    if not needle:
        with st.expander("Contents", expanded=True):
            st.markdown(glossary.contents_markdown())
    for group in glossary.GROUPS:
        found = [e for e in glossary.entries(group)
                 if not needle or needle in e.term.lower() or needle in e.what.lower()]
        if not found:
            continue
        st.header(group, divider="gray", anchor=glossary.group_anchor(group))
        for e in found:
            st.subheader(e.term, anchor=glossary.slug(e.term))
            st.markdown(f"{e.what}  \n**How to read it:** {e.read}")
        st.markdown(glossary.BACK_TO_CONTENTS)


ui.run_page("Glossary", render, needs_experiment=False)
