"""The preprocessing contract: the single definition of how a decoded X-ray becomes model input.

Training, analysis, the app and the benches all call these two steps, and the experiment's manifest
records the ``Preprocessing`` so the app feeds uploads exactly what the models were trained on:

1. ``to_model_pixels``: grayscale uint8 (H, W) -> uint8 (S, S), a plain resize of the whole film
   (no crop by default: findings sit near the edges — costophrenic angles, apices). ``crop="center"``
   first cuts the largest centred square, for weights trained that way (torchxrayvision's
   ``XRayCenterCrop``, see ``covidviz.pretrained``).
2. ``to_tensor``: uint8 (N, S, S) -> float32 (N, 3, S, S), the gray channel repeated three times
   (the backbones come from RGB ImageNet) and normalised with ``mean`` and ``std`` (ImageNet's by
   default; any affine intensity scaling fits these two fields, e.g. torchxrayvision's [-1024, 1024]
   is mean 0.5, std 0.5/1024).

Manifests written before ``crop`` existed load with ``crop="none"``, i.e. today's behaviour.

``input`` (``train.py --input``) says which part of the film the model sees, before step 1's resize:

- ``"full"`` (default; manifests written before the option load as it): the whole film.
- ``"lung-crop"``: the lung fields' bounding box with a margin of ``LUNG_MARGIN`` of the box's size on
  every side, then widened along its short side to a square (centred, kept inside the film; where the
  film is too narrow the rest is squashed by the resize). It replaces the centre crop.
- ``"lung-mask"``: everything outside the lung fields is filled with the blurred background made from
  the lungs themselves (``data.background.keep_only_sealed``: the what-ifs' fill, sourced so that
  nothing outside the lungs reaches the input, not even blurred), then step 1 as for ``"full"``.

Both need the film's lung fields (a bool mask at the film's size), which this layer cannot compute:
``covidviz.anatomy.inputs`` segments the film (with the documented fallback) and is THE way every
caller turns a film into model pixels; ``to_model_pixels(gray, lungs)`` refuses a lung input without
them. Masks at the film's size (lesions, lung fields) follow the same geometry through
``to_model_mask`` / ``to_model_geometry`` (the crop, never the fill).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image

from covidviz.data.background import keep_only_sealed

DEFAULT_IMAGE_SIZE = 224  # px: torchvision's ImageNet size; RunConfig and train.py read it from here
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
THUMB_SIZE = 64
CROPS = ("none", "center")  # "center": the largest centred square, before the resize
INPUTS = ("full", "lung-crop", "lung-mask")  # which part of the film the model sees (train.py --input)
LUNG_MARGIN = 0.10  # lung-crop: margin on every side, as a share of the lung box's height / width


@dataclass(frozen=True)
class Preprocessing:
    image_size: int = DEFAULT_IMAGE_SIZE
    channels: int = 3
    mean: tuple[float, ...] = field(default=IMAGENET_MEAN)
    std: tuple[float, ...] = field(default=IMAGENET_STD)
    resize: str = "bilinear, whole image to a square"
    crop: str = "none"
    input: str = "full"

    def __post_init__(self):
        if not 16 <= int(self.image_size) <= 2048:
            raise ValueError(f"image size {self.image_size} out of range 16..2048")
        if self.crop not in CROPS:
            raise ValueError(f"unknown crop {self.crop!r}; choose from {', '.join(CROPS)}")
        if self.input not in INPUTS:
            raise ValueError(f"unknown input {self.input!r}; choose from {', '.join(INPUTS)}")

    @property
    def needs_lungs(self) -> bool:
        """True when the model input depends on the film's lung fields (``input`` is not ``"full"``)."""
        return self.input != "full"

    def to_json(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        if self.input == "full":  # written only when it is not the default, so older manifests write back unchanged
            del d["input"]
        return d

    @classmethod
    def from_json(cls, d: dict) -> Preprocessing:
        return cls(int(d["image_size"]), int(d.get("channels", 3)), tuple(d["mean"]), tuple(d["std"]),
                   d.get("resize", cls.resize), d.get("crop", "none"), d.get("input", "full"))

    def _lungs(self, lungs, shape) -> np.ndarray:
        if lungs is None:
            raise ValueError(f"this experiment's input is {self.input!r}: its films need their lung fields; turn films "
                             "into model pixels with covidviz.anatomy.inputs.model_pixels, which finds them")
        lungs = np.asarray(lungs, bool)
        if lungs.shape != tuple(shape[:2]):
            raise ValueError(f"lung mask {lungs.shape} does not match the film {tuple(shape[:2])}")
        if not lungs.any():
            raise ValueError("empty lung mask: the lung input needs at least one lung pixel")
        return lungs

    def crop_box(self, shape, lungs: np.ndarray | None = None) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) of the part of a film of ``shape`` that becomes the model input
        (before the resize): the lung box for ``lung-crop``, the centred square for ``crop="center"``,
        else the whole film. ``lungs``: the film's lung mask (needed by the lung inputs)."""
        h, w = int(shape[0]), int(shape[1])
        if self.input == "lung-crop":
            return lung_box(self._lungs(lungs, (h, w)))
        if self.crop == "center":
            return center_box(h, w)
        return 0, h, 0, w

    def to_model_pixels(self, gray: np.ndarray, lungs: np.ndarray | None = None) -> np.ndarray:
        """uint8 (H, W) film -> uint8 (S, S) model pixels. ``lungs``: the film's bool lung mask, which
        the lung inputs need (``covidviz.anatomy.inputs`` supplies it; ignored for ``"full"``)."""
        gray = np.asarray(gray)
        if self.input == "lung-mask":
            gray = keep_only_sealed(gray, self._lungs(lungs, gray.shape))
        top, bottom, left, right = self.crop_box(gray.shape, lungs)
        return resize_square(gray[top:bottom, left:right], self.image_size)

    def to_model_geometry(self, image: np.ndarray, lungs: np.ndarray | None = None) -> np.ndarray:
        """A uint8 (H, W) image at the film's size (a mask drawn as 0/255) -> uint8 (S, S) with the same
        crop and resize as the film's pixels, never the fill: it lines up with the model input."""
        image = np.asarray(image)
        if image.ndim != 2:
            raise ValueError(f"mask must be 2-D, got shape {image.shape}")
        top, bottom, left, right = self.crop_box(image.shape, lungs)
        return resize_square(image[top:bottom, left:right], self.image_size)

    def to_model_mask(self, mask: np.ndarray, lungs: np.ndarray | None = None) -> np.ndarray:
        """A bool mask at the film's size (a lesion, the lung fields) -> bool (S, S) on the model input
        (``to_model_geometry`` of the mask drawn as 0/255, then > 127)."""
        return self.to_model_geometry(np.asarray(mask, bool).astype(np.uint8) * np.uint8(255), lungs) > 127

    def describe_input(self) -> str:
        """The input in a few words, for captions and model cards."""
        return INPUT_WORDS[self.input] + (" (largest centred square)" if self.crop == "center" and
                                          self.input != "lung-crop" else "")

    def to_tensor(self, pixels: np.ndarray):
        """uint8 (S, S) or (N, S, S) -> normalised float tensor (N, 3, S, S)."""
        import torch

        t = torch.from_numpy(np.array(pixels, dtype=np.uint8, copy=True))  # memmaps and PIL arrays are read-only
        if t.ndim == 2:
            t = t[None]
        t = t.to(torch.float32).div_(255.0)[:, None].expand(-1, self.channels, -1, -1)
        mean = torch.tensor(self.mean[: self.channels], dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.std[: self.channels], dtype=torch.float32).view(1, -1, 1, 1)
        return (t - mean) / std


