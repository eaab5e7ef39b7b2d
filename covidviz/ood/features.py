"""Pooled features of new images (any size, uint8 gray) for every backbone of an experiment.

The inference service computes its own features (one forward pass gives the CAMs and the features);
this is the batch path for ``bench/ood.py`` and the tests: the preprocessing contract's model input
(``anatomy.inputs.model_pixels``: the resize, a lung input's segmentation first), then
``Classifier.forward_features``, exactly what the stored ``features.npy`` were made with.
"""

from __future__ import annotations

import numpy as np

from covidviz import runs
from covidviz.anatomy.inputs import model_pixels


def extract_features(exp: runs.Experiment, images, archs=None, models: dict | None = None,
                     batch_size: int = 32) -> dict[str, np.ndarray]:
    """arch -> (M, D) float32 pooled features of ``images`` (a list of (H, W) uint8 arrays)."""
    import torch

    prep = exp.preprocessing
    pixels = np.stack([model_pixels(prep, np.asarray(g, np.uint8)) for g in images]) if len(images) else None
    out = {}
    for arch in archs or exp.backbones:
        if pixels is None:
            out[arch] = np.zeros((0, 0), np.float32)
            continue
        model = (models or {}).get(arch) or exp.load_model(arch)
        model.eval()
        parts = []
        with torch.no_grad():
            for a in range(0, len(pixels), batch_size):
                parts.append(model.forward_features(prep.to_tensor(pixels[a:a + batch_size])).float().numpy())
        out[arch] = np.concatenate(parts).astype(np.float32)
    return out
