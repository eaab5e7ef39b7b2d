"""Caches of the Diagnose page: the shared ``Predictor`` of an experiment (``st.cache_resource``, every
session) and this session's last decoded upload and prediction (``st.session_state``, one of each)."""

from __future__ import annotations

import hashlib

import streamlit as st

from covidviz import runs
from covidviz.ui.cache import _experiment, _model, _stamp
from covidviz.ui.state import UPLOAD_KEY

DIAGNOSE_CACHE = "_diagnose_cache"  # this session's last decoded image and prediction (bounded: one of each)
DECODE_FAILED = "Upload a frontal chest X-ray as PNG, JPEG or DICOM. The app keeps working: just upload another file."


@st.cache_resource(show_spinner="Loading the models…", max_entries=4)
def _diagnose_predictor(path: str, stamp: int):
    from covidviz.inference import Predictor

    exp = _experiment(path, stamp)
    # The models are the shared cached ones (one copy per backbone per process, for every session).
    return Predictor(exp, models={a: _model(path, stamp, a) for a in exp.backbones})


def diagnose_predictor(exp: runs.Experiment):
    """The shared ``covidviz.inference.Predictor`` of an experiment (models + analysis artefacts)."""
    return _diagnose_predictor(str(exp.path), _stamp(exp.path))


def _session_cache() -> dict:
    return st.session_state.setdefault(DIAGNOSE_CACHE, {})


def decode_in_session(name: str, data: bytes):
    """Decode an upload once per file, in memory only: ``(DecodedImage, digest)``, or ``(None, None)``
    after a clear message (an unreadable file, or a decoder bug: never a traceback)."""
    from covidviz.data.imageio import ImageDecodeError, decode_upload

    digest = hashlib.sha256(data).hexdigest()
    cache = _session_cache()
    if cache.get("digest") == digest:
        return cache["decoded"], digest
    try:
        decoded = decode_upload(data, name)
    except ImageDecodeError as exc:
        st.error(f"**This file cannot be used.** {exc}", icon=":material/error:")
        st.caption(DECODE_FAILED)
        return None, None
    except Exception as exc:  # noqa: BLE001 - a decoder bug must not show a traceback to the user
        st.error(f"**This file could not be read** ({type(exc).__name__}). Upload a PNG, JPEG or DICOM chest X-ray.",
                 icon=":material/error:")
        return None, None
    cache.clear()
    cache.update(digest=digest, decoded=decoded)
    return decoded, digest


def input_film(name: str, data: bytes | None, gray):
    """``(film, DecodedImage or None, digest or None)``: an upload's bytes decoded (``decode_in_session``;
    film None after its message when they cannot be), or the picked test image ``gray`` as it is."""
    if data is None:
        return gray, None, None
    decoded, digest = decode_in_session(name, data)
    return (None if decoded is None else decoded.gray), decoded, digest


def diagnosis_in_session(predictor, gray, name: str, key, busy, busy_text: str, methods, image=None):
    """The prediction of ``gray``, once per ``key`` (experiment, image, window); ``image``: the upload's
    ``DecodedImage`` for the out-of-distribution gate (None: ``gray``). While the models run,
    ``busy`` (a placeholder at the top of the page) shows ``busy_text``; it is emptied when they are done.
    Publishes the upload record (``state.UPLOAD_KEY``) for the latent-space and SOM pages."""
    cache = _session_cache()
    if cache.get("pred_key") == key:
        return cache["diagnosis"]
    try:
        with busy.status(busy_text, expanded=False):
            diag = predictor.predict(gray, name, methods=methods, image=image)
    finally:
        busy.empty()  # replaced by the results
    cache.update(pred_key=key, diagnosis=diag, heat_cache={})
    st.session_state[UPLOAD_KEY] = diag.session_record()
    return diag


def heat_cache() -> dict:
    """Heat maps of other classes than the top one, computed for this session's current prediction."""
    return _session_cache().setdefault("heat_cache", {})


def shortcut_audit(exp: runs.Experiment):
    """The experiment's shortcut audit (``runs.records.Shortcuts``), or None when it has none or it cannot
    be read (Compare says why). Read on every run: a small JSON that ``analyze --shortcuts`` may add later."""
    try:
        return exp.shortcuts()
    except (runs.RunFormatError, OSError, ValueError):
        return None
