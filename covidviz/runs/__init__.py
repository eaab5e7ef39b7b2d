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

The JSON files are read through the typed accessors of ``covidviz.runs.records`` (``Experiment.analysis()``,
``Experiment.record(arch)``, ``Experiment.localisation(arch)``), so no page walks their raw dicts.

Writes are atomic at the experiment level: everything is built in ``runs/.partial/<name>/`` (which
also holds resumable checkpoints) and renamed to ``runs/<name>/`` at the very end. An interrupted
run therefore never shows a half experiment to the app and never touches an earlier one; the app
ignores dot-folders. Readers raise ``RunFormatError`` naming the folder for anything broken.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from covidviz.data.labels import LabelSpace
from covidviz.data.preprocess import Preprocessing
from covidviz.io import atomic_save_npy, atomic_save_npz, atomic_torch_save, atomic_write_json
from covidviz.runs.records import Analysis, Localisation, ManifestBackbone, ProjectionsInfo, Shortcuts, SomInfo

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


class RunFormatError(ValueError):
    """A folder is not a readable covidviz experiment; the message names the folder and the fault."""


def prob_columns(labels: LabelSpace) -> list[str]:
    return [PROB_PREFIX + n for n in labels.names]


# ---------------------------------------------------------------- writing

class ExperimentWriter:
    """Builds an experiment in ``<root>/.partial/<name>/`` and publishes it atomically."""

    def __init__(self, root: str | Path, name: str, resume: bool = False, overwrite: bool = False):
        validate_name(name)
        self.root = Path(root)
        self.name = name
        self.final = self.root / name
        self.workdir = self.root / PARTIAL / name
        self.overwrite = overwrite
        if self.final.exists() and not overwrite:
            raise FileExistsError(f"experiment {self.final} already exists; pick another --name or pass --overwrite")
        if self.workdir.exists() and not resume:
            # A stale partial from a killed run: start afresh (the user did not ask to resume).
            shutil.rmtree(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)

    @property
    def has_partial_manifest(self) -> bool:
        return (self.workdir / MANIFEST).exists()

    def read_manifest(self) -> dict:
        return json.loads((self.workdir / MANIFEST).read_text())

    def write_manifest(self, manifest: dict) -> None:
        m = dict(manifest)
        m["format"], m["schema_version"], m["name"] = FORMAT_NAME, SCHEMA_VERSION, self.name
        atomic_write_json(self.workdir / MANIFEST, m)

    def update_manifest(self, **changes) -> dict:
        m = self.read_manifest()
        m.update(changes)
        self.write_manifest(m)
        return m

    def write_images(self, table: pd.DataFrame) -> None:
        tmp = self.workdir / (IMAGES + ".tmp")
        table.reset_index(drop=True).to_parquet(tmp, index=False)
        os.replace(tmp, self.workdir / IMAGES)

    def read_images(self) -> pd.DataFrame:
        return pd.read_parquet(self.workdir / IMAGES)

    def write_thumbnails(self, thumbs: np.ndarray) -> None:
        atomic_save_npy(self.workdir / THUMBNAILS, np.asarray(thumbs, dtype=np.uint8))

    def backbone_dir(self, arch: str) -> Path:
        d = self.workdir / BACKBONES / arch
        d.mkdir(parents=True, exist_ok=True)
        return d

    def write_backbone(self, arch: str, state_dict: dict, predictions: pd.DataFrame,
                       features: np.ndarray, history: list[dict]) -> None:
        d = self.backbone_dir(arch)
        atomic_torch_save(d / WEIGHTS, {k: v.detach().cpu() for k, v in state_dict.items()})
        tmp = d / (PREDICTIONS + ".tmp")
        predictions.reset_index(drop=True).to_parquet(tmp, index=False)
        os.replace(tmp, d / PREDICTIONS)
        atomic_save_npy(d / FEATURES, np.asarray(features, dtype=np.float16))
        atomic_write_json(d / HISTORY, history)

    def commit(self) -> Path:
        """Publish: drop checkpoints, validate, rename into place (replacing only with --overwrite)."""
        for ckpt in (self.workdir / BACKBONES).glob(f"*/{CHECKPOINT}"):
            ckpt.unlink()
        self.update_manifest(status="complete", completed=time.strftime("%Y-%m-%dT%H:%M:%S"))
        read_experiment(self.workdir)  # never publish something the app cannot read
        trash = None
        if self.final.exists():
            if not self.overwrite:
                raise FileExistsError(f"experiment {self.final} appeared while training; result left in {self.workdir}")
            trash = self.root / PARTIAL / f"{self.name}.old-{os.getpid()}"
            os.rename(self.final, trash)
        os.rename(self.workdir, self.final)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
        return self.final


