"""Small Streamlit widgets that several pages reuse."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import streamlit as st

from covidviz import runs
from covidviz.ui.cache import history, thumbnails
from covidviz.views.style import PLOTLY_CONFIG, with_modebar_room
from covidviz.views.training import CAPTION, history_frames, training_curves_figure


def plotly_chart(fig, where=st, config: dict | None = None, **kwargs):
    """``where.plotly_chart`` (``where``: ``st``, a column, the sidebar) for every chart of the app: room on
    top for the modebar (``style.with_modebar_room``) and the shared config (``style.PLOTLY_CONFIG``, updated
    by ``config``). Returns what ``plotly_chart`` returns (the selection, with ``on_select``)."""
    return where.plotly_chart(with_modebar_room(fig), config={**PLOTLY_CONFIG, **(config or {})}, **kwargs)


def show_thumbnails(exp: runs.Experiment, rows: Sequence[int], captions: Sequence[str] | None = None,
                    width: int = 96) -> None:
    """Thumbnails of the given images.parquet rows in one wrapping strip (never re-reads originals)."""
    thumbs = thumbnails(exp)
    rows = [int(r) for r in rows]
    if not rows:
        st.caption("No images.")
        return
    st.image([np.asarray(thumbs[r]) for r in rows], caption=list(captions) if captions else None, width=width)


def training_curves(exp: runs.Experiment, archs: Sequence[str] | None = None, key: str | None = None) -> None:
    """The "Training curves" section (one figure, ``views.training``) for the given backbones."""
    st.header("Training curves")
    archs = list(archs or exp.backbones)
    frames = history_frames({a: history(exp, a) for a in archs})
    if not frames:
        st.info("No training history recorded.")
        return
    st.caption(CAPTION)
    if max(len(h) for h in frames.values()) == 1:
        st.caption("Trained for a single epoch, so each curve is a single point.")
    fig = training_curves_figure(frames, {a: exp.record(a).get("best_epoch") for a in archs}, list(exp.backbones))
    plotly_chart(fig, width="stretch", key=key)
