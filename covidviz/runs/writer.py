"""Writing an experiment: ``ExperimentWriter`` builds it in ``<root>/.partial/<name>/`` (which also holds
the resumable per-backbone checkpoints) and ``commit`` renames it to ``<root>/<name>/`` at the very end,
so an interrupted run never shows a half experiment to the app and never touches an earlier one.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from covidviz.io import atomic_save_npy, atomic_torch_save, atomic_write_json
from covidviz.runs.manifest import ManifestInfo
from covidviz.runs.names import (
    BACKBONE_FILES,
    BACKBONES,
    CHECKPOINT,
    FEATURES,
    FORMAT_NAME,
    HISTORY,
    IMAGES,
    MANIFEST,
    PARTIAL,
    PREDICTIONS,
    SCHEMA_VERSION,
    THUMBNAILS,
    WEIGHTS,
    validate_name,
)
from covidviz.runs.reader import read_experiment


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

    def read_info(self) -> ManifestInfo:
        """The partial manifest, typed (``pipeline`` adds each trained backbone's record to it)."""
        return ManifestInfo.from_json(self.read_manifest())

    def write_manifest(self, manifest: ManifestInfo | dict) -> None:
        """Write the manifest (a ``ManifestInfo``, or a plain dict for hand-built test and bench
        experiments), stamped with the format, the schema version and the experiment's name."""
        m = manifest.to_json() if isinstance(manifest, ManifestInfo) else dict(manifest)
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
    return all((d / BACKBONES / arch / f).exists() for f in BACKBONE_FILES)
