"""Does the heatmap look at the finding? CAM localisation scored on test images with known lesions.

Ground truth comes from the per-image table: phantom lesion masks (``mask`` column) or NIH expert
boxes (``bbox`` column, fractions of the image). For every such test image, every CAM layer
(``models.layer_names``) and every method offered there (``cam.offered_methods``), the target is the
annotated finding's class; we record the pointing game (is the map's peak on the lesion?) and the
fraction of CAM energy inside it, beside a random map with the same grid (chance). A faithfulness
score (deletion-curve AUC; lower = the map's pixels matter more) is computed for a few images per
method of the default layer.

``localisation.json`` (read through ``runs.records.Localisation``)::

    {"n_images", "truth", "image_ids",
     "default": {"method": "cam", "layer": "block4"},       # the app's first map
     "grid": [h, w],                                          # the default layer's cells
     "methods": {method: {"pointing_rate", "energy_inside", "per_class"}, "random": {...}},  # default layer
     "layers": {layer: {"grid": [h, w], "methods": {... as above, with "random"}}},       # every layer
     "deletion_auc": {method: mean AUC, "random": ...}}
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

from covidviz import runs
from covidviz.anatomy.inputs import model_input
from covidviz.cam import DEFAULT_LAYER, DEFAULT_METHOD, compute_cams, offered_methods
from covidviz.cam.localisation import box_to_mask, deletion_auc, energy_inside, pointing_game, random_heat
from covidviz.data.imageio import ImageDecodeError, read_image
from covidviz.data.labels import split_labels
from covidviz.data.preprocess import Preprocessing
from covidviz.models import layer_names

BATCH = 16
DELETION_IMAGES = 5  # 11 forward passes each per method: 8 images cost the demo ~5 s more


@dataclass(frozen=True)
class Annotated:
    """One test image with a known lesion: its table row, target class, lesion mask and model pixels."""

    row: int
    cls: int
    mask: np.ndarray   # bool (S, S) at model size
    pixels: np.ndarray  # uint8 (S, S), anatomy.inputs.model_pixels


def _targets(row, names: list[str], prep: Preprocessing, shape: tuple[int, int], region=None):
    """(class index, lesion mask at model size) for one annotated image of ``shape`` (H, W), or None.

    The mask goes through the same crop and resize as the film (``Preprocessing.to_model_mask``:
    torchxrayvision's centred square, or a lung input's crop of ``region``, the film's
    ``ModelInput.region``), so mask and model pixels line up."""
    if row["mask"]:
        labs = [lab for lab in split_labels(row["labels"]) if lab in names]
        if not labs:
            return None
        try:
            mask = prep.to_model_geometry(read_image(row["mask"]), region) > 127
        except ImageDecodeError:
            return None
        return (names.index(labs[0]), mask) if mask.any() else None
    if row["bbox"]:
        boxes = [b for b in json.loads(row["bbox"]) if b.get("label") in names]
        if not boxes:
            return None
        label = boxes[0]["label"]
        full = np.zeros(shape, bool)  # boxes are fractions of the whole film
        for b in boxes:
            if b["label"] == label:
                full |= box_to_mask(b, *shape)
        scaled = prep.to_model_geometry(full.astype(np.uint8) * 255, region)
        mask = scaled > 127
        if not mask.any():  # a box under a model pixel: keep the pixels it touches
            mask = scaled > 0
        return (names.index(label), mask) if mask.any() else None
    return None


def annotated_test_images(exp: runs.Experiment, max_images: int = 120, seed: int = 0) -> list[Annotated]:
    """Up to ``max_images`` test images with a lesion mask or an expert box (a seeded random choice)."""
    images = exp.images()
    has_truth = (images["split"] == "test") & ((images["mask"] != "") | (images["bbox"] != ""))
    rows = images.index[has_truth].to_numpy()
    rows = np.random.default_rng(seed).permutation(np.array(rows))[:max_images]  # a copy: pandas may hand out read-only
    prep, names = exp.preprocessing, list(exp.labels.names)
    items = []
    for r in rows:
        try:
            gray = read_image(images.loc[r, "path"])
        except ImageDecodeError:
            continue
        inp = model_input(prep, gray)
        t = _targets(images.loc[r], names, prep, gray.shape[:2], inp.region)
        if t is not None:
            items.append(Annotated(int(r), t[0], t[1], inp.pixels))
    return items


def score_layer(model, prep: Preprocessing, items: list[Annotated], layer: str, methods, seed: int = 0,
                names: list[str] | None = None) -> dict:
    """Pointing game and energy inside the lesion for ``methods`` at ``layer`` (and a random map of the
    same grid): ``{"grid": [h, w], "methods": {method | "random": {"pointing_rate", "energy_inside",
    "per_class"}}}``."""
    methods = tuple(methods)
    size = prep.image_size
    grid = None
    scores = {m: {"hit": [], "energy": []} for m in (*methods, "random")}
    for s in range(0, len(items), BATCH):
        chunk = items[s:s + BATCH]
        x = prep.to_tensor(np.stack([c.pixels for c in chunk]))
        cams = compute_cams(model, x, class_idx=[c.cls for c in chunk], methods=methods, layer=layer)
        grid = grid or next(iter(cams.values())).grid
        for i, item in enumerate(chunk):
            maps = {m: cams[m].normalised[i] for m in methods}
            maps["random"] = random_heat(size, size, grid=grid, seed=seed + item.row)
            for m, heat in maps.items():
                scores[m]["hit"].append(bool(pointing_game(heat, item.mask)))
                scores[m]["energy"].append(float(energy_inside(heat, item.mask)))
    cls = np.array([it.cls for it in items])
    out = {}
    for m, sc in scores.items():
        hit, energy = np.array(sc["hit"]), np.array(sc["energy"], float)
        out[m] = {
            "pointing_rate": float(hit.mean()),
            "energy_inside": float(np.nanmean(energy)) if np.isfinite(energy).any() else None,
            "per_class": {(names[c] if names else str(c)): {"n": int((cls == c).sum()),
                                                            "pointing_rate": float(hit[cls == c].mean())}
                          for c in np.unique(cls)},
        }
    return {"grid": list(grid), "methods": out}


def localisation_report(exp: runs.Experiment, arch: str, max_images: int = 120, seed: int = 0,
                        layers=None) -> dict | None:
    """Score every CAM layer and method of ``arch`` on the experiment's annotated test images; None
    when it has none."""
    items = annotated_test_images(exp, max_images, seed)
    if not items:
        return None
    images, prep, names = exp.images(), exp.preprocessing, list(exp.labels.names)
    model = exp.load_model(arch)
    layers = tuple(layers or layer_names(arch))
    per_layer = {layer: score_layer(model, prep, items, layer, offered_methods(layer), seed, names) for layer in layers}
    default_layer = DEFAULT_LAYER if DEFAULT_LAYER in per_layer else layers[0]
    out = {"n_images": len(items), "truth": "phantom masks" if images.loc[items[0].row, "mask"] else "expert boxes",
           "image_ids": [images.loc[it.row, "image_id"] for it in items],
           "default": {"method": DEFAULT_METHOD, "layer": default_layer},
           "grid": per_layer[default_layer]["grid"], "methods": per_layer[default_layer]["methods"],
           "layers": per_layer}
    out["deletion_auc"] = _deletion(model, items[:DELETION_IMAGES], prep, exp.labels.task,
                                    offered_methods(default_layer), default_layer, seed)
    return out


def _deletion(model, items: list[Annotated], prep, task, methods, layer, seed) -> dict:
    """Mean deletion AUC per method on a few images (lower = more faithful), random map as chance."""
    res = {m: [] for m in (*methods, "random")}
    for it in items:
        x = prep.to_tensor(it.pixels)
        cams = compute_cams(model, x, class_idx=it.cls, methods=methods, layer=layer)
        for m in methods:
            res[m].append(deletion_auc(model, x, cams[m].normalised[0], it.cls, task=task, steps=10))
        grid = next(iter(cams.values())).grid
        rand = random_heat(it.pixels.shape[0], it.pixels.shape[1], grid=grid, seed=seed + it.row)
        res["random"].append(deletion_auc(model, x, rand, it.cls, task=task, steps=10))
    with torch.no_grad():
        return {m: float(np.mean(v)) if v else None for m, v in res.items()}
