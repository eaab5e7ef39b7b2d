"""External test sets in the app, Streamlit-free: the texts and cell formats of the Overview's section
(its table: ``views.overview.external_table``), the Compare page's
"Test set" choice (an external set read like the analysis, its images' labels and probabilities, the
internal-vs-external table), and the placement of external images on the stored maps (Latent space:
``MapPlacer``; SOM: ``som_place``) without refitting anything.

An external set is ``covidviz.runs.external.ExternalSet`` (``train.py evaluate runs/EXP --data KIND:PATH
--name SITE``): its AUCs, CIs, curves and the drop from the internal test set are stored, so nothing here
recomputes a statistic; only the interactive parts (counts at a threshold) use its stored probabilities.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from covidviz import runs
from covidviz.data.labels import LabelSpace
from covidviz.runs.external import ExternalSet
from covidviz.runs.records import Analysis, BackboneAnalysis, ClassMetrics
from covidviz.stats.projection import MapPlacer
from covidviz.stats.som import som_place
from covidviz.views import glossary
from covidviz.views.compare import MACRO, ci_text
from covidviz.views.compare import auc_ci_text as compare_auc_text
from covidviz.views.style import SPLIT_LABELS, arch_label

INTERNAL = "internal"               # the "Test set" choice of the experiment's own test split
INTERNAL_LABEL = "Internal test split"
EXTERNAL_SPLIT = "external"         # images.parquet ``split`` of an external set's images
ADD_COMMAND = "python train.py evaluate runs/EXP --data KIND:PATH --name SITE"
AUC = glossary.link("AUC")
CI = glossary.link("95% CI")
OVERVIEW_CAPTION = (f"Other hospitals' images scored by the trained backbones without retraining: macro {AUC} on "
                    f"each set with its {CI} (patient bootstrap), and the drop from the internal test split "
                    "(internal − external; a CI above 0 means the backbone does worse there). Add one with "
                    f"`{ADD_COMMAND}` (e.g. `--data folder:/data/site-b --name site-b`).")
NO_SETS = f"No external test set yet. Score another hospital's images with `{ADD_COMMAND}`."
TEST_SET_HELP = ("Every section that can switch uses this set's images (its header names the set); the others say "
                 "they stay on the internal test split. External sets are scored with the thresholds chosen on the "
                 "internal validation split, unchanged.")
DROP_CAPTION = (f"Per backbone and class: the internal test {AUC}, the external set's, and the drop (internal − "
                f"external) with its {CI}; the two sets share no patients, so each is resampled on its own. "
                "A drop whose CI excludes 0 is a real loss of discrimination on the new site.")


# ---------------------------------------------------------------- Overview (and cells other tables share)

def _num(v) -> float:
    return np.nan if v is None else float(v)


def auc_ci_text(m: ClassMetrics) -> str:
    return compare_auc_text(_num(m.auc), _num(m.ci_low), _num(m.ci_high))  # marks an AUC below 0.5


def drop_text(d: dict) -> str:
    return ci_text(_num(d.get("drop")), _num(d.get("ci_low")), _num(d.get("ci_high")), signed=True)


def problems_text(problems: list[str]) -> str | None:
    """One warning line for the external folders that cannot be read (None when all can)."""
    if not problems:
        return None
    return (f"{len(problems)} external test set folder(s) cannot be read and are not shown: " + "; ".join(problems)
            + f". Re-run `{ADD_COMMAND}` for them.")


# ---------------------------------------------------------------- Compare: the test set

def test_set_options(sets: list[ExternalSet]) -> list[str]:
    """The "Test set" selector's choices: the internal test split, then each external set by name."""
    return [INTERNAL] + [s.name for s in sets]


def test_set_label(option: str) -> str:
    return INTERNAL_LABEL if option == INTERNAL else f"External: {option}"


def find_set(sets: list[ExternalSet], name: str | None) -> ExternalSet | None:
    return next((s for s in sets if s.name == name), None)


class SiteMetrics:
    """An external set read through the part of ``Analysis`` that the Compare page's sections use
    (``backbone(arch)``: a ``BackboneAnalysis`` of the set's stored record, which has the analysis' layout:
    AUCs, CIs, ROC and PR curves, calibration with the carried-over temperature, subgroup rows; ``names``).
    It has no paired comparisons and no baseline (those are of the internal test split)."""

    def __init__(self, ext: ExternalSet):
        self.ext = ext
        self.names = list(ext.metrics.get("names") or [])

    def has(self, arch: str) -> bool:
        return arch in self.ext.archs

    def backbone(self, arch: str) -> BackboneAnalysis:
        return BackboneAnalysis(arch, (self.ext.metrics.get("backbones") or {}).get(arch) or {})

    def comparison(self, a: str, b: str):
        return None, False

    def baseline_auc(self, cls: str):
        return None


