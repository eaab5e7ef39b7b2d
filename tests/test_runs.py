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


def test_analysis_records_read_tolerantly():
    """The analysis' JSON files read into dataclass records (``from_json``): a part an older analysis did not
    write reads as its default, never a ``KeyError``; a key no field reads is kept in ``extra``."""
    for cls in (runs.Analysis, runs.Localisation, runs.ProjectionsInfo, runs.SomInfo, runs.Shortcuts, runs.OodInfo):
        empty = cls.from_json({})
        assert empty == cls({}) == cls() == cls.from_json(None) and empty.extra == {} and empty.raw == {}
    a = runs.Analysis.from_json({"meta": {"names": ["A", "B"], "n": {"test": 9}}, "future": 1,
                                 "backbones": {"r": {"test": {"macro": {"auc": 0.8}}, "calibration": {}}}})
    assert a.names == ["A", "B"] and a.n_images() == 9 and a.n_images("val") is None and a.archs == ["r"]
    assert a.extra == {"future": 1} and a.raw["future"] == 1 and a.has("r") and not a.has("x")
    b = a.backbone("r")
    assert b.macro.auc == 0.8 and b.macro.ci_low is None and b.metrics("A").auc is None and b.n_test is None
    assert b.calibration is None and b.temperature is None and b.subgroup_rows == [] and b.thresholds() == {}
    assert b.point("A").threshold is None and not b.point("A").defined and b.point("A").rate("ppv") == runs.records.Rate()
    loc = runs.Localisation.from_json({"methods": {"random": {"pointing_rate": 0.2}}, "grid": [2, 2]})
    assert (loc.default_method, loc.default_layer, loc.layers) == ("cam", "block4", ["block4"])
    assert loc.random_rate == 0.2 and loc.grid() == (2, 2) and loc.grid("block3") is None
    assert runs.ProjectionsInfo.from_json({"quality": {"k": 5}}).k == 5 and runs.ProjectionsInfo().k == 10
    s = runs.Shortcuts.from_json({"fraction": 0.1, "seed": 3, "verdicts": ["v"]})
    assert s.settings["fraction"] == 0.1 and s.settings["border"] is None and s.extra == {}
    assert s.split == "test" and s.n_skipped == 0 and s.verdicts() == ["v"] and s.verdicts("r") == []


def test_analysis_files_read_into_their_records(tiny_experiment):
    """What the analysis step writes, the records read: no key of analysis.json or projections.json is left
    unread (``extra`` empty), and ``from_json`` is the constructor on the file's object."""
    exp = runs.read_experiment(tiny_experiment)
    a = exp.analysis()
    assert a == runs.Analysis(exp.load_json(runs.ANALYSIS)) and a.extra == {} and a.archs == exp.backbones
    assert a.names == list(exp.labels.names) and a.n_images("test") == (exp.images()["split"] == "test").sum()
    for arch in exp.backbones:
        b = a.backbone(arch)
        assert b.extra == {} and b.macro.auc is not None and set(b.thresholds()) == set(exp.labels.names)
        info = exp.projections_info(arch)
        assert {"pca", "tsne"} <= set(info.methods) and info.extra == {} and info.k > 0
