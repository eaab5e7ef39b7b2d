"""External test sets in the app: cached loaders (keyed like ``ui.cache``, plus each set's own stamp, so
a set re-evaluated under the same name is re-read) and the widgets that several pages share (the
Compare page's "Test set" choice and internal-vs-external table, the maps'
"External sets" filter). What is shown is computed by ``covidviz.views.external``."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from covidviz import runs
from covidviz.runs.external import ExternalSet, external_root, list_external
from covidviz.ui.cache import _experiment, _stamp
from covidviz.ui.state import scoped
from covidviz.views import compare as compare_view
from covidviz.views import external as view
from covidviz.views.style import arch_label

WARN = ":material/warning:"


def sets_stamp(exp_path: str | Path) -> tuple:
    """(folder name, metrics.json mtime) of every folder under ``external/``: a new, replaced or broken
    set changes it (a few stat calls, no reading)."""
    root = external_root(exp_path)
    if not root.is_dir():
        return ()
    out = []
    for child in sorted(root.iterdir()):
        try:
            out.append((child.name, (child / "metrics.json").stat().st_mtime_ns))
        except OSError:
            out.append((child.name, 0))
    return tuple(out)


def site_stamp(exp_path: str | Path, site: str) -> int:
    """metrics.json modification time of one set (written last, when the set is replaced)."""
    return dict(sets_stamp(exp_path)).get(site, 0)


@st.cache_data(show_spinner=False, max_entries=32)
def _external_sets(path: str, stamp: int, ext_stamp: tuple) -> tuple[list[ExternalSet], list[str]]:
    return list_external(path)


def external_sets(exp: runs.Experiment) -> tuple[list[ExternalSet], list[str]]:
    """The experiment's readable external sets (by name) and one message per broken folder."""
    return _external_sets(str(exp.path), _stamp(exp.path), sets_stamp(exp.path))


def external_set(exp: runs.Experiment, site: str | None) -> ExternalSet | None:
    return view.find_set(external_sets(exp)[0], site)


@st.cache_resource(show_spinner=False, max_entries=16)
def _site_arrays(path: str, stamp: int, site: str, stamp_site: int):
    ext = view.find_set(list_external(path)[0], site)
    if ext is None:
        return None
    labels = _experiment(path, stamp).labels
    onehot, probs = view.site_arrays(ext.images(), {a: ext.predictions(a) for a in ext.archs}, labels)
    for arr in (onehot, *probs.values()):
        arr.setflags(write=False)
    return onehot, probs


def site_arrays(exp: runs.Experiment, site: str):
    """(one-hot, arch -> probabilities) of an external set's images: shared, read-only; None if gone."""
    return _site_arrays(str(exp.path), _stamp(exp.path), site, site_stamp(exp.path, site))


@st.cache_resource(show_spinner=False, max_entries=16)
def _site_images(path: str, stamp: int, site: str, stamp_site: int):
    ext = view.find_set(list_external(path)[0], site)
    if ext is None:
        return None
    return ext.images(), ext.thumbnails()


def site_images(exp: runs.Experiment, site: str):
    """(images table, (M, 64, 64) thumbnails) of an external set: shared, read only; None if gone."""
    return _site_images(str(exp.path), _stamp(exp.path), site, site_stamp(exp.path, site))


@st.cache_data(show_spinner=False, max_entries=32)
def _training_sources(path: str, stamp: int) -> list[str]:
    return compare_view.image_sources(_experiment(path, stamp).images(), "train")


def shared_sources(exp: runs.Experiment, ext: ExternalSet) -> None:
    """Warns when the chosen external set ``ext`` has images from the training hospitals (its images'
    sources against the training images'), and says so when its images carry no source."""
    images = (site_images(exp, ext.name) or (None,))[0]
    external = [] if images is None else compare_view.image_sources(images)
    if not external:
        st.caption(compare_view.no_source_text(ext.name))
    elif text := compare_view.shared_sources_text(_training_sources(str(exp.path), _stamp(exp.path)), external):
        st.warning(text, icon=WARN)


# ---------------------------------------------------------------- widgets

def test_set_choice(exp: runs.Experiment, analysis, archs: list[str]) -> tuple:
    """The Compare page's "Test set" selector (only when the experiment has external sets): (the chosen
    external set or None for the internal test split, backbones shown, what the curves and the per-class
    table read: ``views.external.test_source``)."""
    sets, problems = external_sets(exp)
    if text := view.problems_text(problems):
        st.warning(text, icon=WARN)
    if not sets:
        return None, *view.test_source(analysis, archs, None)
    chosen = st.selectbox("Test set", view.test_set_options(sets), format_func=view.test_set_label,
                          key=scoped(exp, "cmp_test_set"), help=view.TEST_SET_HELP)
    ext = view.find_set(sets, chosen)
    if ext is not None:
        st.caption(view.site_caption(ext))
        shared_sources(exp, ext)
    return ext, *view.test_source(analysis, archs, ext)


def internal_vs_external(exp: runs.Experiment, analysis, archs: list[str], ext: ExternalSet | None) -> None:
    """The Compare page's "Internal vs external" table of the chosen external set (nothing for internal)."""
    if ext is None:
        return
    st.header(f"Internal vs external: {ext.name}")
    st.caption(view.DROP_CAPTION)
    if missing := [arch_label(a) for a in archs if a not in ext.archs]:
        st.info(f"{', '.join(missing)} not scored on {ext.name}: re-run `{view.ADD_COMMAND}`.")
    table = view.internal_vs_external(analysis, ext, archs, list(exp.labels.names))
    st.table(table)
    if note := compare_view.below_chance_note(table):
        st.caption(note)


def sets_filter(exp: runs.Experiment, key: str, where=st, shown: bool = True) -> list[str]:
    """A multiselect of the external sets to show on the maps (all by default, none with ``shown=False``;
    no widget when there are none)."""
    names = [s.name for s in external_sets(exp)[0]]
    if not names:
        return []
    return where.multiselect("External sets", names, default=names if shown else [], key=scoped(exp, key),
                             placeholder="None shown",
                             help="Images of other hospitals placed on the stored maps (nothing refitted), drawn "
                                  "as outlined diamonds.")
