"""The Overview's "Remedies on the same test films" section (widgets only): when other experiments in
the runs folder were scored on exactly the same test films (e.g. ``covid3``, ``covid3-lung-mask``,
``covid3-deconf`` from ``make -f experiments/Makefile remedies``), their comparison table and its plain
reading. Table and sentences: ``covidviz.views.remedies`` (also what docs/remedies.md is made from)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from covidviz.ui.cache import _stamp, load_experiment
from covidviz.ui.chrome import listed_experiments
from covidviz.views import remedies

CAPTION = ("Experiments in this folder scored on exactly the same test films with a different input "
           "(full film, lung crop, lung mask) or with source deconfounding; AUCs with patient-bootstrap 95 % CIs. "
           "*Within-source AUC*: two classes compared inside one source only; *source probe*: how well the test "
           "features tell the sources apart inside one class (lower: the model knows less about the hospital). "
           "Audit columns: test macro AUC with that region hidden. Made from what each analysis stored.")


@st.cache_data(show_spinner=False, max_entries=16)
def _table(path: str, stamps: tuple[tuple[str, int], ...]) -> tuple[list[str], pd.DataFrame | None, list[str]]:
    exp = load_experiment(path)
    others = [load_experiment(p) for p, _ in stamps if p != path]
    same = remedies.siblings(exp, others)
    if len(same) < remedies.MIN_SIBLINGS:
        return [], None, []
    return [e.name for e in same], remedies.table(same), remedies.reading(same)


def section(exp) -> None:
    """The section, or nothing when no other experiment shares this one's test films."""
    found = listed_experiments()  # the sidebar's scan of this run
    stamps = tuple(sorted((str(e.path), _stamp(e.path)) for e in found))
    names, table, reading = _table(str(exp.path), stamps)
    if table is None:
        return
    st.header("Remedies on the same test films")
    st.caption(CAPTION)
    # One table per backbone, one column per experiment (and the thumbnail baseline), one row per measure:
    # with every experiment and backbone in one table (9+ columns for four runs) the last columns were cut
    # at 1280 px; five columns wrap (tests/test_browser_clipping.py).
    base = table[table["Experiment"] == "—"]
    for backbone in [b for b in table["Backbone"].unique() if b not in set(base["Backbone"])]:
        rows = pd.concat([table[table["Backbone"] == backbone], base])
        shown = rows.drop(columns=["Experiment", "Backbone"])
        shown.index = [e if e != "—" else r for e, r in zip(rows["Experiment"], rows["Remedy"])]
        shown = shown[~shown.index.duplicated()]  # (folder names are unique)
        st.markdown(f"**{backbone}**")
        st.table(shown.T)
    with st.expander("What changed, in plain words", expanded=True):
        st.markdown("\n".join(f"- {s}" for s in reading))
