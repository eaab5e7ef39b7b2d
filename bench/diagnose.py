#!/usr/bin/env python
"""Diagnose latency: decoded upload -> both backbones' probabilities + heat-map overlays, as a ratio to
two bare forward passes.

Builds DenseNet121 and ResNet50 (random weights: speed does not depend on them) behind a
``covidviz.inference.Predictor`` over a stand-in experiment (no analysis artefacts, so no map placement:
that is a k-NN over the training features, milliseconds). One phantom film of ``--film`` px is the
"decoded upload". Each round, interleaved so drift on a shared machine hits every row alike, measures:

- ``bare``: ``model(x)`` under ``torch.no_grad()`` for both backbones, on the already prepared tensor;
- ``diagnose cam``: ``Predictor.predict`` (resize to the model input, tensor, forward with the pooled
  features captured, calibrated probabilities, thresholds, classic CAM) for both backbones, plus each
  backbone's RGB overlay at display size (long side 512 px);
- ``diagnose gradcam``: the same with Grad-CAM;
- ``cam + PNG encode``: ``diagnose cam`` plus encoding both overlays as PNG (the download button).

Prints median milliseconds and the median per-round ratio to ``bare`` (targets: CAM <= 1.3, Grad-CAM <= 3).
The clock is process CPU time by default (``--clock cpu``), so other jobs on a shared 2-core machine
stretch wall time but not the ratios.

    python -m bench.diagnose [--size 224] [--repeats 5] [--threads N] [--clock cpu|wall]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from covidviz import inference
from covidviz.anatomy.inputs import model_pixels
from covidviz.data.labels import MULTICLASS, LabelSpace
from covidviz.data.preprocess import Preprocessing
from covidviz.models import Classifier
from covidviz.runs.records import Analysis
from covidviz.views import diagnose as diagnose_view

ARCHS = ("densenet121", "resnet50")


class StandIn:
    """The little of ``runs.Experiment`` a Predictor reads, for models built in memory."""

    def __init__(self, archs, size: int, names=("COVID-19", "Normal", "Pneumonia")):
        self.name, self.path = "bench", Path("/nonexistent")
        self.labels = LabelSpace(tuple(names), MULTICLASS)
        self.preprocessing = Preprocessing(size)
        self.backbones = list(archs)
        self.manifest = {"backbones": {a: {} for a in archs}}

    def backbone(self, arch):
        return self.manifest["backbones"][arch]

    def analysis(self):
        return Analysis({"backbones": {a: {"calibration": {"temperature": 1.5}} for a in self.backbones}})

    def has_artifact(self, name, arch=None):
        return False

    def load_model(self, arch):
        torch.manual_seed(0)
        return Classifier(arch, self.labels.num_classes).eval()




def film(side: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side] / side
    lungs = sum(np.exp(-(((x - cx) / 0.14) ** 2 + ((y - 0.5) / 0.3) ** 2)) for cx in (0.32, 0.68))
    img = 200 - 120 * lungs + rng.normal(0, 10, (side, side))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_clock(kind: str):
    return time.process_time if kind == "cpu" else time.perf_counter


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--film", type=int, default=1024, help="side of the decoded upload (px)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = make_clock(args.clock)
    exp = StandIn(ARCHS, args.size)
    pred = inference.Predictor(exp)
    gray = film(args.film)
    x = exp.preprocessing.to_tensor(model_pixels(exp.preprocessing, gray))

    def bare():
        with torch.no_grad():
            for m in pred.models.values():
                m(x)

    def run(method, png=False):
        def go():
            d = pred.predict(gray, "bench.png", methods=(method,))
            for b in d.backbones.values():
                heat = diagnose_view.heat_for_display(b.cams[method])
                (diagnose_view.overlay_png if png else diagnose_view.overlay_image)(gray, heat, 0.45)
        return go

    rows = {"bare (2 forwards)": bare, "diagnose cam": run("cam"), "diagnose gradcam": run("gradcam"),
            "cam + PNG encode": run("cam", png=True)}
    for f in rows.values():  # warm up (allocator, first-call costs)
        f()
    times = {k: [] for k in rows}
    for _ in range(args.repeats):
        for k, f in rows.items():
            t0 = clock()
            f()
            times[k].append(clock() - t0)
    base = times["bare (2 forwards)"]
    print(f"diagnose latency: {', '.join(ARCHS)} at {args.size} px, film {args.film}x{args.film}, "
          f"{args.repeats} rounds, clock={args.clock}, torch threads={torch.get_num_threads()}")
    print(f"{'step':<22}{'median ms':>10}{'ratio':>8}  target")
    targets = {"diagnose cam": "<= 1.3", "diagnose gradcam": "<= 3"}
    for k, ts in times.items():
        ratio = statistics.median(t / b for t, b in zip(ts, base))
        print(f"{k:<22}{1000 * statistics.median(ts):>10.1f}{ratio:>8.2f}  {targets.get(k, '')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
