"""Caches of the Diagnose page: the shared ``Predictor`` of an experiment (``st.cache_resource``, every
session), loaded and warmed up as Diagnose or Batch opens, and this session's last decoded upload and
prediction (``st.session_state``, one of each)."""

from __future__ import annotations

import hashlib
import logging

import streamlit as st

from covidviz import runs
from covidviz.ui.cache import _experiment, _model, _stamp
from covidviz.ui.state import UPLOAD_KEY
from covidviz.views import example_image as example_view
from covidviz.views import image_name

log = logging.getLogger(__name__)
DIAGNOSE_CACHE = "_diagnose_cache"  # this session's last decoded image and prediction (bounded: one of each)
DECODE_FAILED = "Upload a frontal chest X-ray as PNG, JPEG or DICOM. The app keeps working: just upload another file."


def loading_text(exp: runs.Experiment) -> str:
    """The busy line while an experiment's models load (the first open of Diagnose or Batch in the process)."""
    return f"Loading the models of {exp.name}…"


def _warm_decoder() -> None:
    """Decode one small PNG: the first upload's decoder imports and set-up, paid while the page opens."""
    import io

    import numpy as np
    from PIL import Image

    from covidviz.data.imageio import decode_upload

    buf = io.BytesIO()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(buf, format="PNG")
    decode_upload(buf.getvalue(), "warm-up.png")


@st.cache_resource(show_spinner=False, max_entries=4)
def _diagnose_predictor(path: str, stamp: int):
    from covidviz.inference import Predictor

    exp = _experiment(path, stamp)
    # The models are the shared cached ones (one copy per backbone per process, for every session).
    predictor = Predictor(exp, models={a: _model(path, stamp, a) for a in exp.backbones})
    try:  # one prediction now, so that the first upload of every session is as fast as the next
        seconds = predictor.warm_up()
        _warm_decoder()
        log.info("models of %s warmed up in %.1f s", exp.name, seconds)
    except Exception as exc:  # noqa: BLE001 - a failed warm-up only costs speed; the upload will say what fails
        log.warning("warm-up of %s failed (%s: %s); the first upload will be slower", exp.name, type(exc).__name__, exc)
    return predictor


def diagnose_predictor(exp: runs.Experiment):
    """The shared ``covidviz.inference.Predictor`` of an experiment (models + analysis artefacts), loaded
    and warmed up once per process (``Predictor.warm_up``); while that runs, ``loading_text`` shows where
    this is called (Diagnose and Batch call it as they open). Raises what loading the models raises."""
    with st.spinner(loading_text(exp), show_time=True):
        return _diagnose_predictor(str(exp.path), _stamp(exp.path))


@st.cache_data(show_spinner=False, max_entries=16)
def _typical_rows(path: str, stamp: int) -> list[int]:
    return example_view.typical_rows(_experiment(path, stamp))


@st.cache_data(show_spinner=False, max_entries=256)
def _film_passes(path: str, stamp: int, row: int) -> bool | None:
    from covidviz.data.imageio import ImageDecodeError, read_image

    try:
        gray = read_image(_experiment(path, stamp).images()["path"].iloc[row])
    except (ImageDecodeError, OSError, KeyError, ValueError):
        return None
    return example_view.passes_gate(gray)


def example_test_row(exp: runs.Experiment, offered) -> int | None:
    """The test image the picker opens on: among ``offered`` rows, the most typical one that the
    out-of-distribution verdict passes (``views.example_image``); None: keep the picker's first."""
    path, stamp = str(exp.path), _stamp(exp.path)
    return example_view.example_row(_typical_rows(path, stamp), offered, lambda r: _film_passes(path, stamp, int(r)))


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


def diagnosis_in_session(predictor, gray, name: str, key, busy, busy_text: str, methods, image=None,
                         source: str = image_name.UPLOAD):
    """The prediction of ``gray``, once per ``key`` (experiment, image, window); ``image``: the upload's
    ``DecodedImage`` for the out-of-distribution gate (None: ``gray``). While the models run,
    ``busy`` (a placeholder at the top of the page) shows ``busy_text``; it is emptied when they are done.
    Publishes the upload record (``state.UPLOAD_KEY``) for the latent-space and SOM pages, with its
    ``source`` (``views.image_name``: an upload, a test image or an external set's image)."""
    cache = _session_cache()
    if cache.get("pred_key") == key:
        return cache["diagnosis"]
    try:
        with busy.status(busy_text, expanded=False):
            diag = predictor.predict(gray, name, methods=methods, image=image)
    finally:
        busy.empty()  # replaced by the results
    cache.update(pred_key=key, diagnosis=diag, heat_cache={})
    st.session_state[UPLOAD_KEY] = {**diag.session_record(), "source": source}  # how other pages name it
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