def partial_checkpoint(root: str | Path, name: str, arch: str) -> Path:
    """Resumable checkpoint of one backbone of a partial experiment (known to every DDP rank)."""
    path = Path(root) / PARTIAL / name / BACKBONES / arch / CHECKPOINT
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def partial_backbone_done(root: str | Path, name: str, arch: str) -> bool:
    """True when a resumed partial experiment already holds this backbone's final files."""
    d = Path(root) / PARTIAL / name
    if not (d / MANIFEST).exists() or arch not in json.loads((d / MANIFEST).read_text()).get("backbones", {}):
        return False
    return all((d / BACKBONES / arch / f).exists() for f in (WEIGHTS, PREDICTIONS, FEATURES, HISTORY))


def pretrained_state(weights: str, arch: str):
    """``--weights``: an experiment folder becomes that experiment's ``arch`` state (a
    ``models.PretrainedState``); anything else is passed through unchanged for ``models.build_model``."""
    from covidviz.models import PretrainedState

    path = Path(weights) if weights else None
    if path is None or not path.is_dir():
        return weights
    exp = read_experiment(path)
    if arch not in exp.backbones:
        raise ValueError(f"experiment {path} has no {arch} backbone (it has {', '.join(exp.backbones)})")
    return PretrainedState(exp.load_state_dict(arch), f"experiment:{exp.name}/{arch}", exp.preprocessing)


def validate_name(name: str) -> None:
    if not name or name.startswith(".") or "/" in name or "\\" in name or name in ("..",):
        raise ValueError(f"invalid experiment name {name!r}: use letters, digits, '-', '_' (no leading dot, no '/')")


# ---------------------------------------------------------------- reading

@dataclass
class Experiment:
    """A published (or partial, for validation) experiment folder, read lazily."""

    path: Path
    manifest: dict
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.manifest.get("name", self.path.name)

    @property
    def labels(self) -> LabelSpace:
        return LabelSpace.from_json(self.manifest["labels"])

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing.from_json(self.manifest["preprocessing"])

    @property
    def backbones(self) -> list[str]:
        return list(self.manifest.get("backbones", {}))

    def backbone(self, arch: str) -> dict:
        return self.manifest["backbones"][arch]

    def record(self, arch: str) -> ManifestBackbone:
        """The backbone's training record in the manifest (init, epochs, metrics), typed."""
        return ManifestBackbone(arch, self.manifest["backbones"][arch])

    @property
    def analysed(self) -> bool:
        return self.has_artifact(ANALYSIS)

    def analysis(self) -> Analysis | None:
        """``analysis.json`` (typed), or None when ``train.py analyze`` has not run on this experiment."""
        if not self.has_artifact(ANALYSIS):
            return None
        if "analysis" not in self._cache:
            self._cache["analysis"] = Analysis(self.load_json(ANALYSIS))
        return self._cache["analysis"]

    def localisation(self, arch: str) -> Localisation | None:
        """``localisation.json`` of a backbone (typed), or None (no lesion masks or boxes, or not analysed)."""
        if not self.has_artifact(LOCALISATION, arch):
            return None
        return Localisation(self.load_json(LOCALISATION, arch))

    def projections_info(self, arch: str) -> ProjectionsInfo | None:
        """``projections.json`` of a backbone (typed: maps fitted, their quality), or None (not analysed)."""
        if not self.has_artifact(PROJECTIONS_INFO, arch):
            return None
        return ProjectionsInfo(self.load_json(PROJECTIONS_INFO, arch))

    def som_info(self, arch: str) -> SomInfo | None:
        """``som.json`` of a backbone (typed: grid, QE, TE), or None (not analysed)."""
        if not self.has_artifact(SOM_INFO, arch):
            return None
        return SomInfo(self.load_json(SOM_INFO, arch))

    def shortcuts(self) -> Shortcuts | None:
        """``shortcuts.json`` (typed): test AUCs with parts of the films hidden, or None (not audited)."""
        if not self.has_artifact(SHORTCUTS):
            return None
        return Shortcuts(self.load_json(SHORTCUTS))

    def analysed_backbones(self, artifact: str = ANALYSIS) -> list[str]:
        """Backbones that have ``artifact`` (e.g. ``PROJECTIONS``, ``SOM``), in experiment order;
        with the default, those covered by analysis.json."""
        if artifact == ANALYSIS:
            a = self.analysis()
            return [arch for arch in self.backbones if a is not None and a.has(arch)]
        return [arch for arch in self.backbones if self.has_artifact(artifact, arch)]

    def artifact_path(self, name: str, arch: str | None = None) -> Path:
        """Path of a named file in the experiment (for analysis steps that add files)."""
        return (self.path / BACKBONES / arch / name) if arch else (self.path / name)

    def has_artifact(self, name: str, arch: str | None = None) -> bool:
        return self.artifact_path(name, arch).exists()

    def save_json(self, name: str, obj, arch: str | None = None) -> None:
        atomic_write_json(self.artifact_path(name, arch), obj)
        self._cache.pop("analysis", None)

    def load_json(self, name: str, arch: str | None = None):
        path = self.artifact_path(name, arch)
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise RunFormatError(f"{self.path}: cannot read {path.name} ({exc})") from exc

    def save_arrays(self, name: str, arrays: dict[str, np.ndarray], arch: str | None = None) -> None:
        atomic_save_npz(self.artifact_path(name, arch), arrays)

    def load_arrays(self, name: str, arch: str | None = None) -> dict[str, np.ndarray]:
        path = self.artifact_path(name, arch)
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError) as exc:
            raise RunFormatError(f"{self.path}: cannot read {path.name} ({exc})") from exc

    def update_manifest(self, **changes) -> None:
        """Merge top-level keys into the manifest (atomic), e.g. after the analysis step."""
        m = json.loads((self.path / MANIFEST).read_text())
        m.update(changes)
        atomic_write_json(self.path / MANIFEST, m)
        self.manifest = m

    def images(self) -> pd.DataFrame:
        if "images" not in self._cache:
            self._cache["images"] = _read_parquet(self.path / IMAGES, self.path)
        return self._cache["images"]

    def thumbnails(self) -> np.ndarray:
        return np.load(self.path / THUMBNAILS, mmap_mode="r")

    def predictions(self, arch: str) -> pd.DataFrame:
        key = ("pred", arch)
        if key not in self._cache:
            self._cache[key] = _read_parquet(self.path / BACKBONES / arch / PREDICTIONS, self.path)
        return self._cache[key]

    def probabilities(self, arch: str) -> np.ndarray:
        return self.predictions(arch)[prob_columns(self.labels)].to_numpy(np.float32)

    def features(self, arch: str) -> np.ndarray:
        return np.load(self.path / BACKBONES / arch / FEATURES, mmap_mode="r")

    def history(self, arch: str) -> list[dict]:
        return json.loads((self.path / BACKBONES / arch / HISTORY).read_text())

    def load_state_dict(self, arch: str) -> dict:
        import torch

        return torch.load(self.path / BACKBONES / arch / WEIGHTS, map_location="cpu", weights_only=True)

    def load_model(self, arch: str):
        """The best-validation model, in eval mode on the CPU."""
        from covidviz.models import Classifier

        # The architecture it was trained with: strides/dilations are not in the state dict (experiments
        # from before the option have no record of it and were all trained at stride 32).
        model = Classifier(arch, self.labels.num_classes, output_stride=self.record(arch).output_stride)
        model.load_state_dict(self.load_state_dict(arch))
        return model.eval()


