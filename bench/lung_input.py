#!/usr/bin/env python
"""Training cost of the lung inputs (``train.py --input lung-crop | lung-mask``) against the whole film.

On one phantom dataset (default: the demo's, 600 films drawn at 128 px) and one recipe (default: the
demo's DenseNet121 at 64 px, output stride 8, batches of 16), measured in one run on this machine:

- cold cache: decoding the films into the pixel cache (``data.cache.build_cache``), for the lung
  inputs with one segmentation per film (``anatomy.inputs.cache_input``), into an empty folder;
- warm training: ``pipeline.run_experiment`` (load, split, fit, embed every film; no analysis) with
  that cache already built, which is every epoch and every later run; ``--repeats`` rounds, the
  inputs in a rotated order each round, the fastest round of each kept (the first run in a process
  pays one-off costs, and the load of a shared machine drifts);

and prints seconds and the ratios lung / full (these 2-core machines are noisy: only ratios from the
same run mean anything). Target (issue 23): warm training <= 1.2x the whole film's.

    python -m bench.lung_input [--data synthetic:600:difficulty=0.3,size=128] [--arch densenet121]
                               [--size 64] [--epochs 1] [--workers 0] [--repeats 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from covidviz.anatomy.inputs import cache_input
from covidviz.data.adapters import load_datasets
from covidviz.data.cache import build_cache
from covidviz.data.preprocess import INPUTS
from covidviz.pipeline import DEMO_DATA, RunConfig, run_experiment
from covidviz.training import TrainConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=DEMO_DATA[0])
    ap.add_argument("--arch", default="densenet121")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=0, help="cache-building processes (0: in this process)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    stride = {"densenet121": 8}.get(args.arch)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        table, _, _ = load_datasets([args.data], cache_dir=tmp / "cache" / "datasets", seed=0)  # phantoms drawn once
        paths = table["path"].tolist()
        cold, warm, fell_back = {}, {}, {}
        for name in INPUTS:
            t = time.perf_counter()
            cache = build_cache(paths, args.size, tmp / "cache" / "pixels", workers=args.workers, progress=False,
                                input=name, make_input=cache_input)
            cold[name] = time.perf_counter() - t
            fell_back[name] = 0 if cache.lungs is None else int(cache.lungs.fell_back.sum())
        for r in range(args.repeats):
            for name in INPUTS[r % len(INPUTS):] + INPUTS[:r % len(INPUTS)]:
                cfg = RunConfig(data=[args.data], archs=[args.arch], out=str(tmp / "runs"), name=f"{name}-{r}",
                                image_size=args.size, input=name, output_stride=stride, weights="none", device="cpu",
                                cache_dir=str(tmp / "cache"), workers=args.workers, analysis=False,
                                train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=2e-3, progress=False))
                t = time.perf_counter()
                run_experiment(cfg, say=lambda _: None)
                warm[name] = min(warm.get(name, float("inf")), time.perf_counter() - t)

    print(f"{args.data}: {len(paths)} films -> {args.size} px, {args.arch}, {args.epochs} epoch(s), "
          f"torch threads {torch.get_num_threads()}, cache workers {args.workers}, best of {args.repeats}")
    print(f"{'input':<11}{'cold cache s':>14}{'per film ms':>13}{'fell back':>11}{'warm training s':>17}{'ratio':>8}")
    for name in INPUTS:
        print(f"{name:<11}{cold[name]:>14.1f}{1000 * cold[name] / len(paths):>13.1f}{fell_back[name]:>11d}"
              f"{warm[name]:>17.1f}{warm[name] / warm['full']:>7.2f}x")
    for name in INPUTS[1:]:
        total = (cold[name] + warm[name]) / (cold["full"] + warm["full"])
        print(f"{name}: first run with a cold cache {total:.2f}x the whole film's; warm {warm[name] / warm['full']:.2f}x "
              "(target <= 1.2x)")


if __name__ == "__main__":
    main()
