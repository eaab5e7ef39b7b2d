"""The analysis step: everything the app pages read, computed once and stored in the experiment.

``analyse_experiment(path)`` runs after training (``train.py`` calls it before publishing) or on an
existing experiment (``python train.py analyze runs/EXP``). It reads the stored probabilities,
features and thumbnails (never the originals, except the few test images scored for CAM
localisation) and writes, through the run format:

- ``analysis.json``: test metrics with patient-bootstrap CIs, paired backbone comparisons,
  validation-chosen thresholds, temperature-scaling calibration, subgroup AUCs and confounding
  warnings, and a trivial thumbnail baseline (is the signal disease or shortcut?);
- per backbone ``projections.npz/.json`` (PCA, t-SNE, UMAP maps, their quality, and the arrays of a
  ``MapPlacer`` for uploads plus the training images' nearest-neighbour distances for the
  out-of-distribution check), ``som.npz/.json``, ``localisation.json`` and ``lungs.json`` (how much of
  each class's heat-map weight lies on the lung fields: ``covidviz.analysis.lungs``);
- ``sources.json``: the source probe (how well a linear classifier on each backbone's test features
  tells the hospitals apart inside each class) and the within-source AUCs beside the thumbnail baseline
  (``covidviz.analysis.sources``; from the stored features and probabilities, no model runs);
- ``ood.npz`` + ``ood.json``: the out-of-distribution detector of ``covidviz.ood.detector``, fitted on
  the training features of every backbone, its cut-off chosen on validation for the stated false-alarm
  rate (``covidviz.ood.FALSE_ALARM_RATE``; one verdict per upload for the inference service);
- a manifest ``analysis`` record (when, seed, what was computed); thresholds and calibration are
  stored once, in ``analysis.json``.

Each file is written atomically and the manifest last, so an interrupted analysis leaves the
experiment as readable as it was before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from covidviz import runs
from covidviz.analysis.report import analyse_predictions, format_summary, thumbnail_baseline
from covidviz.data.labels import MULTICLASS, split_labels
from covidviz.io import to_json_ready
from covidviz.ood.detector import analyse_ood
from covidviz.stats.projection import METHODS as PROJECTION_METHODS
from covidviz.stats.projection import MapPlacer, fit_projections
from covidviz.stats.som import fit_som

log = logging.getLogger(__name__)

ANALYSIS_VERSION = 1
OOD_SAMPLE = 2000


def primary_label_index(label_cells, names) -> np.ndarray:
    """One integer per image for colouring and kNN agreement: its first label, or -1 (no finding)."""
    out = np.full(len(label_cells), -1, np.int64)
    for i, cell in enumerate(label_cells):
        labs = [lab for lab in split_labels(cell) if lab in names]
        if labs:
            out[i] = names.index(labs[0])
    return out


def _train_nn_distances(placer: MapPlacer, pca50_train: np.ndarray, seed: int) -> np.ndarray:
    """Sorted distance from (a sample of) training images to their nearest OTHER training image."""
    rng = np.random.default_rng(seed)
    n = len(pca50_train)
    sample = rng.choice(n, size=min(n, OOD_SAMPLE), replace=False)
    Z = pca50_train[sample].astype(np.float64)
    ref = placer._ref64  # the placer's own reference matrix: one definition of the distance space
    d2 = (ref ** 2).sum(1)[None, :] - 2 * Z @ ref.T + (Z ** 2).sum(1)[:, None]
    d2[np.arange(len(sample)), sample] = np.inf  # exclude the image itself
    return np.sort(np.sqrt(np.maximum(d2.min(1), 0))).astype(np.float32)


def _projections(exp: runs.Experiment, arch: str, label_idx, train_mask, seed, methods) -> dict:
    feats = np.asarray(exp.features(arch), dtype=np.float32)
    proj = fit_projections(feats, label_idx, seed=seed, methods=methods)
    placer = MapPlacer.from_projection(proj, mask=train_mask)
    arrays = {f"coords_{m}": c for m, c in proj["coords"].items()}
    arrays.update(placer.to_stored(_train_nn_distances(placer, proj["pca50"][train_mask], seed)))
    exp.save_arrays(runs.PROJECTIONS, arrays, arch)
    info = {"methods": proj["methods"], "params": proj["params"], "quality": proj["quality"],
            "fit_seconds": proj["fit_seconds"]}
    exp.save_json(runs.PROJECTIONS_INFO, to_json_ready(info), arch)
    return info


def _som(exp: runs.Experiment, arch: str, onehot, probs, train_mask, seed) -> dict:
    feats = np.asarray(exp.features(arch), dtype=np.float32)
    som = fit_som(feats, onehot, probs, train_mask, seed=seed)
    arrays = {k: v for k, v in som.items() if isinstance(v, np.ndarray)}
    arrays.update({f"reducer_{k}": np.asarray(v) for k, v in som["reducer"].items() if isinstance(v, np.ndarray)})
    exp.save_arrays(runs.SOM, arrays, arch)
    info = {"grid": list(som["grid"]), "params": som["params"], "qe_percentiles": som["qe_percentiles"],
            "quantization_error": som["quantization_error"], "topographic_error": som["topographic_error"],
            "fit_seconds": som["fit_seconds"]}
    exp.save_json(runs.SOM_INFO, to_json_ready(info), arch)
    return info


def analyse_experiment(path: str | Path, *, seed: int = 0, n_boot: int = 1000, projections=PROJECTION_METHODS,
                       localisation: bool = True, max_localisation_images: int = 120,
                       shortcuts: bool = False, max_shortcut_images: int = 200,
                       lungs: bool | None = None, max_lung_images: int = 200, sources: bool = True,
                       say: Callable[[str], None] | None = None) -> dict:
    """Compute and store the analysis of the experiment at ``path``; returns the metrics report.

    ``lungs`` (default: as ``localisation``): the lung-weight shares of every backbone's maps.
    ``sources``: the source probe and within-source AUCs (cheap: stored features and probabilities).
    The summary tables go to ``say`` (the CLI passes ``print``); by default they are logged."""
    say = say or log.info
    t0 = time.time()
    exp = runs.read_experiment(path)
    images, labels = exp.images(), exp.labels
    names = list(labels.names)
    onehot = labels.onehot(images["labels"])
    probs = {arch: exp.probabilities(arch) for arch in exp.backbones}
    train_mask = (images["split"] == "train").to_numpy()

    report = analyse_predictions(images, labels, probs, seed=seed, n_boot=n_boot)
    try:
        report["baseline"] = thumbnail_baseline(np.asarray(exp.thumbnails()), images, labels, seed=seed)
    except ValueError as exc:  # e.g. a class missing from train: the baseline is optional
        report["baseline"] = None
        log.warning("thumbnail baseline skipped: %s", exc)
    report = to_json_ready(report)
    exp.save_json(runs.ANALYSIS, report)

    try:
        ood = analyse_ood(exp, seed=seed)
    except ValueError as exc:  # e.g. no validation images: the app then gives "no verdict"
        ood = None
        log.warning("out-of-distribution detector skipped: %s", exc)
    ood_summary = None if ood is None else {
        "detector": ood["detector"], "false_alarm_rate": ood["false_alarm_rate"],
        **{k: ood["detectors_detail"][ood["detector"]].get(k) for k in ("cutoff", "val_false_alarm", "test_false_alarm")}}

    label_idx = primary_label_index(images["labels"], names)
    per_backbone = {}
    for arch in exp.backbones:
        rec = {"projections": _projections(exp, arch, label_idx, train_mask, seed, projections)}
        rec["som"] = _som(exp, arch, onehot, probs[arch], train_mask, seed)
        if localisation:
            from covidviz.analysis.localisation import localisation_report

            loc = localisation_report(exp, arch, max_images=max_localisation_images, seed=seed)
            if loc is not None:
                exp.save_json(runs.LOCALISATION, to_json_ready(loc), arch)
                rec["localisation"] = {m: v["pointing_rate"] for m, v in loc["methods"].items()}
        per_backbone[arch] = rec
    lung_result = None
    if localisation if lungs is None else lungs:
        from covidviz.analysis.lungs import run_lungs

        lung_result = run_lungs(exp, seed=seed, n_boot=n_boot, max_images=max_lung_images)
        for arch, res in lung_result.items():
            per_backbone[arch]["lungs"] = {"source": res["source"], "n_images": res["n_images"],
                                           "share": {cls: c["all"]["share"] for cls, c in res["per_class"].items()}}

    source_result = None
    if sources:
        from covidviz.analysis.sources import run_sources

        source_result = run_sources(exp, seed=seed, n_boot=n_boot)
        for arch in per_backbone if source_result else ():
            per_backbone[arch]["source_probe"] = {
                cls: c["scores"].get(arch, {}).get("auc") for cls, c in source_result["probe"]["classes"].items()
                if not c.get("reason")}

    # Thresholds and calibration live in analysis.json only (read through runs.records).
    exp.update_manifest(analysis={
        "version": ANALYSIS_VERSION, "completed": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "seconds": round(time.time() - t0, 1), "seed": seed, "n_boot": n_boot,
        "projections": list(projections), "backbones": to_json_ready(per_backbone), "ood": to_json_ready(ood_summary),
        "task": MULTICLASS if labels.task == MULTICLASS else labels.task})
    audit = None
    if shortcuts:  # about 5 forward passes per test image and backbone: on request (train.py analyze --shortcuts)
        from covidviz.analysis.shortcuts import format_audit, run_audit

        audit = run_audit(exp, seed=seed, n_boot=n_boot, max_images=max_shortcut_images)
    say(format_summary(report, labels))
    if lung_result is not None:
        from covidviz.analysis.lungs import format_lungs

        say(format_lungs(lung_result, labels))
    if audit is not None:
        say(format_audit(audit, labels))
    if sources:
        from covidviz.analysis.sources import format_sources

        say(format_sources(source_result))
    for arch, rec in per_backbone.items():
        q = rec["projections"]["quality"]
        maps = ", ".join(f"{m} trust {q[m]['trustworthiness']:.2f}" for m in rec["projections"]["methods"] if m in q)
        som = rec["som"]
        loc = rec.get("localisation")
        say(f"[{arch}] maps: {maps}; SOM {som['grid'][0]}x{som['grid'][1]} QE {som['quantization_error']:.3f} "
            f"TE {som['topographic_error']:.3f}" + (f"; CAM pointing game {loc}" if loc else ""))
    if ood_summary is not None:
        test_far = ood_summary["test_false_alarm"]
        say(f"[ood] {ood_summary['detector']} score over {' + '.join(ood['archs'])}: cut-off chosen on {ood['n_val']} "
            f"validation images for {100 * ood_summary['false_alarm_rate']:.0f} % false alarms"
            + (f"; {100 * test_far:.1f} % of test images flagged" if test_far is not None else ""))
    return report
