"""External test sets stored inside an experiment: ``runs/<experiment>/external/<site>/``.

``train.py evaluate runs/EXP --data KIND:PATH --name SITE`` scores a trained experiment on another
hospital's images without retraining (``covidviz.analysis.external``) and stores them here::

    external/<site>/
        images.parquet             the external images, labels mapped onto the experiment's label space
        thumbnails.npy             uint8 (N, 64, 64), row-aligned with images.parquet
        metrics.json               per backbone: AUCs with CIs, carried-over thresholds, calibration,
                                   subgroups, the AUC drop from the internal test set; what was left out
        backbones/<arch>/
            predictions.parquet    image_id + p::<label> columns (the model's own probabilities)
            features.npy           float16 pooled features (for placing the images on the stored maps)

A set is built in ``external/.partial-<site>/`` and renamed into place only once complete; re-running
with the same name replaces the old set at that moment, never before. ``ExternalSet`` reads one.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from covidviz.io import atomic_save_npy, atomic_write_json
from covidviz.runs.names import BACKBONES, FEATURES, IMAGES, PREDICTIONS, THUMBNAILS, RunFormatError, validate_name
from covidviz.runs.reader import scan_folders
from covidviz.runs.records import ClassMetrics, OperatingPoint

EXTERNAL = "external"
METRICS = "metrics.json"


def external_root(exp_path: str | Path) -> Path:
    return Path(exp_path) / EXTERNAL


class ExternalWriter:
    """Builds ``external/.partial-<site>/`` and publishes it atomically (replacing an older set only then)."""

    def __init__(self, exp_path: str | Path, site: str):
        validate_name(site)
        self.final = external_root(exp_path) / site
        self.workdir = external_root(exp_path) / f".partial-{site}"
        if self.workdir.exists():
            shutil.rmtree(self.workdir)  # a killed earlier run
        self.workdir.mkdir(parents=True)

    def write_images(self, table: pd.DataFrame, thumbs: np.ndarray) -> None:
        table.reset_index(drop=True).to_parquet(self.workdir / IMAGES, index=False)
        atomic_save_npy(self.workdir / THUMBNAILS, np.asarray(thumbs, np.uint8))

    def write_backbone(self, arch: str, predictions: pd.DataFrame, features: np.ndarray) -> None:
        d = self.workdir / BACKBONES / arch
        d.mkdir(parents=True, exist_ok=True)
        predictions.reset_index(drop=True).to_parquet(d / PREDICTIONS, index=False)
        atomic_save_npy(d / FEATURES, np.asarray(features, np.float16))

    def write_metrics(self, metrics: dict) -> None:
        atomic_write_json(self.workdir / METRICS, metrics)

    def commit(self) -> Path:
        read_external(self.workdir)  # never publish what the app could not read
        trash = None
        if self.final.exists():
            trash = self.final.parent / f".old-{self.final.name}-{os.getpid()}"
            os.rename(self.final, trash)
        os.rename(self.workdir, self.final)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
        return self.final

    def abort(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


@dataclass
class ExternalSet:
    """One stored external test set (read lazily)."""

    path: Path
    metrics: dict = field(repr=False)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def specs(self) -> list[str]:
        return list(self.metrics.get("specs") or [])

    @property
    def n_images(self) -> int:
        return int(self.metrics.get("n_images") or 0)

    @property
    def left_out(self) -> list[dict]:
        """``{"path", "labels", "reason"}`` of images not scored (unknown class, unreadable)."""
        return list(self.metrics.get("left_out") or [])

    @property
    def archs(self) -> list[str]:
        return list(self.metrics.get("backbones") or {})

    def _b(self, arch: str) -> dict:
        return (self.metrics.get("backbones") or {}).get(arch) or {}

    def auc(self, arch: str, cls: str) -> ClassMetrics:
        return ClassMetrics.of(((self._b(arch).get("test") or {}).get("per_class") or {}).get(cls))

    def macro(self, arch: str) -> ClassMetrics:
        return ClassMetrics.of((self._b(arch).get("test") or {}).get("macro"))

    def drop(self, arch: str, cls: str) -> dict:
        """``{"internal", "external", "drop", "ci_low", "ci_high"}`` (internal test AUC minus this site's)."""
        return ((self._b(arch).get("drop") or {}).get(cls)) or {}

    def point(self, arch: str, cls: str, name: str = "youden") -> OperatingPoint:
        raw = ((self._b(arch).get("thresholds") or {}).get(cls) or {}).get(name)
        return OperatingPoint.of(name, raw)

    def calibration(self, arch: str) -> dict:
        return self._b(arch).get("calibration") or {}

    def subgroup_rows(self, arch: str) -> list[dict]:
        return list((self._b(arch).get("subgroups") or {}).get("rows") or [])

    def ood_rate(self, arch: str | None = None) -> float | None:
        return self.metrics.get("ood_rate")

    def images(self) -> pd.DataFrame:
        return pd.read_parquet(self.path / IMAGES)

    def thumbnails(self) -> np.ndarray:
        return np.load(self.path / THUMBNAILS, mmap_mode="r")

    def predictions(self, arch: str) -> pd.DataFrame:
        return pd.read_parquet(self.path / BACKBONES / arch / PREDICTIONS)

    def features(self, arch: str) -> np.ndarray:
        return np.load(self.path / BACKBONES / arch / FEATURES, mmap_mode="r")


def read_external(path: str | Path) -> ExternalSet:
    path = Path(path)
    try:
        metrics = json.loads((path / METRICS).read_text())
    except (OSError, ValueError) as exc:
        raise RunFormatError(f"{path}: not a readable external test set ({exc})") from exc
    missing = [f for f in (IMAGES, THUMBNAILS) if not (path / f).exists()]
    for arch in metrics.get("backbones") or {}:
        missing += [f"{BACKBONES}/{arch}/{f}" for f in (PREDICTIONS, FEATURES)
                    if not (path / BACKBONES / arch / f).exists()]
    if missing:
        raise RunFormatError(f"{path}: missing files: {', '.join(missing)}")
    return ExternalSet(path, metrics)


def list_external(exp_path: str | Path) -> tuple[list[ExternalSet], list[str]]:
    """The experiment's readable external sets (by name) and a warning per broken folder."""
    return scan_folders(external_root(exp_path), read_external)
