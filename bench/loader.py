#!/usr/bin/env python
"""Loader throughput: decoding 1024-px PNGs every epoch vs reading the preprocessing cache.

Writes N synthetic 1024x1024 8-bit PNGs (the NIH release's size) to a temp folder, then measures in
one run, on this machine:

- uncached: read + decode + resize to the model size + normalise, per image (what a naive
  ``Dataset.__getitem__`` does every epoch);
- cached: batches from the memory-mapped uint8 cache + normalise (what training does after epoch 1);
- the model's training step (forward + backward + AdamW) on the same batch size;

and prints images/second and the ratios, which are what to compare across machines (these 2-core
machines are noisy, so only ratios from the same run mean anything).

    python -m bench.loader [--n 96] [--size 224] [--arch densenet121]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from covidviz.anatomy.inputs import model_pixels
from covidviz.data.cache import build_cache
from covidviz.data.imageio import read_image
from covidviz.data.preprocess import Preprocessing
from covidviz.data.synthetic import render_phantom
from covidviz.models import build_model
from covidviz.training import Batches, Feed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--arch", default="densenet121")
    args = ap.parse_args()
    prep = Preprocessing(image_size=args.size)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = []
        for i in range(args.n):
            img, _ = render_phantom(i, ("COVID-19",) if i % 2 else (), size=1024)
            p = tmp / f"img{i:04d}.png"
            Image.fromarray(img).save(p)
            paths.append(str(p))

        t = time.perf_counter()
        for p in paths:
            prep.to_tensor(model_pixels(prep, read_image(p)))
        uncached = args.n / (time.perf_counter() - t)

        t = time.perf_counter()
        cache = build_cache(paths, args.size, tmp / "cache", workers=1, progress=False)
        first_pass = args.n / (time.perf_counter() - t)

        batches = Batches(Feed(cache.pixels, prep, torch.device("cpu"), args.batch_size), np.arange(args.n),
                          np.zeros(args.n, np.int64), shuffle=True)
        t, seen = time.perf_counter(), 0
        for _ in range(5):
            for x, _y in batches:
                seen += len(x)
        cached = seen / (time.perf_counter() - t)

        model, _ = build_model(args.arch, 3, "none")
        opt = torch.optim.AdamW(model.parameters())
        x = torch.randn(args.batch_size, 3, args.size, args.size)
        y = torch.randint(0, 3, (args.batch_size,))
        model.train()
        steps = 3
        for i in range(steps + 1):
            if i == 1:
                t = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        step = steps * args.batch_size / (time.perf_counter() - t)

    print(f"1024-px PNG sources, model input {args.size}px, {args.n} images, torch threads {torch.get_num_threads()}")
    print(f"uncached loader (decode+resize+normalise):  {uncached:9.1f} img/s")
    print(f"cache build, first pass (1 worker):         {first_pass:9.1f} img/s")
    print(f"cached loader (memmap batches+normalise):   {cached:9.1f} img/s")
    print(f"{args.arch} train step (batch {args.batch_size}):         {step:9.1f} img/s")
    print(f"ratio cached / uncached loader:             {cached / uncached:9.1f}x")
    print(f"ratio uncached loader / model step:         {uncached / step:9.2f}x  (<1 means decoding starves the model)")
    print(f"ratio cached loader / model step:           {cached / step:9.1f}x")


if __name__ == "__main__":
    main()
