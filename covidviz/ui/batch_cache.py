"""The Batch page's session cache: the last scored batch of this session (``st.session_state``, one), so
that picking rows for the contact sheet or downloading never scores the files again. Uploads are read in
memory (``covidviz.batch.sources_from_bytes``); nothing is written to disk. The scorer is the Diagnose
page's shared ``Predictor`` (``diagnose_predictor``): the same models, the same verdict."""

from __future__ import annotations

import streamlit as st

from covidviz import batch, runs
from covidviz.ui.cache import _stamp
from covidviz.ui.diagnose_cache import diagnose_predictor, shortcut_audit
from covidviz.views import batch as view
from covidviz.views.reliability import shortcut_findings

BATCH_CACHE = "_batch_cache"  # {"key": ..., "run": views.batch.BatchRun}: this session's last batch


def batch_key(exp: runs.Experiment, uploads) -> tuple:
    return view.upload_key(exp.path, _stamp(exp.path), [(f.file_id, f.name, f.size) for f in uploads])


def batch_in_session(exp: runs.Experiment, uploads) -> view.BatchRun:
    """Score ``uploads`` (Streamlit ``UploadedFile``s) once per set of files and experiment, with a
    progress bar while the models run; later reruns get the stored ``BatchRun``. Raises what loading the
    models raises (the page says so)."""
    key = batch_key(exp, uploads)
    cached = st.session_state.get(BATCH_CACHE)
    if isinstance(cached, dict) and cached.get("key") == key:
        return cached["run"]
    st.session_state.pop(BATCH_CACHE, None)  # one batch per session: free the last before scoring the next
    scorer = batch.BatchPredictor(diagnose_predictor(exp))
    with batch.sources_from_bytes(((f.name, f.getvalue()) for f in uploads), **view.ZIP_LIMITS) as inputs:
        view.cap_sources(inputs)
        total, done = max(1, len(inputs.sources)), 0
        bar = st.progress(0.0, text=view.progress_text(0, total, scorer.archs))

        def progress(n: int) -> None:
            nonlocal done
            done += n
            bar.progress(min(1.0, done / total), text=view.progress_text(done, total, scorer.archs))

        result = scorer.run(inputs, progress)
        bar.empty()
        # The shortcut audit's findings, as Diagnose shows them beside the affected class's calls.
        run = view.BatchRun(scorer, result.rows, result.bad, inputs.ignored, shortcut_findings(shortcut_audit(exp)))
    st.session_state[BATCH_CACHE] = {"key": key, "run": run}
    return run