def site_caption(ext: ExternalSet) -> str:
    return (f"External set **{ext.name}** ({', '.join(f'`{s}`' for s in ext.specs) or 'data unknown'}): "
            f"{ext.n_images} images, {len(ext.left_out)} left out. {TEST_SET_HELP}")


def site_arrays(images: pd.DataFrame, predictions: dict[str, pd.DataFrame],
                labels: LabelSpace) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(one-hot (N, C) of the set's images, arch -> probabilities (N, C) float64): each backbone's
    ``p::<label>`` columns joined to the images table on ``image_id`` (NaN where an image has none)."""
    onehot = labels.onehot(images["labels"].to_numpy())
    cols = runs.prob_columns(labels)
    ids = images["image_id"].astype(str)
    probs = {}
    for arch, pred in predictions.items():
        p = pred.assign(image_id=pred["image_id"].astype(str)).drop_duplicates("image_id").set_index("image_id")
        probs[arch] = p.reindex(ids)[cols].to_numpy(np.float64)
    return onehot, probs


def internal_vs_external(analysis: Analysis, ext: ExternalSet, archs: list[str], names: list[str],
                         label=arch_label) -> pd.DataFrame:
    """Per backbone and class (+ macro): internal test AUC (95% CI), this set's AUC (95% CI), and the drop
    internal − external (95% CI), as text."""
    rows = []
    for arch in archs:
        b = analysis.backbone(arch)
        for cls in [*names, MACRO]:
            key = "macro" if cls == MACRO else cls
            internal = b.macro if cls == MACRO else b.metrics(cls)
            external = ext.macro(arch) if cls == MACRO else ext.auc(arch, cls)
            rows.append({"Backbone": label(arch), "Class": "Macro average" if cls == MACRO else cls,
                         "Internal test AUC (95% CI)": auc_ci_text(internal),
                         f"{ext.name} AUC (95% CI)": auc_ci_text(external) if arch in ext.archs else "not scored",
                         "Drop (95% CI)": drop_text(ext.drop(arch, key)) if arch in ext.archs else "—"})
    return pd.DataFrame(rows).set_index(["Backbone", "Class"])


# ---------------------------------------------------------------- the maps (no refitting)

def place_on_maps(projections: dict[str, np.ndarray], features: np.ndarray) -> dict[str, np.ndarray]:
    """method -> (M, 2) float32 map coordinates of ``features`` (M, D) on the stored maps: the stored
    ``MapPlacer`` (``MapPlacer.from_stored``: kNN interpolation in the PCA-50 space; PCA exactly). ``{}``
    without a stored placer."""
    placer = MapPlacer.from_stored(projections)
    if placer is None or len(features) == 0:
        return {}
    placement = placer.place(np.asarray(features, np.float32))
    return {m: np.asarray(c, np.float32) for m, c in placement.coords.items()}


def place_on_som(som: dict[str, np.ndarray], features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(best-matching node (M,), quantisation error (M,)) of each feature vector on a stored SOM
    (som.npz with its weights) through ``som_place``; nothing is refitted."""
    feats = np.asarray(features, np.float32)
    placed = [som_place(som, f) for f in feats]
    return (np.array([p[0] for p in placed], np.int64).reshape(-1),
            np.array([p[1] for p in placed], np.float64).reshape(-1))


def set_values(splits, n_external: dict[str, int]) -> np.ndarray:
    """The "Set" of every point: the internal split's name (Train / Validation / Test) for the experiment's
    images, then ``External: <site>`` for each external set's images (in ``n_external``'s order)."""
    internal = [SPLIT_LABELS.get(str(s), str(s)) for s in splits]
    external = [test_set_label(site) for site, n in n_external.items() for _ in range(int(n))]
    return np.asarray(internal + external, dtype=object)


def set_order(sites) -> list[str]:
    """The "Set" categories in display order: the internal splits, then the external sets."""
    return list(SPLIT_LABELS.values()) + [test_set_label(s) for s in sites]


def test_source(analysis: Analysis, archs: list[str], ext: ExternalSet | None) -> tuple[list[str], object]:
    """(backbones shown, what the curves and the per-class table read): the analysis for the internal test
    split, else the external set (``SiteMetrics``) and its scored backbones."""
    if ext is None:
        return list(archs), analysis
    return [a for a in archs if a in ext.archs] or list(archs), SiteMetrics(ext)
