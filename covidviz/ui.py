"""Shared Streamlit plumbing for ``app.py`` and ``app_pages/``: the only library module importing streamlit.

It holds three kinds of things, so that every page stays a short script:

- cached loaders: ``Experiment`` objects and models live in ``st.cache_resource`` (one shared object,
  never copied), tables in ``st.cache_data``. Both are keyed by the experiment folder *and* its
  manifest's modification time, so re-training into the same name (``--overwrite``) is picked up
  without restarting the app;
- the shared chrome: the sidebar experiment picker, the research notice, the "no experiment yet" help;
- small widgets and display helpers that several pages reuse (thumbnails, colours, number formats).

Pure table helpers (counts per class and split, ...) are plain pandas and carry no streamlit calls,
so they can be unit-tested without a script run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import streamlit as st

from covidviz import runs
from covidviz.data.labels import MULTILABEL, LabelSpace, split_labels
from covidviz.data.table import SPLITS

REPO = Path(__file__).resolve().parents[1]
RUNS_ENV = "COVIDVIZ_RUNS"
EXPERIMENT_KEY = "experiment"          # st.session_state key of the chosen experiment (its folder name)
_CHROME_KEY = "_covidviz_chrome"        # set by app.py: the page must not draw the chrome a second time

NOTICE_TITLE = "For research and education only — not for clinical diagnosis."
NOTICE = ("These models were trained on limited, possibly biased public data and have not been "
          "validated for patient care. Do not use their outputs to diagnose, treat or triage anyone.")
DEMO_COMMAND = "python train.py --demo"
REAL_DATA_COMMAND = "python train.py --data csv:../shared/data/covid3 --arch densenet121 resnet50 --epochs 1"
NO_FINDING = "No finding"

# Okabe-Ito: distinguishable with the common colour-vision deficiencies and in grayscale print.
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
ARCH_LABELS = {"densenet121": "DenseNet121", "resnet50": "ResNet50", "tinycnn": "Tiny CNN (test model)"}
SPLIT_LABELS = {"train": "Train", "val": "Validation", "test": "Test"}


# ---------------------------------------------------------------- where experiments live

def runs_root() -> Path:
    """Folder holding the experiments: ``$COVIDVIZ_RUNS`` if set, else ``<repo>/runs``."""
    value = os.environ.get(RUNS_ENV, "").strip()
    return Path(value).expanduser() if value else REPO / "runs"


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
    images = exp.images()
    return {"label_split": label_split_counts(images, exp.labels),
            "patients": patients_per_split(images),
            "source_label": source_label_counts(images, exp.labels),
            "leaked_patients": leaked_patients(images)}


@st.cache_data(show_spinner=False, max_entries=32)
def _examples(path: str, stamp: int, split: str, per_label: int) -> dict[str, tuple[list[int], int]]:
    exp = _experiment(path, stamp)
    f = _findings(exp.images())
    f = f[f["split"] == split]
    return {name: (list(f.index[f["finding"] == name][:per_label]), int((f["finding"] == name).sum()))
            for name in _label_order(exp.labels)}


def example_rows(exp: runs.Experiment, split: str = "test", per_label: int = 8) -> dict[str, tuple[list[int], int]]:
    """Label -> (first ``per_label`` images.parquet rows of ``split`` with that label, how many there are)."""
    return _examples(str(exp.path), _stamp(exp.path), split, per_label)


def dataset_tables(exp: runs.Experiment) -> dict:
    """Dataset-card tables ``label_split``, ``patients``, ``source_label`` and ``leaked_patients``."""
    return _dataset_tables(str(exp.path), _stamp(exp.path))


# ---------------------------------------------------------------- pure table helpers (no streamlit)

def _findings(images: pd.DataFrame) -> pd.DataFrame:
    """One row per (image, finding); images without a finding get ``NO_FINDING``."""
    df = images[["image_id", "split", "source", "dataset", "patient_id"]].copy()
    df["finding"] = [split_labels(c) or [NO_FINDING] for c in images["labels"]]
    return df.explode("finding")


def _label_order(labels: LabelSpace) -> list[str]:
    return list(labels.names) + ([NO_FINDING] if labels.task == MULTILABEL else [])


def label_split_counts(images: pd.DataFrame, labels: LabelSpace) -> pd.DataFrame:
    """Images per class x split (multi-label: positives per finding, a 'No finding' row and an
    'Images' row, since one image can count for several findings)."""
    f = _findings(images)
    table = pd.crosstab(f["finding"], f["split"]).reindex(index=_label_order(labels), columns=list(SPLITS),
                                                           fill_value=0)
    if labels.task == MULTILABEL:
        per_split = images["split"].value_counts().reindex(list(SPLITS), fill_value=0)
        table.loc["Images"] = per_split.to_numpy()
    table["All"] = table.sum(axis=1)
    table.index.name, table.columns.name = "Class", None
    return table.rename(columns=SPLIT_LABELS).astype(int)


def patients_per_split(images: pd.DataFrame) -> pd.DataFrame:
    """Distinct patients and images per split."""
    out = pd.DataFrame({
        "Patients": images.groupby("split")["patient_id"].nunique(),
        "Images": images.groupby("split").size(),
    }).reindex(list(SPLITS), fill_value=0).astype(int)
    out.index = [SPLIT_LABELS[s] for s in out.index]
    return out


def leaked_patients(images: pd.DataFrame) -> int:
    """Patients with images in more than one split (must be 0: leakage inflates test metrics)."""
    return int((images.groupby("patient_id")["split"].nunique() > 1).sum())


def source_label_counts(images: pd.DataFrame, labels: LabelSpace) -> pd.DataFrame:
    """Images per class (rows) x source (columns): a class that comes from one source only lets a
    model learn the source (scanner, hospital, text markers) instead of the disease."""
    f = _findings(images)
    src = f["source"].where(f["source"].astype(str).str.len() > 0, f["dataset"])
    table = pd.crosstab(f["finding"], src.rename("Source"))
    table = table.reindex(index=[c for c in _label_order(labels) if c in table.index], fill_value=0)
    table.index.name, table.columns.name = "Class", None
    return table.astype(int)


def source_confounding(table: pd.DataFrame, dominant: float = 0.8, elsewhere: float = 0.2) -> list[str]:
    """Plain-language warnings from a class x source table (``source_label_counts``).

    Flags a class when one source supplies at least ``dominant`` of its images but at most
    ``elsewhere`` of the other classes' images: then "which hospital" predicts the class, and a model
    can score a high AUC without looking at the lungs (the classic COVID-19 dataset pitfall).
    """
    if table.shape[1] < 2:
        return []
    notes = []
    for cls, row in table.iterrows():
        if row.sum() == 0:
            continue
        src = row.idxmax()
        share = row[src] / row.sum()
        others = table.drop(index=cls)
        total_others = others.to_numpy().sum()
        other_share = others[src].sum() / total_others if total_others else 0.0
        if share >= dominant and other_share <= elsewhere:
            supplies = "none" if other_share == 0 else f"only {other_share:.0%}"
            notes.append(f"{share:.0%} of the {cls} images come from source '{src}', which supplies {supplies} "
                         f"of the other images: a model can score well by recognising "
                         f"'{src}' images (scanner, markers, patient group) rather than {cls} itself.")
    return notes


def auc_table(exp: runs.Experiment, split: str = "test") -> pd.DataFrame:
    """Per-class AUC (rows: classes + 'Macro average', columns: backbones); NaN where undefined."""
    rows = list(exp.labels.names) + ["Macro average"]
    data = {}
    for arch in exp.backbones:
        m = (exp.backbone(arch).get("metrics") or {}).get(split) or {}
        per_class = m.get("auc") or {}
        values = [per_class.get(name) for name in exp.labels.names] + [m.get("macro_auc")]
        data[arch_label(arch)] = [np.nan if v is None else float(v) for v in values]
    return pd.DataFrame(data, index=pd.Index(rows, name="Class"))


# ---------------------------------------------------------------- display helpers

def arch_label(arch: str) -> str:
    return ARCH_LABELS.get(arch, arch)


def backbone_colours(exp: runs.Experiment) -> dict[str, str]:
    """Display name -> colour, stable within an experiment so every chart agrees."""
    return {arch_label(a): OKABE_ITO[i % len(OKABE_ITO)] for i, a in enumerate(exp.backbones)}


def format_seconds(seconds) -> str:
    if seconds is None or not np.isfinite(seconds):
        return "—"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def task_label(labels: LabelSpace) -> str:
    if labels.task == MULTILABEL:
        return "Multi-label (zero or more findings per image)"
    return "Multi-class (exactly one label per image)"


def table_height(df: pd.DataFrame, max_rows: int = 25) -> int:
    """Pixel height that shows every row (up to ``max_rows``) of an ``st.dataframe`` without scrolling."""
    return 35 * (min(len(df), max_rows) + 1) + 3


def show_thumbnails(exp: runs.Experiment, rows: Sequence[int], captions: Sequence[str] | None = None,
                    width: int = 96) -> None:
    """Thumbnails of the given images.parquet rows in one wrapping strip (never re-reads originals)."""
    thumbs = thumbnails(exp)
    rows = [int(r) for r in rows]
    if not rows:
        st.caption("No images.")
        return
    st.image([np.asarray(thumbs[r]) for r in rows], caption=list(captions) if captions else None, width=width)


# ---------------------------------------------------------------- the shared chrome

def research_notice() -> None:
    """The persistent disclaimer, at the top of every page."""
    st.info(NOTICE, title=NOTICE_TITLE, icon=":material/info:")


def _experiment_label(exp: runs.Experiment) -> str:
    when = str(exp.manifest.get("completed") or exp.manifest.get("created") or "").replace("T", " ")[:16]
    return f"{exp.path.name} · {when}" if when else exp.path.name


def sidebar_experiment_picker() -> runs.Experiment | None:
    """Sidebar: one warning per unreadable folder, then a selectbox of experiments (newest first).

    The choice (the experiment's folder name) is kept in ``st.session_state["experiment"]``.
    """
    root = runs_root()
    experiments, problems = runs.list_experiments(root)
    with st.sidebar:
        for problem in problems:
            st.warning(f"Skipped a folder that is not a readable experiment: {problem}", icon=":material/warning:")
        if not experiments:
            st.session_state.pop(EXPERIMENT_KEY, None)
            st.caption(f"No experiments in `{root}`.")
            return None
        by_name = {e.path.name: e for e in experiments}
        if st.session_state.get(EXPERIMENT_KEY) not in by_name:
            # The chosen experiment was deleted (or never chosen): fall back to the newest.
            st.session_state.pop(EXPERIMENT_KEY, None)
        chosen = st.selectbox("Experiment", list(by_name), key=EXPERIMENT_KEY,
                              format_func=lambda n: _experiment_label(by_name[n]),
                              help=f"Experiments found in {root} (set ${RUNS_ENV} to look elsewhere).")
        st.caption(f"{len(experiments)} experiment(s) in `{root}`")
    try:
        return load_experiment(by_name[chosen].path)
    except runs.RunFormatError as exc:  # deleted or replaced between the scan and the load
        st.error(str(exc))
        return None


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
    st.session_state[_CHROME_KEY] = exp
    return exp


def page_setup(title: str) -> runs.Experiment | None:
    """First call of every page: the chosen experiment.

    Under ``app.py`` the router has already drawn the picker and notice this run, so the page only
    reads its choice. Run on its own (``streamlit run app_pages/x.py``) the page draws them itself.
    The flag is only ever set by ``app.py``, so a stand-alone page never skips its chrome.
    """
    if _CHROME_KEY in st.session_state:
        return st.session_state[_CHROME_KEY]
    st.set_page_config(page_title=f"covidviz · {title}", layout="wide")
    exp = sidebar_experiment_picker()
    research_notice()
    return exp


# ---- latent page ----

@st.cache_resource(show_spinner=False, max_entries=16)
def _latent_maps(path: str, stamp: int, arch: str):
    from covidviz import latent

    return latent.load_maps(_experiment(path, stamp), arch)


def latent_maps(exp: runs.Experiment, arch: str):
    """``covidviz.latent.Maps`` (coords per method + quality) of one analysed backbone (shared: read only)."""
    return _latent_maps(str(exp.path), _stamp(exp.path), arch)


@st.cache_resource(show_spinner=False, max_entries=16)
def _latent_points(path: str, stamp: int, arch: str):
    from covidviz import latent

    exp = _experiment(path, stamp)
    probs = exp.probabilities(arch)
    probs.setflags(write=False)
    return latent.point_table(exp.images(), probs, list(exp.labels.names), exp.labels.task), probs


def latent_points(exp: runs.Experiment, arch: str):
    """(point table, probabilities (N, C)) of one backbone: shared read-only objects, do not modify."""
    return _latent_points(str(exp.path), _stamp(exp.path), arch)


@st.cache_resource(show_spinner="Drawing the map…", max_entries=24)
def _latent_figure(path: str, stamp: int, arch: str, method: str, colour_by: str, cls: str | None,
                   height: int):
    from covidviz import latent

    exp = _experiment(path, stamp)
    names = list(exp.labels.names)
    table, probs = _latent_points(path, stamp, arch)
    coords = _latent_maps(path, stamp, arch).coords[method]
    values, order = None, None
    if colour_by == "outcome" and cls:
        thr, _ = latent.youden_threshold(exp, arch, cls)
        values, order = latent.outcomes(exp.images(), probs, names, cls, thr), list(latent.OUTCOMES)
    elif colour_by in ("label", "prediction"):
        order = names + [latent.NO_FINDING]
    elif colour_by == "split":
        order = list(SPLITS)
    title = f"{arch_label(arch)} · {latent.METHOD_NAMES.get(method, method)}"
    return latent.base_figure(coords, table, probs, names, colour_by, values, order, title, height).to_dict()


def latent_figure(exp: runs.Experiment, arch: str, method: str, colour_by: str, cls: str | None,
                  height: int = 620) -> dict:
    """The O(N) base map as a plotly figure dict, built once per (backbone, map, colouring); shared, so
    callers add overlays to a shallow copy (``{**fig, "data": fig["data"] + [...]}``)."""
    return _latent_figure(str(exp.path), _stamp(exp.path), arch, method, colour_by,
                          cls if colour_by == "outcome" else None, height)


@st.cache_data(show_spinner="Computing heatmaps…", max_entries=64)
def _latent_detail(path: str, stamp: int, arch: str, row: int, cls_idx: int | None, method: str):
    """(full image uint8 (H, W) or None, why not, probabilities (C,), CAM overlay RGB or None)."""
    from covidviz.cam import compute_cam, overlay
    from covidviz.data.imageio import ImageDecodeError, read_image

    exp = _experiment(path, stamp)
    probs = np.asarray(_latent_points(path, stamp, arch)[1][row])
    image_path = str(exp.images().iloc[row]["path"])
    try:
        gray = read_image(image_path)
    except (ImageDecodeError, OSError, ValueError) as exc:
        return None, f"The original image cannot be read ({exc}); showing its thumbnail.", probs, None
    try:
        model = _model(path, stamp, arch)
        pre = exp.preprocessing
        x = pre.to_tensor(pre.to_model_pixels(gray))
        res = compute_cam(model, x, int(cls_idx) if cls_idx is not None else None, method=method)
    except Exception as exc:  # a model that cannot load must not take the page down
        return gray, f"No heatmap: the {arch_label(arch)} model could not be run ({type(exc).__name__}: {exc}).", probs, None
    return gray, "", probs, overlay(gray, res.normalised[0], alpha=0.45)


def latent_detail(exp: runs.Experiment, arch: str, row: int, cls_idx: int | None, method: str = "cam"):
    return _latent_detail(str(exp.path), _stamp(exp.path), arch, int(row), cls_idx, method)


# ---- som page ----

@st.cache_data(show_spinner=False, max_entries=16)
def _som(path: str, stamp: int, arch: str) -> dict | None:
    exp = _experiment(path, stamp)
    if not (exp.has_artifact(runs.SOM, arch) and exp.has_artifact(runs.SOM_INFO, arch)):
        return None
    arrays = exp.load_arrays(runs.SOM, arch)
    arrays.pop("weights", None)  # the page never needs them; keeps the cached copy small
    return {"arrays": arrays, "info": exp.load_json(runs.SOM_INFO, arch)}


def som_result(exp: runs.Experiment, arch: str) -> dict | None:
    """``{"arrays": som.npz without weights, "info": som.json}`` of a backbone, or None if not analysed."""
    return _som(str(exp.path), _stamp(exp.path), arch)


@st.cache_data(show_spinner=False, max_entries=16)
def _som_mosaic(path: str, stamp: int, arch: str) -> str | None:
    from covidviz.som_view import prototype_mosaic

    som = _som(path, stamp, arch)
    if som is None:
        return None
    a = som["arrays"]
    return prototype_mosaic(a["hex_xy"], _thumbnails(path, stamp), a["prototype"])


def som_mosaic(exp: runs.Experiment, arch: str) -> str | None:
    """Data-URI PNG of every node's prototype thumbnail at its hexagon (cached per experiment)."""
    return _som_mosaic(str(exp.path), _stamp(exp.path), arch)


def upload_for(exp: runs.Experiment) -> dict | None:
    """The diagnose page's upload record (``st.session_state["upload"]``) if it belongs to ``exp``."""
    up = st.session_state.get("upload")
    if not isinstance(up, dict) or up.get("experiment") not in (exp.name, exp.path.name, str(exp.path)):
        return None
    return up


# ---- compare page ----

@st.cache_data(show_spinner=False, max_entries=16)
def _compare_analysis(path: str, stamp: int):
    from covidviz import compare

    return compare.load_analysis(_experiment(path, stamp))


def compare_analysis(exp: runs.Experiment) -> dict | None:
    """analysis.json of an experiment (None when not analysed yet); a private copy."""
    return _compare_analysis(str(exp.path), _stamp(exp.path))


@st.cache_resource(show_spinner=False, max_entries=8)
def _compare_test(path: str, stamp: int):
    from covidviz import compare

    exp = _experiment(path, stamp)
    probs = {a: exp.probabilities(a) for a in exp.backbones}
    onehot, test_probs, rows = compare.test_arrays(exp.images(), exp.labels, probs)
    for arr in (onehot, rows, *test_probs.values()):
        arr.setflags(write=False)
    return onehot, test_probs, rows


def compare_test(exp: runs.Experiment):
    """(test one-hot, arch -> test probabilities, images.parquet rows of the test images): shared, read-only."""
    return _compare_test(str(exp.path), _stamp(exp.path))


@st.cache_data(show_spinner="Computing heatmaps…", max_entries=64)
def _compare_heatmap(path: str, stamp: int, arch: str, row: int, cls_idx: int | None):
    """(CAM overlay RGB uint8 or None, explained class index or None, message)."""
    from covidviz.cam import compute_cam, overlay
    from covidviz.data.imageio import ImageDecodeError, read_image

    exp = _experiment(path, stamp)
    image_path = str(exp.images().iloc[row]["path"])
    try:
        gray = read_image(image_path)
    except (ImageDecodeError, OSError, ValueError) as exc:
        return None, None, f"The original image cannot be read ({exc})."
    pre = exp.preprocessing
    res = compute_cam(_model(path, stamp, arch), pre.to_tensor(pre.to_model_pixels(gray)),
                      None if cls_idx is None else int(cls_idx), method="cam")
    flat = "" if float(res.raw[0].max()) > 0 else "The map is flat: no positive evidence for this class anywhere."
    return overlay(gray, res.normalised[0], alpha=0.45, colormap="cividis"), int(res.class_idx[0]), flat


def compare_heatmap(exp: runs.Experiment, arch: str, row: int, cls_idx: int | None):
    """(overlay RGB or None, explained class, message) of one image (images.parquet row) for class
    ``cls_idx`` (None: the backbone's top class); message says why there is no map, or that it is flat."""
    return _compare_heatmap(str(exp.path), _stamp(exp.path), arch, int(row), cls_idx)


# ---- diagnose page ----

@st.cache_resource(show_spinner="Loading the models…", max_entries=4)
def _diagnose_predictor(path: str, stamp: int):
    from covidviz.diagnose import Predictor

    exp = _experiment(path, stamp)
    # The models are the shared cached ones (one copy per backbone per process, for every session).
    return Predictor(exp, models={a: _model(path, stamp, a) for a in exp.backbones})


def diagnose_predictor(exp: runs.Experiment):
    """The shared ``covidviz.diagnose.Predictor`` of an experiment (models + analysis artefacts)."""
    return _diagnose_predictor(str(exp.path), _stamp(exp.path))
