#!/usr/bin/env python
"""CAM latency as a multiple of one bare forward pass, per backbone and method.

For each backbone (random weights: speed does not depend on them) and one phantom film at ``--size``,
measures in one run, on this machine, interleaved round-robin so drift on a shared machine hits every
row alike:

- ``forward``: ``model(x)`` under ``torch.no_grad()`` (the prediction the app makes anyway);
- each CAM method through ``compute_cam`` (``cam`` needs no gradient; the gradient methods only
  differentiate the pooled head, as the trunk runs without a graph);
- ``all 5``: every method from one ``compute_cams`` call (one forward, one backward);
- ``gradcam @ mid``: Grad-CAM at a mid-network block (hook path: backward through the top of the net);
- ``ref: fwd+full bwd``: a forward with the autograd graph and a backward to the input, i.e. what a
  hook-based library that lets gradients flow through the whole network pays.

Prints median milliseconds and the median per-round ratio to ``forward``; only ratios from the same
run mean anything on these noisy 2-core machines. On the CPU the clock is the *process CPU time* by
default (``--clock cpu``): other jobs on a shared machine then stretch wall time but not the numbers;
with ``--threads 1`` it is also the latency one core would see.

    python bench/cam.py [--size 224] [--archs densenet121 resnet50] [--repeats 5] [--batch 1]
                        [--threads N] [--clock cpu|wall] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from covidviz.cam import METHODS, compute_cam, compute_cams
from covidviz.data.preprocess import Preprocessing
from covidviz.data.synthetic import render_phantom
from covidviz.models import build_model, pick_device


def _mid_layer(model, arch: str):
    if arch == "densenet121":
        return model.features[0].denseblock3
    if arch == "resnet50":
        return model.features[6]  # layer3
    return model.features[len(model.features) // 2]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_arch(arch: str, size: int, repeats: int, batch: int, device, clock) -> list[tuple[str, float, float]]:
    torch.manual_seed(0)
    model, _ = build_model(arch, 3, "none")
    model.to(device).eval()
    img = render_phantom(0, ("COVID-19",), size=size)[0]
    x = Preprocessing(image_size=size).to_tensor(np.stack([img] * batch)).to(device)
    mid = _mid_layer(model, arch)

    def forward():
        with torch.no_grad():
            model(x)

    def full_backward():
        xi = x.clone().requires_grad_(True)
        out = model(xi)
        torch.autograd.grad(out[:, 1].sum(), xi)

    cases = {"forward": forward}
    for m in METHODS:
        cases[m] = (lambda m=m: compute_cam(model, x, 1, m))
    cases["all 5"] = lambda: compute_cams(model, x, 1)
    cases["gradcam @ mid"] = lambda: compute_cam(model, x, 1, "gradcam", layer=mid)
    cases["ref: fwd+full bwd"] = full_backward

    times = {k: [] for k in cases}
    for r in range(repeats + 2):  # two warm-up rounds (allocator, lazy init, oneDNN primitive cache)
        for name, fn in cases.items():
            _sync(device)
            t = clock()
            fn()
            _sync(device)
            if r >= 2:
                times[name].append(clock() - t)
    fwd = np.array(times["forward"])
    return [(name, 1000 * float(np.median(ts)), float(np.median(np.array(ts) / fwd)))
            for name, ts in times.items()]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--archs", nargs="+", default=["densenet121", "resnet50"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--clock", choices=["cpu", "wall"], default=None,
                    help="cpu: process CPU time (default on the CPU); wall: elapsed time (default on a GPU)")
    args = ap.parse_args(argv)
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    clock_name = args.clock or ("cpu" if device.type == "cpu" else "wall")
    clock = time.process_time if clock_name == "cpu" else time.perf_counter
    print(f"CAM latency vs one bare forward; {args.size} px, batch {args.batch}, {device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {clock_name} clock, "
          f"median of {args.repeats}")
    rows = {arch: bench_arch(arch, args.size, args.repeats, args.batch, device, clock) for arch in args.archs}
    names = [name for name, _, _ in next(iter(rows.values()))]
    header = f"{'method':<20}" + "".join(f"{arch + ' ms':>16}{'x fwd':>8}" for arch in args.archs)
    print(header)
    print("-" * len(header))
    for i, name in enumerate(names):
        print(f"{name:<20}" + "".join(f"{rows[a][i][1]:>16.1f}{rows[a][i][2]:>8.2f}" for a in args.archs))


if __name__ == "__main__":
    main()
