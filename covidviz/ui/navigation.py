"""Navigation that never misleads: when the experiment shown is not the one the address (``?exp=``) or the
session asked for, say so above the page, naming both, until the user picks another.

``app.py`` calls ``asked_experiment`` before the sidebar picker runs (the picker rewrites the address)
and ``explain_fallback`` after it: the picker itself (``chrome.sidebar_experiment_picker``) opens the
URL's experiment when it exists, else the demo or the only one, else nothing; this module only tells.
"""

from __future__ import annotations

import streamlit as st

from covidviz import runs
from covidviz.ui.chrome import EXPERIMENT_PARAM, runs_root
from covidviz.ui.state import EXPERIMENT_KEY, FALLBACK_KEY


def asked_experiment() -> tuple[str | None, bool]:
    """(the experiment this run asks for, whether it comes from the address): on a session's first run
    the ``?exp=`` of the address, later the session's own choice (None: nothing asked)."""
    if EXPERIMENT_KEY in st.session_state:
        return st.session_state[EXPERIMENT_KEY], False
    return st.query_params.get(EXPERIMENT_PARAM), True


def fallback_text(asked: str, shown: str | None, root, from_address: bool, others: bool = True) -> str:
    """The notice when ``asked`` is not what the page shows (``shown``: the experiment opened instead,
    None when none was; ``others``: whether any experiment is left to pick)."""
    what = (f"No experiment named **{asked}** in `{root}` (the page address asks for it)" if from_address
            else f"The experiment **{asked}** is no longer in `{root}`")
    if shown:
        return f"{what}; showing **{shown}** instead."
    return f"{what}; pick one in the sidebar." if others else f"{what}."


def explain_fallback(asked: tuple[str | None, bool], exp: runs.Experiment | None) -> None:
    """After the picker: when the experiment asked for (``asked_experiment``) is not the one shown, a
    warning naming both; it stays on every page until the user picks another experiment."""
    name, from_address = asked
    shown = None if exp is None else exp.path.name
    if name and name != shown:
        others = EXPERIMENT_KEY in st.session_state  # the picker drops the key when there is none at all
        st.session_state[FALLBACK_KEY] = {"text": fallback_text(name, shown, runs_root(), from_address, others),
                                          "shown": shown}
    note = st.session_state.get(FALLBACK_KEY)
    if not isinstance(note, dict):
        return
    if note.get("shown") != shown:  # the user picked another experiment: the notice has done its job
        st.session_state.pop(FALLBACK_KEY, None)
        return
    st.warning(note["text"], icon=":material/link_off:")
