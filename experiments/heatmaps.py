#!/usr/bin/env python
"""Save a few real test images with both backbones' CAM heatmaps as one PNG (for the README).

    python experiments/heatmaps.py runs/covid3 docs/covid3-heatmaps.png [--per-class 2] [--boxed 4]

One row per image (one or more per class, drawn from the test split with a fixed seed): the
preprocessed input, then each backbone's classic-CAM overlay for the image's TRUE class, captioned
with that class's probability. NIH expert boxes, when the image has one, are drawn in green.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from covidviz import runs
from covidviz.anatomy.inputs import model_pixels
from covidviz.cam import compute_cam, overlay
from covidviz.data.imageio import read_image
from covidviz.data.labels import split_labels

TILE = 224


def pick_rows(images, names, per_class: int, seed: int = 0, boxed: int | None = None) -> list[tuple[int, str]]:
    """Test rows to show: the first ``boxed`` (default ``per_class``) with an expert box, then ``per_class``
    more of each class (seeded)."""
    rng = np.random.default_rng(seed)
    test = images[images["split"] == "test"]
    with_box = test[test["bbox"] != ""]
    n_boxed = per_class if boxed is None else boxed
    picks = [(int(i), json.loads(test.loc[i, "bbox"])[0]["label"]) for i in with_box.index[:n_boxed]]
    for name in names:
        rows = [i for i in test.index if name in split_labels(test.loc[i, "labels"]) and i not in dict(picks)]
        for i in rng.permutation(rows)[:per_class]:
            picks.append((int(i), name))
    return picks


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("experiment")
    ap.add_argument("out")
    ap.add_argument("--per-class", type=int, default=1)
    ap.add_argument("--max-classes", type=int, default=4)
    ap.add_argument("--boxed", type=int, default=None, help="test films with an expert box shown first (default: --per-class)")
    args = ap.parse_args()
    exp = runs.read_experiment(args.experiment)
    images, names, prep = exp.images(), list(exp.labels.names), exp.preprocessing
    models = {arch: exp.load_model(arch) for arch in exp.backbones}
    picks = pick_rows(images, names[: args.max_classes], args.per_class, boxed=args.boxed)
    sheet = Image.new("RGB", (TILE * (1 + len(models)), (TILE + 36) * len(picks)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (row, cls) in enumerate(picks):
        pix = model_pixels(prep, read_image(images.loc[row, "path"]))  # the experiment's input (lung crop / mask too)
        big = np.asarray(Image.fromarray(pix).resize((TILE, TILE), Image.BILINEAR))
        y0 = r * (TILE + 36)
        tiles = [Image.fromarray(big).convert("RGB")]
        captions = [f"{images.loc[row, 'source'] or ''} true: {images.loc[row, 'labels'] or 'no finding'}"[:38]]
        x = prep.to_tensor(pix)
        for arch, model in models.items():
            res = compute_cam(model, x, class_idx=names.index(cls), method="cam")
            prob = exp.probabilities(arch)[row, names.index(cls)]
            tiles.append(Image.fromarray(overlay(big, res.normalised[0], alpha=0.45, colormap="jet")))
            captions.append(f"{arch}: P({cls[:14]})={prob:.2f}")
        for c, (tile, cap) in enumerate(zip(tiles, captions)):
            if images.loc[row, "bbox"]:
                d = ImageDraw.Draw(tile)
                for b in json.loads(images.loc[row, "bbox"]):
                    d.rectangle([b["x"] * TILE, b["y"] * TILE, (b["x"] + b["w"]) * TILE, (b["y"] + b["h"]) * TILE],
                                outline=(0, 200, 0), width=2)
            sheet.paste(tile, (c * TILE, y0))
            draw.text((c * TILE + 4, y0 + TILE + 4), cap, fill="black")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"wrote {args.out} ({len(picks)} images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
