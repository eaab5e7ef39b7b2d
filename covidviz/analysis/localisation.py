"""Does the heatmap look at the finding? CAM localisation scored on test images with known lesions.

Ground truth comes from the per-image table: phantom lesion masks (``mask`` column) or NIH expert
boxes (``bbox`` column, fractions of the image). For every such test image and every CAM method, the
target is the annotated finding's class; we record the pointing game (is the map's peak on the
lesion?) and the fraction of CAM energy inside it, beside a random map with CAM's texture (chance).
A faithfulness score (deletion-curve AUC; lower = the map's pixels matter more) is computed for a
few images per method.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from covidviz import runs
from covidviz.cam import METHODS, compute_cams
from covidviz.cam.localisation import box_to_mask, deletion_auc, energy_inside, pointing_game, random_heat
from covidviz.data.imageio import ImageDecodeError, read_image
from covidviz.data.labels import split_labels
from covidviz.data.preprocess import resize_square

BATCH = 16
DELETION_IMAGES = 8


def _targets(row, names: list[str], size: int):
    """(class index, lesion mask at model size) for one annotated image, or None."""
    if row["mask"]:
        labs = [lab for lab in split_labels(row["labels"]) if lab in names]
        if not labs:
            return None
        try:
            mask = resize_square(read_image(row["mask"]), size) > 127
        except ImageDecodeError:
            return None
        return (names.index(labs[0]), mask) if mask.any() else None
    if row["bbox"]:
        boxes = [b for b in json.loads(row["bbox"]) if b.get("label") in names]
        if not boxes:
            return None
        label = boxes[0]["label"]
        mask = np.zeros((size, size), bool)
        for b in boxes:
            if b["label"] == label:
                mask |= box_to_mask(b, size, size)
        return names.index(label), mask
    return None


def localisation_report(exp: runs.Experiment, arch: str, max_images: int = 120, seed: int = 0,
                        methods=METHODS) -> dict | None:
    images = exp.images()
    has_truth = (images["split"] == "test") & ((images["mask"] != "") | (images["bbox"] != ""))
    rows = images.index[has_truth].to_numpy()
    if len(rows) == 0:
        return None
    rows = np.random.default_rng(seed).permutation(rows)[:max_images]
    prep, names = exp.preprocessing, list(exp.labels.names)
    size = prep.image_size
    items = []
    for r in rows:
        t = _targets(images.loc[r], names, size)
        if t is None:
            continue
        try:
            pix = prep.to_model_pixels(read_image(images.loc[r, "path"]))
        except ImageDecodeError:
            continue
        items.append((r, t[0], t[1], pix))
    if not items:
        return None
    model = exp.load_model(arch)
    grid = None
    scores = {m: {"hit": [], "energy": [], "cls": []} for m in (*methods, "random")}
    for s in range(0, len(items), BATCH):
        chunk = items[s:s + BATCH]
        x = prep.to_tensor(np.stack([c[3] for c in chunk]))
        cams = compute_cams(model, x, class_idx=[c[1] for c in chunk], methods=methods)
        grid = grid or tuple(next(iter(cams.values())).low_res.shape[1:])
        for i, (r, cls, mask, _) in enumerate(chunk):
            maps = {m: cams[m].normalised[i] for m in methods}
            maps["random"] = random_heat(size, size, grid=grid, seed=seed + int(r))
            for m, heat in maps.items():
                scores[m]["hit"].append(bool(pointing_game(heat, mask)))
                scores[m]["energy"].append(float(energy_inside(heat, mask)))
                scores[m]["cls"].append(cls)
    out = {"n_images": len(items), "truth": "phantom masks" if images.loc[items[0][0], "mask"] else "expert boxes",
           "image_ids": [images.loc[r, "image_id"] for r, *_ in items], "methods": {}}
    for m, sc in scores.items():
        hit, energy, cls = np.array(sc["hit"]), np.array(sc["energy"], float), np.array(sc["cls"])
        out["methods"][m] = {
            "pointing_rate": float(hit.mean()),
            "energy_inside": float(np.nanmean(energy)) if np.isfinite(energy).any() else None,
            "per_class": {names[c]: {"n": int((cls == c).sum()), "pointing_rate": float(hit[cls == c].mean())}
                          for c in np.unique(cls)},
        }
    out["deletion_auc"] = _deletion(model, items[:DELETION_IMAGES], prep, exp.labels.task, methods, seed)
    return out


def _deletion(model, items, prep, task, methods, seed) -> dict:
    """Mean deletion AUC per method on a few images (lower = more faithful), random map as chance."""
    res = {m: [] for m in (*methods, "random")}
    for r, cls, _mask, pix in items:
        x = prep.to_tensor(pix)
        cams = compute_cams(model, x, class_idx=cls, methods=methods)
        for m in methods:
            res[m].append(deletion_auc(model, x, cams[m].normalised[0], cls, task=task, steps=10))
        grid = tuple(next(iter(cams.values())).low_res.shape[1:])
        rand = random_heat(pix.shape[0], pix.shape[1], grid=grid, seed=seed + int(r))
        res["random"].append(deletion_auc(model, x, rand, cls, task=task, steps=10))
    with torch.no_grad():
        return {m: float(np.mean(v)) if v else None for m, v in res.items()}
