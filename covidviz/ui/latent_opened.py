"""The latent-space page's opened image (full size, each backbone's CAM and its probabilities) and the
notice about the Diagnose page's image with its neighbours' button. Widgets only: what they say is
``covidviz.views.latent_selection``'s and ``covidviz.views.image_name``'s."""

from __future__ import annotations

import numpy as np
import streamlit as st

from covidviz.ui.cache import thumbnails
from covidviz.ui.latent_cache import latent_detail, latent_points
from covidviz.views import latent_selection as selection
from covidviz.views.style import arch_label


def opened_image(exp, opts: dict, row: int, note: str | None, close_key: str) -> bool:
    """Draw images.parquet ``row`` opened: its header (``note`` under it: where it was opened from), the
    film, each shown backbone's CAM and the probabilities. Returns True when the user closed it."""
    images, names, archs = exp.images(), list(exp.labels.names), opts["shown"]
    rec = images.iloc[row]
    st.header(f"Image {rec['image_id']}")
    st.markdown(selection.detail_meta(rec) + (f"  \n:grey[{note}]" if note else ""))
    cls_idx = names.index(opts["cls"]) if opts.get("cls") else None
    probs = selection.probability_table({arch_label(a): latent_points(exp, a)[1][row] for a in archs}, names)
    cols = st.columns([2] + [2] * len(archs) + [3])
    details = {a: latent_detail(exp, a, row, cls_idx) for a in archs}
    gray = next((d[0] for d in details.values() if d[0] is not None), None)
    with cols[0]:
        if gray is not None:
            st.image(gray, caption=f"Original ({gray.shape[1]}×{gray.shape[0]})", width="stretch")
        else:
            st.image(np.asarray(thumbnails(exp)[row]), caption="Thumbnail (64×64)", width="stretch")
    for k, a in enumerate(archs):
        _, problem, p, heat = details[a]
        with cols[k + 1]:
            if heat is not None:
                st.image(heat, caption=f"{arch_label(a)} CAM for {selection.explained_class(names, cls_idx, p)}",
                         width="stretch")
            else:
                st.caption(problem)
    with cols[-1]:
        st.html(selection.table_html(probs, "latent-probs", "{:.3f}"))
        st.caption(f"Heatmaps: CAM of {opts['cls'] or 'its top class'}; red = the regions that raised that class's "
                   "score most.")
    return st.button("Close image", key=close_key)


def upload_notice(record: dict | None, archs: list[str], notice, button_key: str) -> np.ndarray | None:
    """The notice about the Diagnose page's image on the maps (``notice``: ``views.latent.upload_notice``'s
    (text, neighbour rows) or None) and a button selecting exactly the neighbours it rings; returns
    those rows when the button was pressed."""
    if notice is None:
        return None
    text, rows = notice
    st.info(text, icon=":material/star:")
    counts = selection.neighbour_counts(record, archs)
    if len(rows) and st.button(selection.neighbours_button(counts, len(rows)), key=button_key):
        return rows
    return None
