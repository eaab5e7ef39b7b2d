"""The app's chrome, drawn once per run: where experiments live, the sidebar experiment picker, the
research-use notice, the "no experiment yet" help, and ``run_page``, the one-line footer of every page."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import streamlit as st

from covidviz import runs
from covidviz.ui.cache import load_experiment
from covidviz.ui.state import CHROME_KEY, EXPERIMENT_KEY, LISTED_KEY
from covidviz.views.style import NOTICE, NOTICE_TITLE

REPO = Path(__file__).resolve().parents[2]
# A local favicon: a Material icon would be fetched from a font CDN, which fails offline (hospital networks).
FAVICON = str(REPO / "assets" / "favicon.png")
RUNS_ENV = "COVIDVIZ_RUNS"
DEMO_COMMAND = "python train.py --demo"
DEMO_NAME = "demo"                  # the demo experiment: the default when present
EXPERIMENT_PARAM = "exp"            # the URL query parameter holding the chosen experiment
PICKER_CHARS = 30                   # characters the sidebar picker shows uncut at its default width (206 px)
REAL_DATA_COMMAND = "python train.py --data csv:../shared/data/covid3 --arch densenet121 resnet50 --epochs 1"


def runs_root() -> Path:
    """Folder holding the experiments: ``$COVIDVIZ_RUNS`` if set, else ``<repo>/runs``."""
    value = os.environ.get(RUNS_ENV, "").strip()
    return Path(value).expanduser() if value else REPO / "runs"


def research_notice() -> None:
    """The persistent disclaimer, at the top of every page."""
    st.info(NOTICE, title=NOTICE_TITLE, icon=":material/info:")


def _finished(exp: runs.Experiment) -> str:
    """"2026-11-25 19:00": when the experiment was completed (created, if never); '' when unknown."""
    return str(exp.manifest.get("completed") or exp.manifest.get("created") or "").replace("T", " ")[:16]


def _experiment_label(exp: runs.Experiment, newest: bool = False) -> str:
    """The experiment as listed in the main column: "name · date", "· newest" for the newest."""
    when = _finished(exp)
    label = f"{exp.path.name} · {when}" if when else exp.path.name
    return label + (" · newest" if newest else "")


def _picker_label(name: str, newest: bool = False) -> str:
    """The experiment as the sidebar picker shows it: the name (and "· newest"), no date, which cut the
    label in the sidebar's width ("… · newes"); a long name shortened in its middle (the caption below
    gives it whole, with the chosen one's date)."""
    mark = " · newest" if newest else ""
    room = PICKER_CHARS - len(mark)
    if len(name) > room:
        name = name[: (room - 1) // 2] + "…" + name[-(room - 1 - (room - 1) // 2):]
    return name + mark


def _picker_caption(exp: runs.Experiment | None, n: int, root: Path) -> str:
    when = _finished(exp) if exp is not None else ""
    long = exp is not None and len(exp.path.name) > PICKER_CHARS - len(" · newest")
    parts = ([f"`{exp.path.name}`"] if long else []) + ([f"completed {when}"] if when else [])
    said = ", ".join(parts)
    return (said[:1].upper() + said[1:] + ". " if said else "") + f"{n} experiment(s) in `{root}`"


def default_experiment(names: list[str], url_choice: str | None) -> str | None:
    """Which experiment a new session opens: the one in the URL (a shared link), else ``demo``, else
    the only one. Never "the newest": the default must not change when another training lands."""
    if url_choice in names:
        return url_choice
    if DEMO_NAME in names:
        return DEMO_NAME
    return names[0] if len(names) == 1 else None


def _remember_choice() -> None:
    """Put the chosen experiment in the URL, so a reload or a shared link opens the same one."""
    chosen = st.session_state.get(EXPERIMENT_KEY)
    if chosen:
        st.query_params[EXPERIMENT_PARAM] = chosen
    else:
        st.query_params.pop(EXPERIMENT_PARAM, None)


def sidebar_experiment_picker() -> runs.Experiment | None:
    """Sidebar: one warning per unreadable folder, then a selectbox of experiments (newest first,
    marked, but not chosen for you).

    The choice (the experiment's folder name) lives in ``st.session_state[EXPERIMENT_KEY]`` and in the
    URL (``?exp=NAME``). Widget values of other pages are keyed per experiment (``state.scoped``), so
    nothing carries over when the choice changes.
    """
    root = runs_root()
    experiments, problems = runs.list_experiments(root)
    st.session_state[LISTED_KEY] = experiments  # this run's scan, for the page (``listed_experiments``)
    with st.sidebar:
        for problem in problems:
            st.warning(f"Skipped a folder that is not a readable experiment: {problem}", icon=":material/warning:")
        if not experiments:
            st.session_state.pop(EXPERIMENT_KEY, None)
            st.caption(f"No experiments in `{root}`.")
            return None
        by_name = {e.path.name: e for e in experiments}
        names = list(by_name)                 # newest first (runs.list_experiments)
        if st.session_state.get(EXPERIMENT_KEY) not in by_name:
            # A new session, or the chosen experiment was deleted: the URL's, demo, or the only one.
            st.session_state[EXPERIMENT_KEY] = default_experiment(names, st.query_params.get(EXPERIMENT_PARAM))
        chosen = st.selectbox("Experiment", names, key=EXPERIMENT_KEY, on_change=_remember_choice,
                              format_func=lambda n: _picker_label(n, newest=n == names[0] and len(names) > 1),
                              placeholder="Choose an experiment…",
                              help=f"Experiments found in {root} (set ${RUNS_ENV} to look elsewhere). The choice is "
                                   "kept in the page address, so a link opens the same experiment.")
        st.caption(_picker_caption(by_name.get(chosen), len(experiments), root))
    if chosen is None:
        st.query_params.pop(EXPERIMENT_PARAM, None)
        return None
    st.query_params[EXPERIMENT_PARAM] = chosen  # page switches drop the query string: put it back
    try:
        return load_experiment(by_name[chosen].path)
    except runs.RunFormatError as exc:  # deleted or replaced between the scan and the load
        st.error(str(exc))
        return None


def listed_experiments() -> list[runs.Experiment]:
    """The experiments the sidebar's picker found this run (newest first): one scan of the runs folder per
    run, not one per section that needs the list (the picker runs first on every page, ``page_setup``)."""
    listed = st.session_state.get(LISTED_KEY)
    return listed if listed is not None else runs.list_experiments(runs_root())[0]


def choose_experiment_help() -> None:
    """Experiments exist but none is chosen: say so, and list them (newest first)."""
    experiments = listed_experiments()
    st.header("Choose an experiment")
    st.markdown("Pick one in the sidebar. The app does not pick the newest for you, so what you are looking "
                "at never changes because another training finished. Found here (newest first):")
    st.markdown("\n".join(f"- {_experiment_label(e, newest=k == 0)}: {', '.join(e.labels.names)}"
                          for k, e in enumerate(experiments)))


def no_experiment_help() -> None:
    """What to run when there is nothing to show yet: the exact commands, from the repository root."""
    root = runs_root()
    out = "" if root.resolve() == (REPO / "runs").resolve() else f" --out {root}"
    st.header("No experiment yet")
    st.markdown(f"The app explores experiments written by `train.py` into `{root}`. "
                f"To create one, run this in `{REPO}` (a few minutes on a CPU):")
    st.code(DEMO_COMMAND + out, language="bash")
    st.markdown("It trains the demo experiment on synthetic chest X-ray phantoms"
                + ("" if out else " (`make demo` does the same)") + ". "
                "For the real COVID-19 / Normal / Pneumonia X-rays (DenseNet121 and ResNet50):")
    st.code(REAL_DATA_COMMAND + out, language="bash")
    st.markdown("Then reload this page.")


def app_chrome() -> runs.Experiment | None:
    """Called by ``app.py`` on every run, before the page: picker + notice, drawn once."""
    exp = sidebar_experiment_picker()
    research_notice()
    st.session_state[CHROME_KEY] = exp
    return exp


def page_setup(title: str) -> runs.Experiment | None:
    """First call of every page: the chosen experiment.

    Under ``app.py`` the router has already drawn the picker and notice this run, so the page only
    reads its choice. Run on its own (``streamlit run app_pages/x.py``) the page draws them itself.
    The flag is only ever set by ``app.py``, so a stand-alone page never skips its chrome.
    """
    if CHROME_KEY in st.session_state:
        return st.session_state[CHROME_KEY]
    st.set_page_config(page_title=f"covidviz · {title}", page_icon=FAVICON, layout="wide")
    exp = sidebar_experiment_picker()
    research_notice()
    return exp




def run_page(title: str, render: Callable[[runs.Experiment | None], None], needs_experiment: bool = True) -> None:
    """The footer of every page script: the chosen experiment, then ``render(exp)`` or the help on
    what to run when there is none yet (pages that need no experiment, e.g. the glossary, always render)."""
    exp = page_setup(title)
    if exp is None and needs_experiment:
        if st.session_state.get(EXPERIMENT_KEY) is None and listed_experiments():
            choose_experiment_help()
        else:
            no_experiment_help()
    else:
        render(exp)
