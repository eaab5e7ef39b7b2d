"""THE run format: how an experiment is written by ``train.py`` and read by the app.

Nothing else in the project knows these file names. An experiment folder ``runs/<name>/`` holds::

    manifest.json              schema version, dataset card, labels + task, split summary,
                               preprocessing contract, resolved config, per-backbone records
    images.parquet             one row per image: the per-image table + its split (the split itself)
    thumbnails.npy             uint8 (N, 64, 64) thumbnails, row-aligned with images.parquet
    backbones/<arch>/
        weights.pt             best-validation state dict (load with weights_only=True)
        predictions.parquet    image_id + one probability column per class (p::<label>)
        features.npy           float16 (N, D) pooled features, row-aligned with images.parquet
        history.json           per-epoch training history
        extra files            later analysis steps store theirs through ``artifact_path``

One module per part, all re-exported here (callers write ``runs.read_experiment``, ``runs.MANIFEST``):

- ``names``: the file names, the schema version, ``RunFormatError``;
- ``manifest``: ``manifest.json`` as dataclasses (``ManifestInfo``, ``ManifestBackbone``, ...), written
  with ``to_json`` and read with ``from_json``, tolerant of older and newer versions;
- ``records``: the analysis' JSON files as read-only dataclasses (``Experiment.analysis()``,
  ``Experiment.localisation(arch)``), read with ``from_json`` like the manifest, so no page walks their dicts;
- ``writer``: ``ExperimentWriter`` and the partial experiment's checkpoints;
- ``reader``: ``Experiment``, ``read_experiment``, ``list_experiments``;
- ``external``: external test sets stored inside an experiment.

Writes are atomic at the experiment level: everything is built in ``runs/.partial/<name>/`` (which
also holds resumable checkpoints) and renamed to ``runs/<name>/`` at the very end. An interrupted
run therefore never shows a half experiment to the app and never touches an earlier one; the app
ignores dot-folders. Readers raise ``RunFormatError`` naming the folder for anything broken.
"""

from __future__ import annotations

from covidviz.runs import names
from covidviz.runs.manifest import DatasetCard, Deconfounding, ManifestBackbone, ManifestInfo, SplitCard
from covidviz.runs.names import *  # noqa: F403 (the file names, RunFormatError: names.__all__)
from covidviz.runs.reader import (
    Experiment,
    as_experiment,
    list_experiments,
    measure_and_store,
    pretrained_state,
    read_experiment,
    scan_folders,
)
from covidviz.runs.records import Analysis, Localisation, OodInfo, ProjectionsInfo, Shortcuts, SomInfo
from covidviz.runs.writer import ExperimentWriter, partial_backbone_done, partial_checkpoint

__all__ = [
    "as_experiment",
    "measure_and_store",
    *names.__all__,
    "Analysis", "DatasetCard", "Deconfounding", "Experiment", "ExperimentWriter", "Localisation", "ManifestBackbone",
    "ManifestInfo", "OodInfo", "ProjectionsInfo", "Shortcuts", "SomInfo", "SplitCard", "list_experiments",
    "partial_backbone_done", "partial_checkpoint", "pretrained_state", "read_experiment", "scan_folders",
]
