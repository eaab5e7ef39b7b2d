#!/usr/bin/env python
"""Resident memory over many diagnose predictions: it must stay flat (within a few percent).

One ``covidviz.inference.Predictor`` with DenseNet121 and ResNet50 (random weights, the stand-in
experiment of ``bench/diagnose.py``) predicts ``--n`` different films, each with classic CAM and
Grad-CAM for both backbones, an overlay PNG per backbone and, every 10th, a heat map for another class
and a case report: what a long-running app session does. Prints the process's resident set size
(VmRSS) after a warm-up and every ``--every`` predictions, and the growth from warm-up to the end.

    python -m bench.leak [--n 300] [--size 128] [--warmup 20] [--threads N]
"""

from __future__ import annotations

import argparse
import gc
from pathlib import Path

import torch

from bench.diagnose import ARCHS, StandIn, film
from covidviz import inference
from covidviz.views import diagnose as diagnose_view
from covidviz.views import report as report_view


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--size", type=int, default=128, help="model input size (px)")
    ap.add_argument("--film", type=int, default=512, help="side of each decoded film (px)")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    exp = StandIn(ARCHS, args.size)
    pred = inference.Predictor(exp)
    names = list(exp.labels.names)

    def one(i: int) -> None:
        gray = film(args.film, seed=i)
        d = pred.predict(gray, f"film{i}.png", methods=("cam", "gradcam"))
        heats = {}
        for arch, b in d.backbones.items():
            heats[arch] = diagnose_view.heat_for_display(b.cams["gradcam"])
            diagnose_view.overlay_png(gray, heats[arch], 0.45)
        if i % 10 == 0:
            for arch, b in d.backbones.items():
                pred.heatmaps(d.pixels, arch, (b.top + 1) % len(names), ("cam",))
            report_view.case_report_png(report_view.CaseReport(d, names), gray, heats)

    for i in range(args.warmup):
        one(i)
    gc.collect()
    base = rss_mb()
    print(f"leak check: {', '.join(ARCHS)} at {args.size} px, films {args.film} px, CAM + Grad-CAM + overlays "
          f"per prediction, torch threads={torch.get_num_threads()}")
    print(f"after {args.warmup} warm-up predictions: RSS {base:.1f} MB")
    peak = base
    for i in range(1, args.n + 1):
        one(args.warmup + i)
        if i % args.every == 0 or i == args.n:
            gc.collect()
            now = rss_mb()
            peak = max(peak, now)
            print(f"after {i:4d} more: RSS {now:.1f} MB ({100 * (now - base) / base:+.1f} %)")
    end = rss_mb()
    print(f"growth over {args.n} predictions: {end - base:+.1f} MB ({100 * (end - base) / base:+.1f} %), "
          f"peak {peak:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
