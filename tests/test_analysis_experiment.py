"""The analysis step as stored in a trained experiment: everything the pages read is there and consistent."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import train
from covidviz import runs
from covidviz.stats.projection import TRAIN_NN_KEY, MapPlacer, stored_nn_distances
from covidviz.stats.som import som_place


def test_analysis_files_are_complete_and_consistent(tiny_experiment):
    exp = runs.read_experiment(tiny_experiment)
    n = len(exp.images())
    report = exp.load_json(runs.ANALYSIS)
    assert set(report["backbones"]) == set(exp.backbones)
    assert report["comparisons"] and report["comparisons"][0]["a"] == "tinycnn"
    for cls in exp.labels.names:
        rec = report["backbones"]["tinycnn"]["test"]["per_class"][cls]
        if rec["auc"] is not None:
            assert rec["ci_low"] <= rec["auc"] <= rec["ci_high"]
    assert exp.manifest["analysis"]["version"] == 1
    # The OOD detector: one file for the experiment, all backbones, its cut-off in the manifest record.
    assert exp.has_artifact(runs.OOD) and exp.has_artifact(runs.OOD_INFO)
    ood = exp.manifest["analysis"]["ood"]
    assert ood["false_alarm_rate"] == 0.05 and ood["val_false_alarm"] <= 0.05
    assert exp.load_json(runs.OOD_INFO)["archs"] == exp.backbones
    for arch in exp.backbones:
        b = exp.analysis().backbone(arch)
        assert b.temperature is not None
        assert set(b.thresholds()) == set(exp.labels.names)
        assert "thresholds" not in exp.backbone(arch)  # stored once, in analysis.json
        proj = exp.load_arrays(runs.PROJECTIONS, arch)
        for m in ("pca", "tsne"):
            assert proj[f"coords_{m}"].shape == (n, 2) and np.isfinite(proj[f"coords_{m}"]).all()
        info = exp.load_json(runs.PROJECTIONS_INFO, arch)
        assert 0 <= info["quality"]["tsne"]["trustworthiness"] <= 1
        som = exp.load_arrays(runs.SOM, arch)
        assert som["node"].shape == (n,) and som["hits"].sum() == (exp.images()["split"] == "train").sum()
        loc = exp.load_json(runs.LOCALISATION, arch)  # phantoms have lesion masks
        assert loc["n_images"] > 0 and "cam" in loc["methods"] and "random" in loc["methods"]


def test_stored_placer_places_a_training_image_on_itself(tiny_experiment):
    exp = runs.read_experiment(tiny_experiment)
    arrays = exp.load_arrays(runs.PROJECTIONS, "densenet121")
    placer = MapPlacer.from_stored(arrays)
    feats = np.asarray(exp.features("densenet121"), np.float32)
    row = int(np.flatnonzero(exp.images()["split"] == "train")[0])
    placed = placer.place(feats[row:row + 1])
    assert placed.neighbors[0, 0] == row
    assert np.allclose(placed.coords["tsne"][0], arrays["coords_tsne"][row], atol=1e-3)
    som = exp.load_arrays(runs.SOM, "densenet121")
    node, qe, pct = som_place(som, feats[row])
    assert node == som["node"][row] and qe >= 0 and 0 <= pct <= 100
    assert np.all(np.diff(arrays[TRAIN_NN_KEY]) >= 0) and len(stored_nn_distances(arrays))


def test_analyze_command_reruns_in_place_and_rejects_bad_folders(tiny_experiment, tmp_path, capsys):
    copy = shutil.copytree(tiny_experiment, tmp_path / "copy")
    (copy / runs.ANALYSIS).unlink()
    (copy / runs.OOD).unlink()
    assert train.main(["analyze", str(copy), "--projections", "pca", "--n-boot", "200", "--no-localisation"]) == 0
    out = capsys.readouterr().out
    assert "Test ROC AUC" in out and "tinycnn" in out and "score over tinycnn + densenet121: cut-off chosen on" in out
    exp = runs.read_experiment(copy)
    assert exp.has_artifact(runs.ANALYSIS) and exp.manifest["analysis"]["n_boot"] == 200
    assert exp.has_artifact(runs.OOD)  # re-analysing an experiment from before OOD detection adds it
    assert train.main(["analyze", str(tmp_path / "nothing")]) == 2
    assert "not a folder" in capsys.readouterr().err


@pytest.mark.needs_data
def test_covid3_analysis_flags_source_confounding(shared_data, tmp_path):
    out = tmp_path / "runs"
    assert train.main(["--data", f"csv:{shared_data / 'covid3'}", "--arch", "tinycnn", "--epochs", "1",
                       "--image-size", "64", "--weights", "none", "--out", str(out), "--name", "c3", "--quiet",
                       "--projections", "pca"]) == 0
    report = runs.read_experiment(out / "c3").load_json(runs.ANALYSIS)
    assert any("hannover" in s and "COVID-19" in s for s in report["confounding"])
    rows = report["backbones"]["tinycnn"]["subgroups"]["rows"]
    assert {"hannover", "kermany"} <= {r["value"] for r in rows if r["column"] == "source"}
    assert report["baseline"]["source"]["accuracy"] > 0.9  # thumbnails alone reveal the hospital
