"""The run format: round trip of a trained experiment, atomic publishing, clear errors on broken folders."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import covidviz
from covidviz import runs
from covidviz.data.imageio import read_image
from covidviz.data.splits import check_no_leakage
from covidviz.io import atomic_write_json


def test_round_trip_of_trained_experiment(tiny_experiment):
    exp = runs.read_experiment(tiny_experiment)
    m = exp.manifest
    assert m["schema_version"] == runs.SCHEMA_VERSION and m["status"] == "complete"
    images = exp.images()
    assert len(images) == m["dataset"]["n_images"] == sum(m["split"]["counts"].values())
    assert set(images["split"]) == {"train", "val", "test"}
    check_no_leakage(images, images["split"])
    assert exp.thumbnails().shape == (len(images), 64, 64)
    assert exp.backbones == ["tinycnn", "densenet121"]
    for arch, dim in (("tinycnn", 128), ("densenet121", 1024)):
        probs = exp.probabilities(arch)
        assert probs.shape == (len(images), exp.labels.num_classes)
        assert np.allclose(probs.sum(1), 1, atol=1e-4)  # multi-class phantoms: softmax
        assert list(exp.predictions(arch)["image_id"]) == list(images["image_id"])
        assert exp.features(arch).shape == (len(images), dim) and exp.features(arch).dtype == np.float16
        rec = exp.backbone(arch)
        assert rec["init"]["source"] == "random"
        assert set(rec["metrics"]["test"]["auc"]) == set(exp.labels.names)
        assert exp.record(arch) == exp.info.backbones[arch] and exp.record(arch).to_json() == rec


def test_manifest_is_written_through_its_records(tiny_experiment):
    """The pipeline writes the manifest from ``runs.ManifestInfo``: it reads back into the same records and
    writes back unchanged, and it records this covidviz's version (pyproject's)."""
    exp = runs.read_experiment(tiny_experiment)
    info = exp.info
    assert info.to_json() == exp.manifest
    assert info.version == covidviz.__version__ and info.labels == exp.labels and info.preprocessing == exp.preprocessing
    assert info.dataset.n_images == len(exp.images()) and info.split.counts["test"] == (exp.images()["split"] == "test").sum()
    assert info.extra == {} and all(not b.extra for b in info.backbones.values())


def test_saved_weights_reproduce_saved_probabilities(tiny_experiment):
    """weights.pt is the model that made predictions.parquet (loaded with weights_only=True)."""
    exp = runs.read_experiment(tiny_experiment)
    model = exp.load_model("tinycnn")
    prep = exp.preprocessing
    images = exp.images()
    rows = images.index[images["split"] == "test"][:5]
    x = prep.to_tensor(np.stack([prep.to_model_pixels(read_image(p)) for p in images.loc[rows, "path"]]))
    with torch.no_grad():
        probs = model(x).softmax(1).numpy()
    assert np.allclose(probs, exp.probabilities("tinycnn")[rows], atol=1e-4)


def test_best_epoch_is_the_kept_one(tiny_experiment):
    exp = runs.read_experiment(tiny_experiment)
    for arch in exp.backbones:
        hist = exp.history(arch)
        aucs = [h["val_auc"] for h in hist]
        assert exp.backbone(arch)["best_epoch"] == hist[int(np.argmax(aucs))]["epoch"]


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("breakage,match", [
    ("garbage_manifest", "unreadable"),
    ("foreign_manifest", "not a covidviz"),
    ("future_schema", "schema version 99"),
    ("missing_weights", "weights.pt"),
    ("no_manifest", "no manifest.json"),
])
def test_broken_folders_raise_naming_the_folder(tiny_experiment, tmp_path, breakage, match):
    d = _copy(tiny_experiment, tmp_path / f"broken-{breakage}")
    mpath = d / runs.MANIFEST
    if breakage == "garbage_manifest":
        mpath.write_text("{not json")
    elif breakage == "foreign_manifest":
        mpath.write_text(json.dumps({"name": "someone else's"}))
    elif breakage == "future_schema":
        m = json.loads(mpath.read_text())
        m["schema_version"] = 99
        mpath.write_text(json.dumps(m))
    elif breakage == "missing_weights":
        (d / runs.BACKBONES / "tinycnn" / runs.WEIGHTS).unlink()
    elif breakage == "no_manifest":
        mpath.unlink()
    with pytest.raises(runs.RunFormatError, match=match) as err:
        runs.read_experiment(d)
    assert str(d) in str(err.value)


def test_list_experiments_skips_broken_and_partial(tiny_experiment, tmp_path):
    root = tmp_path / "runs"
    _copy(tiny_experiment, root / "good")
    (root / "junk").mkdir()
    (root / "junk" / "notes.txt").write_text("hello")
    (root / runs.PARTIAL / "half").mkdir(parents=True)
    (root / "file.txt").write_text("not a folder")
    found, warnings = runs.list_experiments(root)
    assert [e.path.name for e in found] == ["good"]
    assert len(warnings) == 1 and "junk" in warnings[0]


def test_writer_never_replaces_without_overwrite(tiny_experiment, tmp_path):
    root = tmp_path / "runs"
    _copy(tiny_experiment, root / "exp")
    with pytest.raises(FileExistsError, match="--overwrite"):
        runs.ExperimentWriter(root, "exp")
    w = runs.ExperimentWriter(root, "other")
    assert w.workdir.parent.name == runs.PARTIAL
    assert runs.list_experiments(root)[0][0].path.name == "exp"  # the partial is invisible
    with pytest.raises(ValueError, match="invalid experiment name"):
        runs.ExperimentWriter(root, "../escape")


def test_atomic_write_leaves_no_temp_files(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"x": np.float32(1.5), "n": np.int64(3), "nan": np.float64("nan")})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1.5, "n": 3, "nan": None}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
