"""Small Streamlit widgets that several pages reuse."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import streamlit as st

from covidviz import runs
from covidviz.ui.cache import thumbnails


def show_thumbnails(exp: runs.Experiment, rows: Sequence[int], captions: Sequence[str] | None = None,
                    width: int = 96) -> None:
    """Thumbnails of the given images.parquet rows in one wrapping strip (never re-reads originals)."""
    thumbs = thumbnails(exp)
    rows = [int(r) for r in rows]
    if not rows:
        st.caption("No images.")
        return
    st.image([np.asarray(thumbs[r]) for r in rows], caption=list(captions) if captions else None, width=width)
