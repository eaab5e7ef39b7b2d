"""Fake experiments for the app tests, written through ``runs.ExperimentWriter`` (no training).

They have the exact shape ``train.py`` publishes but known numbers, so the page tests can assert the
dataset-card counts and model-card AUCs, and run in a second instead of training a model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from covidviz import runs
from covidviz.data.labels import MULTICLASS, MULTILABEL
from covidviz.data.table import make_table
from covidviz.io import atomic_write_json

MULTICLASS_NAMES = ["COVID-19", "Normal", "Pneumonia"]
MULTILABEL_NAMES = ["Effusion", "Pneumonia", "Cardiomegaly"]
# Split by patient index (60/20/20), so a patient's two images never straddle splits.
SPLIT_CYCLE = ["train", "train", "val", "train", "test", "train", "train", "val", "train", "test"]
LABEL_CYCLE = [0, 1, 2, 1, 2, 1, 2]  # class index by patient: COVID-19 1/7, Normal 3/7, Pneumonia 3/7

# Per-backbone test AUCs the model card must show (None: class absent from the test split).
AUCS = {
    "densenet121": {"COVID-19": 0.912, "Normal": 0.874, "Pneumonia": 0.803},
    "resnet50": {"COVID-19": 0.851, "Normal": 0.799, "Pneumonia": 0.766},
}
AUCS_MULTILABEL = {
    "densenet121": {"Effusion": 0.781, "Pneumonia": 0.702, "Cardiomegaly": None},
}


def _labels_for(i: int, multilabel: bool, names: list[str]) -> str:
    if not multilabel:
        # By patient (both images of a patient share the diagnosis); uneven classes (COVID rarest)
        # so a swapped row or column would show; with SPLIT_CYCLE every class reaches every split.
        return names[LABEL_CYCLE[(i // 2) % len(LABEL_CYCLE)]]
    if i % 4 == 0:
        return ""  # no finding
    return "|".join(n for k, n in enumerate(names) if (i >> k) & 1) or names[0]


def image_table(n: int, names: list[str], multilabel: bool) -> pd.DataFrame:
    rows = []
    for i in range(n):
        patient = i // 2  # two images per patient; both land in the same split below
        rows.append({
            "image_id": f"fake:{i:04d}", "path": f"/nonexistent/fake/{i:04d}.png",
            "labels": _labels_for(i, multilabel, names), "patient_id": f"fake:p{patient}",
            "dataset": "synthetic", "source": "hospital-A" if i % 3 else "hospital-B",
            "view": "PA", "sex": "MF"[i % 2], "age": 30 + i % 50,
        })
    table = make_table(rows)
    table["split"] = [SPLIT_CYCLE[(i // 2) % len(SPLIT_CYCLE)] for i in range(n)]
    return table


def _manifest(names: list[str], task: str, table: pd.DataFrame, aucs: dict, warning: str | None) -> dict:
    counts = table["split"].value_counts().to_dict()
    patients = table.groupby("split")["patient_id"].nunique().to_dict()
    backbones = {}
    for k, (arch, per_class) in enumerate(aucs.items()):
        auc = {n: per_class.get(n) for n in names}
        defined = [v for v in auc.values() if v is not None]
        backbones[arch] = {
            "init": {"weights": "none", "source": "random", "warning": warning if k == 0 else None},
            "feature_dim": 8, "cam_layer": "features", "epochs_trained": 3, "best_epoch": 2 + k % 2,
            "stopped_early": k == 1,
            "best_val_auc": 0.8 + 0.01 * k, "train_seconds": 83.4 + k, "device": "cpu",
            "metrics": {"test": {"auc": auc, "macro_auc": float(np.mean(defined)) if defined else None,
                                 "n": int(counts.get("test", 0))},
                        "val": {"auc": auc, "macro_auc": 0.8}},
        }
    return {
        "status": "running", "created": "2026-11-25T18:00:00", "covidviz_version": "0.1.0",
        "dataset": {"specs": ["synthetic:fake"], "n_images": len(table), "n_patients": table["patient_id"].nunique(),
                    "sources": [{"kind": "synthetic", "root": "", "description": "fake", "n_images": len(table),
                                 "n_skipped": 2}],
                    "skipped": [{"path": "/nonexistent/broken-a.png", "reason": "cannot decode image"},
                                {"path": "/nonexistent/broken-b.dcm", "reason": "DICOM without pixel data"}]},
        "labels": {"names": names, "task": task},
        "split": {"seed": 0, "fractions": [0.6, 0.2, 0.2], "counts": counts, "patients": patients},
        "preprocessing": {"image_size": 32, "channels": 3, "mean": [0.485, 0.456, 0.406],
                          "std": [0.229, 0.224, 0.225], "resize": "bilinear, whole image to a square"},
        # Nested like train.py writes it: CLI-level keys, optimisation settings under "train".
        "config": {"data": ["synthetic:fake"], "archs": list(aucs), "image_size": 32, "weights": "none",
                   "device": "auto", "train": {"epochs": 3, "batch_size": 16, "lr": 1e-3, "weight_decay": 1e-4,
                                               "patience": 5, "seed": 0}},
        "backbones": backbones,
    }


def _history(k: int) -> list[dict]:
    return [{"epoch": e, "train_loss": 1.0 / e + 0.1 * k, "val_loss": 1.1 / e + 0.05 * k,
             "val_auc": 0.6 + 0.07 * e - 0.02 * k, "val_auc_per_class": {}, "lr": 1e-3, "seconds": 27.8}
            for e in (1, 2, 3)]


def make_fake_experiment(root: Path, name: str = "fake", n: int = 60, multilabel: bool = False,
                         aucs: dict | None = None, completed: str = "2026-11-25T19:00:00",
                         init_warning: str | None = None) -> Path:
    """Publish a fake experiment ``root/name`` and return its folder."""
    names = MULTILABEL_NAMES if multilabel else MULTICLASS_NAMES
    aucs = aucs or (AUCS_MULTILABEL if multilabel else AUCS)
    table = image_table(n, names, multilabel)
    writer = runs.ExperimentWriter(root, name)
    writer.write_manifest(_manifest(names, MULTILABEL if multilabel else MULTICLASS, table, aucs, init_warning))
    writer.write_images(table)
    rng = np.random.default_rng(0)
    writer.write_thumbnails(rng.integers(0, 256, size=(n, 64, 64), dtype=np.uint8))
    for k, arch in enumerate(aucs):
        probs = rng.dirichlet(np.ones(len(names)), size=n)
        preds = pd.DataFrame({"image_id": table["image_id"], **{runs.PROB_PREFIX + c: probs[:, j]
                                                                 for j, c in enumerate(names)}})
        writer.write_backbone(arch, {"head.weight": torch.zeros(len(names), 8)}, preds,
                              rng.normal(size=(n, 8)), _history(k))
    folder = writer.commit()
    # commit() stamps "now"; tests need a known order (newest first) so pin the completion time.
    manifest = json.loads((folder / runs.MANIFEST).read_text())
    manifest["completed"] = completed
    atomic_write_json(folder / runs.MANIFEST, manifest)
    return folder


def make_broken_folders(root: Path) -> dict[str, Path]:
    """A folder with a garbage manifest and a foreign folder with random files."""
    bad = root / "bad"
    bad.mkdir(parents=True)
    (bad / runs.MANIFEST).write_text("{not json at all")
    foreign = root / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("holiday photos")
    (foreign / "data.bin").write_bytes(bytes(range(256)))
    return {"bad": bad, "foreign": foreign}


def expected_counts(folder: Path) -> pd.DataFrame:
    """Class x split counts straight from images.parquet, computed independently of covidviz.ui."""
    table = pd.read_parquet(folder / runs.IMAGES)
    rows = []
    for cell, split in zip(table["labels"], table["split"]):
        for lab in (cell.split("|") if cell else ["No finding"]):
            rows.append((lab, split))
    return pd.DataFrame(rows, columns=["label", "split"]).value_counts()