def _read_parquet(path: Path, folder: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as exc:
        raise RunFormatError(f"{folder}: cannot read {path.name} ({type(exc).__name__}: {exc})") from exc


def read_experiment(path: str | Path) -> Experiment:
    """Open an experiment folder; raise ``RunFormatError`` naming the folder if it is not one."""
    path = Path(path)
    if not path.is_dir():
        raise RunFormatError(f"{path}: not a folder")
    mpath = path / MANIFEST
    if not mpath.exists():
        raise RunFormatError(f"{path}: no {MANIFEST}; not a covidviz experiment")
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, ValueError) as exc:
        raise RunFormatError(f"{path}: {MANIFEST} is unreadable ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise RunFormatError(f"{path}: {MANIFEST} is not a covidviz experiment manifest")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise RunFormatError(f"{path}: schema version {version} is not supported (this covidviz reads {SCHEMA_VERSION}); "
                             "retrain it or use a matching covidviz version")
    for key in ("labels", "preprocessing", "backbones", "dataset"):
        if key not in manifest:
            raise RunFormatError(f"{path}: {MANIFEST} lacks '{key}'")
    try:
        LabelSpace.from_json(manifest["labels"])
        Preprocessing.from_json(manifest["preprocessing"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RunFormatError(f"{path}: invalid labels/preprocessing in {MANIFEST} ({exc})") from exc
    missing = [f for f in (IMAGES, THUMBNAILS) if not (path / f).exists()]
    for arch in manifest["backbones"]:
        d = path / BACKBONES / arch
        missing += [f"{BACKBONES}/{arch}/{f}" for f in (WEIGHTS, PREDICTIONS, FEATURES, HISTORY) if not (d / f).exists()]
    if missing:
        raise RunFormatError(f"{path}: missing files: {', '.join(missing)}")
    return Experiment(path, manifest)


def scan_folders(root: str | Path, read) -> tuple[list, list[str]]:
    """``read`` every non-hidden sub-folder of ``root`` (by name): the readable ones, and a warning
    (the ``RunFormatError`` message) per folder that is not."""
    root = Path(root)
    found, warnings = [], []
    if not root.is_dir():
        return found, warnings
    for child in sorted(root.iterdir()):
        if child.name.startswith(".") or not child.is_dir():
            continue
        try:
            found.append(read(child))
        except RunFormatError as exc:
            warnings.append(str(exc))
    return found, warnings


def list_experiments(root: str | Path) -> tuple[list[Experiment], list[str]]:
    """All readable experiments under ``root`` (newest first) and a warning per broken folder."""
    found, warnings = scan_folders(root, read_experiment)
    found.sort(key=lambda e: e.manifest.get("completed", ""), reverse=True)
    return found, warnings
