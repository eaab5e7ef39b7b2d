"""External test sets for the page tests: the shared tiny experiment copied once per session and
scored on a second "hospital" (phantoms from another generator setting) by the real
``evaluate_external``; and a fake set written straight through ``ExternalWriter`` (no model)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from covidviz import runs
from covidviz.runs.external import ExternalWriter

SITE = "site-b"
SITE_SPEC = "synthetic:45:difficulty=0.8,confounder=0.0,seed=7"
_EVALUATED: dict[str, Path] = {}


def tiny_with_external(tiny_experiment: Path, tmp_path_factory) -> Path:
    """A copy of the session's tiny experiment with the external set ``SITE`` (made once per session,
    ~10 s), alone in a runs folder of its own: point ``COVIDVIZ_RUNS`` at its parent."""
    from covidviz.analysis.external import evaluate_external

    key = str(tiny_experiment)
    if key not in _EVALUATED:
        root = tmp_path_factory.mktemp("runs-external")
        exp_path = Path(shutil.copytree(tiny_experiment, root / tiny_experiment.name))
        evaluate_external(exp_path, [SITE_SPEC], SITE, cache_dir=tmp_path_factory.mktemp("cache-external"), n_boot=50)
        _EVALUATED[key] = exp_path
    return _EVALUATED[key]


def fake_metric(auc: float, lo: float, hi: float) -> dict:
    return {"auc": auc, "ci_low": lo, "ci_high": hi, "n": 20, "n_pos": 5, "ap": 0.5, "roc": None, "pr": None}


def write_fake_external(exp_path: Path, site: str = SITE, n: int = 20, macro: float = 0.7,
                        drop: float = 0.1) -> dict:
    """A stored external set with known numbers (no model run): every backbone scores ``macro`` with CI
    [macro - 0.05, macro + 0.05] and a drop of ``drop`` [drop - 0.1, drop + 0.1]. Returns its metrics."""
    exp = runs.read_experiment(exp_path)
    names = list(exp.labels.names)
    rng = np.random.default_rng(1)
    images = pd.DataFrame({"image_id": [f"{site}:{i}" for i in range(n)], "labels": [names[i % len(names)] for i in range(n)],
                           "patient_id": [f"{site}:p{i}" for i in range(n)], "split": "external"})
    w = ExternalWriter(exp_path, site)
    w.write_images(images, rng.integers(0, 256, (n, 64, 64), dtype=np.uint8))
    backbones = {}
    for arch in exp.backbones:
        probs = rng.dirichlet(np.ones(len(names)), size=n)
        w.write_backbone(arch, pd.DataFrame({"image_id": images["image_id"],
                                             **{runs.PROB_PREFIX + c: probs[:, j] for j, c in enumerate(names)}}),
                         rng.normal(size=(n, 8)))
        backbones[arch] = {"test": {"per_class": {c: fake_metric(macro, macro - 0.05, macro + 0.05) for c in names},
                                    "macro": fake_metric(macro, macro - 0.05, macro + 0.05)},
                           "drop": {c: {"internal": macro + drop, "external": macro, "drop": drop,
                                        "ci_low": drop - 0.1, "ci_high": drop + 0.1} for c in [*names, "macro"]}}
    metrics = {"site": site, "specs": [f"folder:/data/{site}"], "n_images": n, "n_patients": n, "names": names,
               "left_out": [{"path": "/data/x.png", "labels": "Hernia", "reason": "class not in the label space"}],
               "backbones": backbones}
    w.write_metrics(metrics)
    w.commit()
    return metrics
