"""The Compare page's shortcut sections: "Evidence on the lungs", the shortcut audit and the source
evidence (``ui.compare_sources``) (widgets only; tables and texts: ``views.shortcuts``, ``views.sources``)."""

from __future__ import annotations

import streamlit as st

from covidviz.runs import RunFormatError
from covidviz.runs.lungs import external_lungs
from covidviz.ui.compare_cache import compare_lungs
from covidviz.ui.compare_sources import sources_section
from covidviz.views import compare
from covidviz.views import shortcuts as view
from covidviz.views.style import arch_label


def lungs_section(exp, archs, ext=None, analysis=None) -> None:
    """Per backbone and class: the share of the map's weight on the lungs, chance, the pointing game; on
    the external set ``ext`` when one is chosen and was evaluated with it, else on the test set."""
    st.subheader(view.LUNGS_TITLE)
    shares = {a: s for a in archs if ext is not None and (s := external_lungs(ext, a)) is not None}
    site = ext.name if shares else None
    if not shares:
        try:
            shares = {a: s for a, s in compare_lungs(exp).items() if a in archs}
        except RunFormatError as exc:
            st.warning(f"The stored lung-weight analysis cannot be read ({exc}); run the analysis again.",
                       icon=":material/warning:")
            return
        if ext is not None and shares:
            st.caption(_internal_only(analysis, ext, "Evidence on the lungs")
                       + f" ({ext.name} was evaluated without it: re-run `train.py evaluate` to measure it there).")
    if not shares:
        st.caption(view.LUNGS_NOT_ANALYSED.format(path=exp.path))
        return
    names = list(exp.labels.names)
    st.caption(view.lungs_caption(shares, site))
    st.table(view.lungs_table(shares, names).set_index(["Backbone", "Class"]))
    st.markdown(view.lungs_reading(shares, names))


def _internal_only(analysis, ext, what: str) -> str:
    """"<what> is on the internal test split (N images): <site> is not measured here." (N from the analysis)."""
    return compare.internal_only_caption(analysis, ext, what) if analysis is not None else \
        f"{what} is on the internal test split: {ext.name} is not measured here."


def shortcut_section(exp, archs, ext=None, analysis=None) -> None:
    """Evidence on the lungs (on ``ext`` when measured there), the shortcut audit and the source evidence
    (the internal test split only, which their captions say when ``ext`` is chosen)."""
    lungs_section(exp, archs, ext, analysis)
    audit_section(exp, archs, ext, analysis)
    sources_section(exp, archs, ext, _internal_only(analysis, ext, "The source evidence") if ext else None)


def audit_section(exp, archs, ext=None, analysis=None) -> None:
    st.subheader(view.TITLE)
    if ext is not None:
        st.caption(_internal_only(analysis, ext, "The shortcut audit"))
    try:
        audit = exp.shortcuts()
    except RunFormatError as exc:
        st.warning(f"The stored shortcut audit cannot be read ({exc}); run it again.", icon=":material/warning:")
        return
    if audit is None:
        st.caption(view.NOT_AUDITED.format(path=exp.path))
        return
    st.caption(view.caption(audit))
    for arch in [a for a in archs if a in audit.archs]:
        st.markdown(f"**{arch_label(arch)}**")
        table = view.audit_table(audit, arch).set_index("Class")
        st.table(table)
        if note := compare.below_chance_note(table):
            st.caption(note)
    for sentence in audit.verdicts() or [view.NO_VERDICT]:
        st.markdown(f"- {sentence}")
