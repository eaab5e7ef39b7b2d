"""The reading at the top of the Diagnose page (widgets only): the image's one out-of-distribution verdict
(for an OOD image with the "show anyway" toggle), then side by side the film and each backbone's heat map,
each with its top class, calibrated probability and call, what the model knows about that class (test AUC
with its CI, sensitivity and specificity at the operating point) and the shortcut audit's badge. Tiles
have a fixed width (``TILE``), so a larger screen shows more of the page below, not the same maps taller;
at 1280×800 the whole reading fits in the first screen (``tests/test_browser_diagnose.py``). Withheld
calls name no class here; calls shown at the user's request are greyed and their maps stamped.
Texts: ``covidviz.views.diagnose`` and ``views.diagnose_calls``."""

from __future__ import annotations

import streamlit as st

from covidviz.ui.diagnose_heatmaps import ShownMaps, film_png
from covidviz.ui.state import scoped
from covidviz.views import diagnose as view
from covidviz.views import diagnose_calls as calls_view
from covidviz.views.style import ARCH_LABELS, arch_label

TILE = 200   # px: the film and every heat map (a square film at 1280×800 keeps its calls on the first screen)
NOTES = 420  # px: how to read the calls, beside the tiles on a wide screen, under them on a narrow one


def verdict(exp, diag) -> bool:
    """An out-of-distribution image's verdict, once, across the page, with the "show anyway" toggle (asked
    per image); returns whether the predictions are shown (always for an image that passed, whose verdict
    ``reading`` puts under the film)."""
    key = scoped(exp, f"diagnose_show_anyway::{diag.name}")
    message = view.ood_message(diag, ARCH_LABELS, shown_anyway=bool(st.session_state.get(key)))
    if not message:
        return True
    st.warning(message, icon=":material/warning:")
    return st.toggle(view.SHOW_ANYWAY, key=key)


def reading(diag, shown: ShownMaps, calls: dict, findings: dict, show: bool, task: str) -> None:
    """The film (with a passed verdict under it), one tile per backbone and how to read the calls, side
    by side (a narrow screen wraps the notes under the tiles)."""
    with st.container(horizontal=True, gap="medium"):
        with st.container(width=TILE, gap="small"):
            st.markdown("**Film**")
            st.image(film_png(shown), width="stretch")
            if passed := view.verdict_short(diag):
                st.markdown(passed, help=view.verdict_caption(diag))
        for arch, b in diag.backbones.items():
            with st.container(width=TILE, gap="small"):
                if not show:
                    st.markdown(f"**{arch_label(arch)}**")
                    st.caption("Heat map and call withheld (see the verdict above).")
                    continue
                top = calls_view.top_call(calls[arch], b.top, task)
                caption = view.tile_caption(shown.method, shown.explained[arch], shown.explained[arch] != top["class"])
                st.markdown(f"**{arch_label(arch)}** · :grey[{caption}]")
                if shown.heats.get(arch) is None:
                    st.image(film_png(shown), width="stretch", caption="No evidence for this class: no heat drawn.")
                else:
                    st.image(shown.pngs[arch], width="stretch")
                finding = findings.get((arch, top["class"]))
                st.markdown("  \n".join(calls_view.top_call_lines(calls[arch], b.top, task, finding, greyed=diag.ood)))
        if show:
            with st.container(width=NOTES, gap="small"):
                st.caption(calls_view.reading_notes(findings, [a for a in diag.backbones]))
