#!/usr/bin/env python
"""Heatmap quality against cost: which CAM method, layer and output stride localise phantom lesions
best per unit of compute.

``python bench/cam.py`` (the default, ``localisation``) trains one phantom experiment per
(backbone, input size, output stride) with the demo's recipe (``synthetic:600``, random init, 6
epochs; ``train.py`` into ``--out``, reused when already there), then scores on the experiment's
phantom test films (the lesion classes, exact masks) every layer (``block4`` = the last block the head
pools, ``block3``, ``block2``) and every method offered there:

- ``PG``: pointing game (map peak on the lesion, 15 px tolerance at 224 px, scaled), ``rand PG`` the
  same for a random map of the same grid (chance);
- ``energy``: share of the map's positive energy inside the lesion (``rand E`` for the random map);
- ``ms/img``: one ``compute_cams`` call for that method and layer on batches of 16 test films, per
  film (process CPU time by default, so other jobs on a shared machine stretch wall time, not this);
- ``GF fwd``: forward GFLOPs per film (what training and every prediction pay, deterministic), and
  the experiment's training seconds and test macro AUC (noisy on a shared machine).

``python bench/cam.py latency`` keeps the older table: each method's latency as a multiple of one bare
forward pass for random-weight backbones at ``--size`` (ratios measured round-robin in one run).

    python bench/cam.py [--sizes 64 128] [--archs densenet121 resnet50] [--strides 32 16 8]
                        [--configs densenet121:64:8 ...] [--out /tmp/covidviz-bench-cam] [--epochs 6]
    python bench/cam.py latency [--size 224] [--archs ...] [--strides 32 16] [--repeats 5] [--clock cpu|wall]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from covidviz.cam import METHODS, compute_cam, compute_cams, offered_methods
from covidviz.data.preprocess import Preprocessing
from covidviz.data.synthetic import render_phantom
from covidviz.models import build_model, layer_names, pick_device

REPO = Path(__file__).resolve().parents[1]
# 128 px at stride 8 (a 16x16 grid) costs 2x (DenseNet121) to 3x (ResNet50) the stride-16 forward:
# left out of the default grid of configurations; ask for it with --configs.
DEFAULT_SKIP = {(128, 8)}


def _forward_gflops(model, size: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    return fc.get_total_flops() / 1e9


def _experiment(out: Path, arch: str, size: int, stride: int, args) -> Path:
    """The phantom experiment for one configuration, trained with train.py unless already there."""
    name = f"{arch}-{size}px-os{stride}-n{args.n}-e{args.epochs}"
    path = out / name
    if not (path / "manifest.json").exists():
        argv = ["--data", f"synthetic:{args.n}", "--arch", arch, "--image-size", str(size), "--output-stride",
                str(stride), "--epochs", str(args.epochs), "--weights", "none", "--out", str(out), "--name", name,
                "--quiet", "--no-analysis", "--overwrite", "--seed", str(args.seed)]
        print(f"training {name} ...", flush=True)
        if subprocess.run([sys.executable, str(REPO / "train.py"), *argv]).returncode != 0:
            raise SystemExit(f"training {name} failed")
    return path


def _time_per_image(model, prep, items, method: str, layer: str, clock, rounds: int = 2) -> float:
    best = float("inf")
    for _ in range(rounds):
        t = clock()
        for s in range(0, len(items), 16):
            chunk = items[s:s + 16]
            x = prep.to_tensor(np.stack([c.pixels for c in chunk]))
            compute_cams(model, x, [c.cls for c in chunk], (method,), layer)
        best = min(best, clock() - t)
    return 1000 * best / len(items)


def localisation(args) -> None:
    from covidviz import runs
    from covidviz.analysis.localisation import annotated_test_images, score_layer

    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.configs:
        configs = [(a, int(sz), int(st)) for a, sz, st in (c.split(":") for c in args.configs)]
    else:
        configs = [(a, sz, st) for sz in args.sizes for a in args.archs for st in args.strides
                   if (sz, st) not in DEFAULT_SKIP]
    out = Path(args.out)
    header = (f"{'backbone':<12}{'px':>4}{'OS':>4} {'layer':<7}{'grid':>6} {'method':<10}{'PG':>6}{'rand PG':>8}"
              f"{'energy':>8}{'rand E':>8}{'ms/img':>8}{'GF fwd':>8}{'train s':>9}{'test AUC':>9}")
    rows = []
    for arch, size, stride in configs:
        exp = runs.read_experiment(_experiment(out, arch, size, stride, args))
        rec = exp.record(arch)
        model = exp.load_model(arch)
        prep, names = exp.preprocessing, list(exp.labels.names)
        items = annotated_test_images(exp, args.max_images, args.seed)
        gf = _forward_gflops(model, size)
        for layer in layer_names(arch):
            methods = [m for m in offered_methods(layer) if m in args.methods]
            if not methods:
                continue
            scored = score_layer(model, prep, items, layer, methods, args.seed, names)
            grid = "x".join(map(str, scored["grid"]))
            rnd = scored["methods"]["random"]
            for m in methods:
                sc = scored["methods"][m]
                ms = _time_per_image(model, prep, items, m, layer, clock)
                row = (f"{arch:<12}{size:>4}{stride:>4} {layer:<7}{grid:>6} {m:<10}{sc['pointing_rate']:>6.2f}"
                       f"{rnd['pointing_rate']:>8.2f}{sc['energy_inside'] or float('nan'):>8.3f}"
                       f"{rnd['energy_inside'] or float('nan'):>8.3f}{ms:>8.2f}{gf:>8.2f}"
                       f"{rec.get('train_seconds') or float('nan'):>9.0f}{rec.macro_auc() or float('nan'):>9.3f}")
                rows.append(row)
                print(row, flush=True)
        print(f"  ({arch} {size}px OS{stride}: {len(items)} lesion test films, "
              f"{', '.join(f'{c} {n}' for c, n in _class_counts(items, names).items())})", flush=True)
    print()
    print(f"CAM localisation vs cost on phantom test films; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {args.clock} clock; {args.n} phantoms, {args.epochs} epochs, random init")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(r)


def _class_counts(items, names) -> dict:
    counts: dict[str, int] = {}
    for it in items:
        counts[names[it.cls]] = counts.get(names[it.cls], 0) + 1
    return counts


# ------------------------------------------------------------------------------------------------
# latency as a multiple of one forward (random weights)
# ------------------------------------------------------------------------------------------------

def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_latency(arch: str, size: int, stride: int, repeats: int, batch: int, device, clock):
    torch.manual_seed(0)
    model, _ = build_model(arch, 3, "none", output_stride=stride)
    model.to(device).eval()
    img = render_phantom(0, ("COVID-19",), size=size)[0]
    x = Preprocessing(image_size=size).to_tensor(np.stack([img] * batch)).to(device)

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
    for layer in layer_names(arch)[1:]:
        cases[f"gradcam @ {layer}"] = (lambda layer=layer: compute_cam(model, x, 1, "gradcam", layer=layer))
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
    return [(name, 1000 * float(np.median(ts)), float(np.median(np.array(ts) / fwd))) for name, ts in times.items()]


def latency(args) -> None:
    device = pick_device(args.device)
    clock_name = args.clock or ("cpu" if device.type == "cpu" else "wall")
    clock = time.process_time if clock_name == "cpu" else time.perf_counter
    print(f"CAM latency vs one bare forward; {args.size} px, batch {args.batch}, {device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {clock_name} clock, median of {args.repeats}")
    cols = [(a, s) for a in args.archs for s in args.strides]
    rows = {c: bench_latency(c[0], args.size, c[1], args.repeats, args.batch, device, clock) for c in cols}
    names = [name for name, _, _ in next(iter(rows.values()))]
    header = f"{'method':<20}" + "".join(f"{f'{a} OS{s} ms':>22}{'x fwd':>7}" for a, s in cols)
    print(header)
    print("-" * len(header))
    for i, name in enumerate(names):
        print(f"{name:<20}" + "".join(f"{rows[c][i][1]:>22.1f}{rows[c][i][2]:>7.2f}" for c in cols))


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    mode = argv.pop(0) if argv[:1] in (["latency"], ["localisation"]) else "localisation"
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], prog=f"bench/cam.py {mode}")
    ap.add_argument("--archs", nargs="+", default=["densenet121", "resnet50"])
    ap.add_argument("--strides", nargs="+", type=int, default=[32, 16, 8])
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--clock", choices=["cpu", "wall"], default=None,
                    help="cpu: process CPU time (default on the CPU); wall: elapsed time (default on a GPU)")
    if mode == "latency":
        ap.add_argument("--size", type=int, default=224)
        ap.add_argument("--repeats", type=int, default=5)
        ap.add_argument("--batch", type=int, default=1)
        ap.add_argument("--device", default="cpu")
    else:
        ap.add_argument("--sizes", nargs="+", type=int, default=[64, 128])
        ap.add_argument("--configs", nargs="+", default=None, metavar="ARCH:SIZE:STRIDE",
                        help="explicit configurations instead of archs x sizes x strides")
        ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
        ap.add_argument("--out", default="/tmp/covidviz-bench-cam", help="where the phantom experiments are kept")
        ap.add_argument("--n", type=int, default=600, help="phantoms per experiment")
        ap.add_argument("--epochs", type=int, default=6)
        ap.add_argument("--max-images", type=int, default=120)
        ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if mode == "latency":
        latency(args)
    else:
        args.clock = args.clock or "cpu"
        localisation(args)


if __name__ == "__main__":
    main()
