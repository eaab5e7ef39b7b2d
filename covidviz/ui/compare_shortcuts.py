"""The Compare page's shortcut-audit section (widgets only; tables and texts: ``views.shortcuts``)."""

from __future__ import annotations

import streamlit as st

from covidviz.runs import RunFormatError
from covidviz.views import shortcuts as view
from covidviz.views.style import arch_label


def shortcut_section(exp, archs) -> None:
    st.subheader(view.TITLE)
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
        st.table(view.audit_table(audit, arch).set_index("Class"))
    for sentence in audit.verdicts() or [view.NO_VERDICT]:
        st.markdown(f"- {sentence}")
