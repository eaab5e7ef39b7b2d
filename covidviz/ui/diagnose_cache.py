"""Cached loaders of the Diagnose page (shared by every session; keyed like ``ui.cache``)."""

from __future__ import annotations

import streamlit as st

from covidviz import runs
from covidviz.ui.cache import _experiment, _model, _stamp


@st.cache_resource(show_spinner="Loading the models…", max_entries=4)
def _diagnose_predictor(path: str, stamp: int):
    from covidviz.inference import Predictor

    exp = _experiment(path, stamp)
    # The models are the shared cached ones (one copy per backbone per process, for every session).
    return Predictor(exp, models={a: _model(path, stamp, a) for a in exp.backbones})


def diagnose_predictor(exp: runs.Experiment):
    """The shared ``covidviz.inference.Predictor`` of an experiment (models + analysis artefacts)."""
    return _diagnose_predictor(str(exp.path), _stamp(exp.path))
