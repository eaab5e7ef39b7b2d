"""The run format's names: file and folder names, the schema version, the one error readers raise.

Nothing outside ``covidviz.runs`` spells a file name of an experiment; they import these (usually as
``runs.MANIFEST``, ``runs.ANALYSIS``, ... re-exported by the package).
"""

from __future__ import annotations

__all__ = [
    "ANALYSIS", "BACKBONE_FILES", "BACKBONES", "CHECKPOINT", "FEATURES", "FORMAT_NAME", "HISTORY", "IMAGES",
    "LOCALISATION", "MANIFEST", "OOD", "OOD_INFO", "PARTIAL", "PREDICTIONS", "PROB_PREFIX", "PROJECTIONS",
    "PROJECTIONS_INFO", "SCHEMA_VERSION", "SHORTCUTS", "SOM", "SOM_INFO", "THUMBNAILS", "WEIGHTS",
    "RunFormatError", "prob_columns", "validate_name",
]

SCHEMA_VERSION = 1
FORMAT_NAME = "covidviz-experiment"
MANIFEST = "manifest.json"
IMAGES = "images.parquet"
THUMBNAILS = "thumbnails.npy"
BACKBONES = "backbones"
WEIGHTS = "weights.pt"
PREDICTIONS = "predictions.parquet"
FEATURES = "features.npy"
HISTORY = "history.json"
CHECKPOINT = "checkpoint.pt"
# Written by the analysis step (``train.py analyze``); absent in an experiment not analysed yet.
ANALYSIS = "analysis.json"          # metrics with CIs, comparisons, thresholds, calibration, subgroups
PROJECTIONS = "projections.npz"     # per backbone: 2-D maps, PCA-50, map placer arrays
PROJECTIONS_INFO = "projections.json"
SOM = "som.npz"                     # per backbone: node weights, U-matrix, hits, nodes, prototypes...
SOM_INFO = "som.json"
LOCALISATION = "localisation.json"  # per backbone: CAM localisation scores per method
OOD = "ood.npz"                     # experiment level: the out-of-distribution detector (covidviz.ood.detector)
OOD_INFO = "ood.json"               # its record: detector, false-alarm rate, cut-offs (runs.records.OodInfo)
SHORTCUTS = "shortcuts.json"        # experiment level: the shortcut audit (covidviz.analysis.shortcuts; records.Shortcuts)
PARTIAL = ".partial"
PROB_PREFIX = "p::"
BACKBONE_FILES = (WEIGHTS, PREDICTIONS, FEATURES, HISTORY)  # what every trained backbone folder holds


class RunFormatError(ValueError):
    """A folder is not a readable covidviz experiment; the message names the folder and the fault."""


def prob_columns(labels) -> list[str]:
    """The probability columns of ``predictions.parquet`` for a ``LabelSpace``, in its order."""
    return [PROB_PREFIX + n for n in labels.names]


def validate_name(name: str) -> None:
    if not name or name.startswith(".") or "/" in name or "\\" in name or name in ("..",):
        raise ValueError(f"invalid experiment name {name!r}: use letters, digits, '-', '_' (no leading dot, no '/')")
