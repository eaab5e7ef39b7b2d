"""``manifest.json`` as dataclasses (``covidviz.runs.manifest``): a manifest saved by an older covidviz
reads into the records and writes back unchanged; missing keys read as defaults, unknown keys are kept.

``tests/data/manifest-0.1.0.json`` is a real manifest: the tiny experiment of ``tests/conftest.py``
(``train_tiny``: phantoms, tinycnn + densenet121, one epoch at 32 px, analysed) trained by covidviz
0.1.0, whose pipeline wrote the manifest as dict literals.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from covidviz import runs
from covidviz.data.labels import MULTICLASS, LabelSpace
from covidviz.data.preprocess import Preprocessing
from covidviz.runs.manifest import DatasetCard, ManifestBackbone, ManifestInfo, SplitCard

OLD = Path(__file__).parent / "data" / "manifest-0.1.0.json"


@pytest.fixture
def raw() -> dict:
    return json.loads(OLD.read_text())


def test_old_manifest_reads_into_the_records(raw):
    info = ManifestInfo.from_json(raw)
    assert (info.format, info.schema_version, info.name) == (runs.FORMAT_NAME, runs.SCHEMA_VERSION, "tiny-v1")
    assert info.status == "complete" and info.version == "0.1.0" and info.completed > info.created
    assert info.labels == LabelSpace(("COVID-19", "Normal", "Pneumonia"), MULTICLASS)
    assert info.preprocessing == Preprocessing(32)
    assert info.dataset.specs == info.data_specs == ["synthetic:90"]
    assert info.dataset.n_images == sum(info.split.counts.values()) == sum(s["n_images"] for s in info.sources) == 90
    assert info.split.unit == "patient" and info.split.fractions == [0.7, 0.15, 0.15] and info.skipped == []
    assert info.settings["epochs"] == 1 and info.settings["image_size"] == 32 and info.config["archs"] == ["tinycnn",
                                                                                                          "densenet121"]
    assert list(info.backbones) == ["tinycnn", "densenet121"]
    for arch, dim in (("tinycnn", 128), ("densenet121", 1024)):
        rec = info.backbones[arch]
        assert rec.arch == arch and rec.feature_dim == dim and rec.init["source"] == "random"
        assert rec.output_stride == raw["backbones"][arch]["output_stride"]
        assert rec.cam_grid == (32 // rec.output_stride,) * 2
        assert rec.epochs_trained == rec.best_epoch == rec.get("best_epoch") == 1 and rec.stopped_early is False
        assert set(rec.aucs("test")) == set(info.labels.names) and rec.n("test") == info.split.counts["test"]
        assert rec.macro_auc("val") == pytest.approx(rec.best_val_auc)
    assert info.analysis["version"] == 1 and info.extra == {}


def test_old_manifest_round_trips(raw):
    info = ManifestInfo.from_json(raw)
    assert info.to_json() == raw
    assert ManifestInfo.from_json(json.loads(json.dumps(info.to_json()))) == info


def test_missing_keys_read_as_defaults(raw):
    old = copy.deepcopy(raw)
    for key in ("torch_version", "split", "completed", "analysis"):
        del old[key]
    del old["preprocessing"]["crop"], old["dataset"]["specs"]
    del old["backbones"]["densenet121"]["output_stride"], old["backbones"]["densenet121"]["cam_grid"]
    info = ManifestInfo.from_json(old)
    assert info.torch_version is None and info.completed is None and info.analysis is None
    assert info.split == SplitCard() and info.preprocessing.crop == "none"
    assert info.data_specs == ["synthetic:90"]  # from the config when the dataset card has no specs
    rec = info.backbones["densenet121"]
    assert rec.output_stride == 32 and rec.cam_grid is None  # trained before the option: torchvision's stride
    written = info.to_json()
    assert "completed" not in written and "analysis" not in written and written["backbones"]["tinycnn"] == \
        raw["backbones"]["tinycnn"]
    empty = ManifestInfo.from_json({})
    assert empty == ManifestInfo() and empty.dataset == DatasetCard() and empty.labels is None
    assert empty.settings == {} and empty.sources == [] and empty.backbones == {}
    assert ManifestBackbone.from_json({}, "resnet50") == ManifestBackbone("resnet50", output_stride=32)


def test_unknown_keys_are_kept(raw):
    new = copy.deepcopy(raw)
    new["reviewed_by"] = {"name": "a radiologist"}
    new["dataset"]["licence"] = "CC-BY-4.0"
    new["split"]["strata"] = ["label", "sex"]
    new["backbones"]["tinycnn"]["ema_decay"] = 0.999
    info = ManifestInfo.from_json(new)
    assert info.extra == {"reviewed_by": {"name": "a radiologist"}} and info.dataset.extra == {"licence": "CC-BY-4.0"}
    assert info.split.extra == {"strata": ["label", "sex"]}
    assert info.backbones["tinycnn"].extra == {"ema_decay": 0.999} and info.backbones["tinycnn"].get("ema_decay") == 0.999
    assert info.to_json() == new


def test_writer_writes_and_reads_the_records(raw, tmp_path):
    writer = runs.ExperimentWriter(tmp_path, "rewritten")
    writer.write_manifest(ManifestInfo.from_json(raw))
    assert writer.read_manifest() == {**raw, "name": "rewritten"}  # the writer stamps the experiment's name
    assert writer.read_info() == ManifestInfo.from_json({**raw, "name": "rewritten"})
