#!/usr/bin/env python
"""Batch prediction throughput: images/s of the batch path (``covidviz.batch``) against the one-image
path (``Predictor.predict`` per file) on the same files, as a ratio.

DenseNet121 and ResNet50 with random weights (speed does not depend on them) behind a
``covidviz.inference.Predictor`` over ``bench.diagnose.StandIn`` (no analysis artefacts, hence no OOD
reference: that is a k-NN over the training features, about a millisecond per image either way).
``--images`` phantom films of ``--film`` px are written as PNG files; both paths read and decode every
file, then:

- ``one image``: ``Predictor.predict(gray)`` per file (resize, one forward per backbone with classic
  CAM and the pooled features, calibration, calls), as the Diagnose page does for one upload;
- ``batch``: ``BatchPredictor(predictor, --batch-size).run(collect_inputs([folder]))`` (the same work,
  ``--batch-size`` images per forward pass, OOD seam and table included).

Rounds alternate the two paths, so drift on a shared machine hits both alike. Printed: images/s per
path (median over rounds) by wall clock and by process CPU time, the median per-round ratio for each
(target >= 3 on 2 CPU cores at 224 px), and the largest probability difference between the paths.

    python -m bench.predict [--size 224] [--images 32] [--batch-size 16] [--repeats 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.diagnose import ARCHS, StandIn, film
from covidviz import batch, inference
from covidviz.data.imageio import decode_upload


def write_films(folder: Path, n: int, side: int) -> list[Path]:
    paths = []
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(film(side, seed=i)).save(buf, format="PNG")
        p = folder / f"film-{i:03d}.png"
        p.write_bytes(buf.getvalue())
        paths.append(p)
    return paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=224, help="model input (px)")
    ap.add_argument("--film", type=int, default=1024, help="side of the decoded films (px)")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=batch.DEFAULT_BATCH_SIZE)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (the target is for 2 CPU cores); 0: torch's default")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    exp = StandIn(ARCHS, args.size)
    pred = inference.Predictor(exp)
    scorer = batch.BatchPredictor(pred, args.batch_size)

    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        folder = Path(tmp)
        paths = write_films(folder, args.images, args.film)
        out = {}

        def one_image():
            out["one"] = [pred.predict(decode_upload(p.read_bytes(), str(p)).gray, str(p)) for p in paths]

        def batched():
            with batch.collect_inputs([folder]) as inputs:
                out["batch"] = scorer.run(inputs)

        # warm up (allocator, first-call costs) on a few files
        pred.predict(decode_upload(paths[0].read_bytes(), "w").gray)
        scorer.score([(f"w{i}", decode_upload(p.read_bytes(), "w").gray) for i, p in enumerate(paths[:args.batch_size])])

        rows = {"one image": one_image, "batch": batched}
        wall = {k: [] for k in rows}
        cpu = {k: [] for k in rows}
        for _ in range(args.repeats):
            for k, f in rows.items():
                w0, c0 = time.perf_counter(), time.process_time()
                f()
                wall[k].append(time.perf_counter() - w0)
                cpu[k].append(time.process_time() - c0)

    diff = max(float(np.abs(r.backbones[a].probs - d.backbones[a].probs).max())
               for r, d in zip(out["batch"].rows, out["one"]) for a in ARCHS)
    n = args.images
    print(f"batch prediction: {', '.join(ARCHS)} at {args.size} px, {n} PNG films of {args.film}x{args.film}, "
          f"batch size {args.batch_size}, {args.repeats} rounds, torch threads={torch.get_num_threads()}")
    print(f"{'path':<12}{'img/s wall':>12}{'img/s cpu':>12}")
    for k in rows:
        print(f"{k:<12}{n / statistics.median(wall[k]):>12.2f}{n / statistics.median(cpu[k]):>12.2f}")
    r_wall = statistics.median(o / b for o, b in zip(wall["one image"], wall["batch"]))
    r_cpu = statistics.median(o / b for o, b in zip(cpu["one image"], cpu["batch"]))
    print(f"speed-up batch / one image: {r_wall:.2f}x wall, {r_cpu:.2f}x cpu  (target >= 3)")
    print(f"largest probability difference between the paths: {diff:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
