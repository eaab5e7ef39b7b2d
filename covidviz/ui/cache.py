"""Cached loaders shared by every session: experiments, their tables, models and page artefacts.

``Experiment`` objects and models live in ``st.cache_resource`` (one shared object, never copied),
tables in ``st.cache_data``. Every key holds the experiment folder *and* its manifest's modification
time, so re-training into the same name (``--overwrite``) or re-analysing is picked up without a
restart. What is computed here is computed by ``covidviz.views``; this module only caches it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from covidviz import runs
from covidviz.views import overview as overview_view


def _stamp(path: str | Path) -> int:
    """Manifest modification time: part of every cache key, so a re-trained experiment is re-read."""
    try:
        return (Path(path) / runs.MANIFEST).stat().st_mtime_ns
    except OSError:
        return 0


# ---------------------------------------------------------------- cached loaders

@st.cache_resource(show_spinner=False, max_entries=32)
def _experiment(path: str, stamp: int) -> runs.Experiment:
    return runs.read_experiment(path)


def load_experiment(path: str | Path) -> runs.Experiment:
    """The shared ``Experiment`` for a folder (its lazily read tables are shared by all sessions)."""
    return _experiment(str(path), _stamp(path))


@st.cache_data(show_spinner=False, max_entries=32)
def _images(path: str, stamp: int) -> pd.DataFrame:
    return _experiment(path, stamp).images()


def images_table(exp: runs.Experiment) -> pd.DataFrame:
    """images.parquet of an experiment (a private copy: callers may modify it)."""
    return _images(str(exp.path), _stamp(exp.path))


@st.cache_data(show_spinner=False, max_entries=64)
def _predictions(path: str, stamp: int, arch: str) -> pd.DataFrame:
    return _experiment(path, stamp).predictions(arch)


def predictions_table(exp: runs.Experiment, arch: str) -> pd.DataFrame:
    return _predictions(str(exp.path), _stamp(exp.path), arch)


@st.cache_data(show_spinner=False, max_entries=64)
def _history(path: str, stamp: int, arch: str) -> list[dict]:
    return _experiment(path, stamp).history(arch)


def history(exp: runs.Experiment, arch: str) -> list[dict]:
    return _history(str(exp.path), _stamp(exp.path), arch)


@st.cache_resource(show_spinner=False, max_entries=8)
def _thumbnails(path: str, stamp: int) -> np.ndarray:
    return _experiment(path, stamp).thumbnails()


def thumbnails(exp: runs.Experiment) -> np.ndarray:
    """(N, 64, 64) uint8 thumbnails, memory-mapped and row-aligned with ``images_table``."""
    return _thumbnails(str(exp.path), _stamp(exp.path))


@st.cache_resource(show_spinner="Loading model…", max_entries=8)
def _model(path: str, stamp: int, arch: str):
    return _experiment(path, stamp).load_model(arch)


def load_model(exp: runs.Experiment, arch: str):
    """The best-validation model in eval mode; one copy per process (models are large)."""
    return _model(str(exp.path), _stamp(exp.path), arch)


@st.cache_data(show_spinner=False, max_entries=32)
def _dataset_tables(path: str, stamp: int) -> dict:
    exp = _experiment(path, stamp)
    return overview_view.dataset_tables(exp.images(), exp.labels)


@st.cache_data(show_spinner=False, max_entries=32)
def _examples(path: str, stamp: int, split: str, per_label: int) -> dict[str, tuple[list[int], int]]:
    exp = _experiment(path, stamp)
    return overview_view.example_rows(exp.images(), exp.labels, split, per_label)


def example_rows(exp: runs.Experiment, split: str = "test", per_label: int = 8) -> dict[str, tuple[list[int], int]]:
    """Label -> (first ``per_label`` images.parquet rows of ``split`` with that label, how many there are)."""
    return _examples(str(exp.path), _stamp(exp.path), split, per_label)


def dataset_tables(exp: runs.Experiment) -> dict:
    """Dataset-card tables ``label_split``, ``patients``, ``source_label`` and ``leaked_patients``."""
    return _dataset_tables(str(exp.path), _stamp(exp.path))