INPUT_WORDS = {"full": "whole film",
               "lung-crop": "lung fields' box with a margin, squared",
               "lung-mask": "lung fields only (the rest filled with their blurred background)"}


def lung_box(lungs: np.ndarray, margin: float = LUNG_MARGIN) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of a non-empty bool lung mask's bounding box, grown by ``margin`` of
    its height / width on every side and then along its short side to a square (centred on the box,
    shifted to stay inside the film; a film too narrow for the square gives all it has)."""
    lungs = np.asarray(lungs, bool)
    h, w = lungs.shape
    rows, cols = np.flatnonzero(lungs.any(axis=1)), np.flatnonzero(lungs.any(axis=0))
    if not rows.size:
        raise ValueError("empty lung mask: no box")
    top, bottom, left, right = float(rows[0]), float(rows[-1] + 1), float(cols[0]), float(cols[-1] + 1)
    bh, bw = bottom - top, right - left
    top, bottom, left, right = top - margin * bh, bottom + margin * bh, left - margin * bw, right + margin * bw
    side = max(bottom - top, right - left)

    def span(lo: float, hi: float, n: int) -> tuple[int, int]:
        length = min(float(n), side)
        mid = (lo + hi) / 2
        a = int(round(min(max(mid - length / 2, 0.0), n - length)))
        return a, min(n, a + int(round(length)))

    (top, bottom), (left, right) = span(top, bottom, h), span(left, right, w)
    return top, bottom, left, right


def center_square(gray: np.ndarray) -> np.ndarray:
    """The largest centred square of a (H, W) image (torchxrayvision's ``XRayCenterCrop``: the long
    side is cut evenly at both ends, an odd remainder at the start)."""
    gray = np.asarray(gray)
    top, bottom, left, right = center_box(*gray.shape[:2])
    return gray[top:bottom, left:right]


def center_box(h: int, w: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of ``center_square`` in a film of ``h`` x ``w``."""
    side = min(h, w)
    top, left = h // 2 - side // 2, w // 2 - side // 2
    return top, top + side, left, left + side


def resize_square(gray: np.ndarray, size: int) -> np.ndarray:
    """Resize a (H, W) uint8 image to (size, size) uint8."""
    img = Image.fromarray(np.asarray(gray, dtype=np.uint8), mode="L")
    if img.size != (size, size):
        # reduce() first makes big downscales cheap and alias-free before the final bilinear step.
        factor = min(img.width, img.height) // (2 * size)
        if factor >= 2:
            img = img.reduce(factor)
        img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)
