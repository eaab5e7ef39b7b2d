"""The model input of a film: THE way every caller turns a decoded film into model pixels.

``Preprocessing.to_model_pixels`` (``covidviz.data.preprocess``) does the resize, the centre crop and
the lung inputs (``train.py --input lung-crop | lung-mask``), but the data layer cannot find the lung
fields; this module can (``segment_lungs``), so training's cache, ``train.py evaluate`` and
``predict``, Diagnose, Batch, the what-ifs, the OOD features and the analysis all call
``model_pixels(prep, gray)`` (or ``model_input`` when they also want the fields and the crop box;
the pixel cache calls it through ``cache_input``): one function, so every path feeds a film's model
exactly what it was trained on.

Fallback: when the segmentation cannot be trusted (``quality`` below ``QUALITY_OK``, or a film under
the segmenter's 32 px) the lung region is ``fallback_boxes()``, two fixed boxes where the lungs of a
frontal film usually lie (fitted on the lung network's training films; held-out Dice 0.738 against
0.910 for the network, docs/lungs.md), and ``ModelInput.fell_back`` says so. Not the whole film: the
films that fail are not a random sample (tightly collimated children's films, white-out bedside
films), so showing them whole would hand the model a source cue through the very films it cannot
segment, and a lung-input model never sees the film's corners. Training counts its fallbacks in the
manifest (``DatasetCard.lung_input``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from covidviz.anatomy.lungs import PROVENANCE, LungFields, segment_lungs

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def fallback_boxes() -> tuple[tuple[float, float, float, float], ...]:
    """The fallback lung boxes: (x0, x1, y0, y1) fractions of the film, one per lung, as recorded with the
    shipped weights (``lungs_unet.json``, ``evaluation.fixed_boxes``)."""
    boxes = json.loads(PROVENANCE.read_text())["evaluation"]["fixed_boxes"]
    return tuple(tuple(float(v) for v in b) for b in boxes)


def fallback_region(shape) -> np.ndarray:
    """The fallback lung region of a film of ``shape``: the two fixed boxes as a bool mask."""
    h, w = int(shape[0]), int(shape[1])
    mask = np.zeros((h, w), bool)
    for x0, x1, y0, y1 in fallback_boxes():
        r0, c0 = min(int(y0 * h), h - 1), min(int(x0 * w), w - 1)
        mask[r0:max(r0 + 1, int(round(y1 * h))), c0:max(c0 + 1, int(round(x1 * w)))] = True
    return mask


@dataclass(frozen=True)
class ModelInput:
    """A film as the model sees it. ``pixels``: uint8 (S, S), exactly the model's input. For the lung
    inputs also: ``lungs``, the film's segmentation (None for ``full`` input, or a film too small to
    segment); ``region``, the bool film-size lung region the input was made from (the fields, or the
    fallback boxes); ``fell_back``, True when the fallback boxes were used. ``box``: (top, bottom, left,
    right) of the film that the pixels cover."""

    pixels: np.ndarray
    box: tuple[int, int, int, int]
    lungs: LungFields | None = None
    region: np.ndarray | None = None
    fell_back: bool = False

    def mask(self, prep, mask: np.ndarray) -> np.ndarray:
        """A bool mask at the film's size (lesion, lung fields) on these pixels: bool (S, S)."""
        return prep.to_model_mask(mask, self.region)

    def seen(self, image: np.ndarray) -> np.ndarray:
        """The part of ``image`` (the film, or anything at the film's size) that these pixels cover:
        what heat maps and outlines are drawn over."""
        top, bottom, left, right = self.box
        return np.asarray(image)[top:bottom, left:right]


def lung_region(gray: np.ndarray, lungs: LungFields | None = None) -> tuple[np.ndarray, LungFields | None, bool]:
    """(region, fields, fell_back): the lung region a lung input is made from. ``lungs``: fields already
    found for this film (at its size), else ``segment_lungs`` runs. Fields below ``QUALITY_OK`` (or none:
    a film under 32 px) give the fallback boxes."""
    shape = np.shape(gray)[:2]
    if lungs is None or lungs.mask.shape != shape:
        try:
            lungs = segment_lungs(gray)
        except ValueError as exc:  # a film smaller than the segmenter accepts
            log.debug("no lung fields (%s): fallback boxes", exc)
            return fallback_region(shape), None, True
    if lungs.ok and lungs.mask.any():
        return lungs.mask, lungs, False
    return fallback_region(shape), lungs, True


def model_input(prep, gray: np.ndarray, lungs: LungFields | None = None) -> ModelInput:
    """The film ``gray`` (uint8 (H, W)) as ``prep``'s model input, with the lung fields and crop box
    used. ``lungs``: fields already found for this film (saves segmenting it again)."""
    gray = np.asarray(gray)
    if gray.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale film, got shape {gray.shape}")
    if not prep.needs_lungs:
        return ModelInput(prep.to_model_pixels(gray), prep.crop_box(gray.shape))
    region, fields, fell_back = lung_region(gray, lungs)
    return ModelInput(prep.to_model_pixels(gray, region), prep.crop_box(gray.shape, region), fields, region, fell_back)


def model_pixels(prep, gray: np.ndarray, lungs: LungFields | None = None) -> np.ndarray:
    """uint8 (S, S): the film ``gray`` as the experiment's model sees it (``model_input(...).pixels``)."""
    return model_input(prep, gray, lungs).pixels


def cache_input(prep, gray: np.ndarray) -> tuple[np.ndarray, float, bool]:
    """(pixels, segmentation quality, fell_back) of one film, for the pixel cache (``data.cache.build_cache``'s
    ``make_input``): ``model_input`` itself, as a module-level function so cache workers in other
    processes can call it. Quality is NaN when the film was not segmented (full input, or under 32 px)."""
    inp = model_input(prep, gray)
    return inp.pixels, (float("nan") if inp.lungs is None else float(inp.lungs.quality)), inp.fell_back
