"""Reading an experiment: ``read_experiment`` checks a folder and opens it as an ``Experiment`` (lazy: each
file is read when first asked for); ``list_experiments`` finds every readable one under a root and a
warning per broken folder. Readers raise ``RunFormatError`` naming the folder for anything broken.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from covidviz.data.labels import LabelSpace
from covidviz.data.preprocess import Preprocessing
from covidviz.io import atomic_save_npz, atomic_write_json
from covidviz.runs.manifest import ManifestBackbone, ManifestInfo
from covidviz.runs.names import (
    ANALYSIS,
    BACKBONE_FILES,
    BACKBONES,
    FEATURES,
    FORMAT_NAME,
    HISTORY,
    IMAGES,
    LOCALISATION,
    MANIFEST,
    PREDICTIONS,
    PROJECTIONS_INFO,
    SCHEMA_VERSION,
    SHORTCUTS,
    SOM_INFO,
    THUMBNAILS,
    WEIGHTS,
    RunFormatError,
    prob_columns,
)
from covidviz.runs.records import Analysis, Localisation, ProjectionsInfo, Shortcuts, SomInfo


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
        return ManifestBackbone.from_json(self.manifest["backbones"][arch], arch)

    @property
    def info(self) -> ManifestInfo:
        """The whole manifest, typed (identity, dataset card, split, config, backbones)."""
        return ManifestInfo.from_json(self.manifest)

    @property
    def analysed(self) -> bool:
        return self.has_artifact(ANALYSIS)

    def analysis(self) -> Analysis | None:
        """``analysis.json`` (typed), or None when ``train.py analyze`` has not run on this experiment."""
        if not self.has_artifact(ANALYSIS):
            return None
        if "analysis" not in self._cache:
            self._cache["analysis"] = Analysis.from_json(self.load_json(ANALYSIS))
        return self._cache["analysis"]

    def localisation(self, arch: str) -> Localisation | None:
        """``localisation.json`` of a backbone (typed), or None (no lesion masks or boxes, or not analysed)."""
        if not self.has_artifact(LOCALISATION, arch):
            return None
        return Localisation.from_json(self.load_json(LOCALISATION, arch))

    def projections_info(self, arch: str) -> ProjectionsInfo | None:
        """``projections.json`` of a backbone (typed: maps fitted, their quality), or None (not analysed)."""
        if not self.has_artifact(PROJECTIONS_INFO, arch):
            return None
        return ProjectionsInfo.from_json(self.load_json(PROJECTIONS_INFO, arch))

    def som_info(self, arch: str) -> SomInfo | None:
        """``som.json`` of a backbone (typed: grid, QE, TE), or None (not analysed)."""
        if not self.has_artifact(SOM_INFO, arch):
            return None
        return SomInfo.from_json(self.load_json(SOM_INFO, arch))

    def shortcuts(self) -> Shortcuts | None:
        """``shortcuts.json`` (typed): test AUCs with parts of the films hidden, or None (not audited)."""
        if not self.has_artifact(SHORTCUTS):
            return None
        return Shortcuts.from_json(self.load_json(SHORTCUTS))

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


def as_experiment(path_or_exp) -> Experiment:
    """An ``Experiment`` as given, or read from its folder."""
    return path_or_exp if isinstance(path_or_exp, Experiment) else read_experiment(path_or_exp)


def measure_and_store(path_or_exp, measure, name: str, *, save: bool = True, **kw):
    """Run ``measure(exp, **kw)`` on an experiment (folder or ``Experiment``) and, with ``save``, store its
    result (unless None) as the experiment-level JSON artefact ``name``; returns the result. The shape of
    every ``analysis.*.run_*`` entry point."""
    exp = as_experiment(path_or_exp)
    result = measure(exp, **kw)
    if save and result is not None:
        exp.save_json(name, result)
    return result


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
        missing += [f"{BACKBONES}/{arch}/{f}" for f in BACKBONE_FILES if not (d / f).exists()]
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
