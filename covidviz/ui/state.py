"""Session-state keys shared between pages, defined once.

Page-private keys stay in their page; these are the ones two places read or write.
"""

import streamlit as st

EXPERIMENT_KEY = "experiment"      # the chosen experiment (its folder name), set by the sidebar picker
CHROME_KEY = "_covidviz_chrome"    # set by app.py: a page must not draw the chrome a second time
FALLBACK_KEY = "_covidviz_fallback"  # the notice that the experiment shown is not the one asked for
LISTED_KEY = "_covidviz_listed"    # the experiments the sidebar picker found this run (chrome.listed_experiments)
UPLOAD_KEY = "upload"              # the Diagnose page's last prediction (inference.Diagnosis.session_record)


def upload_for(exp) -> dict | None:
    """The Diagnose page's upload record if it belongs to ``exp`` (else None: another experiment's)."""
    up = st.session_state.get(UPLOAD_KEY)
    if not isinstance(up, dict) or up.get("experiment") not in (exp.name, exp.path.name, str(exp.path)):
        return None
    return up


def scoped(exp, name: str) -> str:
    """A widget key private to one experiment: no widget value survives a switch of experiment
    (a prevalence set for nih14 must not be read as COVID-19's on the demo)."""
    return f"{exp.path.name}::{name}"
