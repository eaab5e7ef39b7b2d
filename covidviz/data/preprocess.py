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
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image

DEFAULT_IMAGE_SIZE = 224  # px: torchvision's ImageNet size; RunConfig and train.py read it from here
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
THUMB_SIZE = 64
CROPS = ("none", "center")  # "center": the largest centred square, before the resize


@dataclass(frozen=True)
class Preprocessing:
    image_size: int = DEFAULT_IMAGE_SIZE
    channels: int = 3
    mean: tuple[float, ...] = field(default=IMAGENET_MEAN)
    std: tuple[float, ...] = field(default=IMAGENET_STD)
    resize: str = "bilinear, whole image to a square"
    crop: str = "none"

    def __post_init__(self):
        if not 16 <= int(self.image_size) <= 2048:
            raise ValueError(f"image size {self.image_size} out of range 16..2048")
        if self.crop not in CROPS:
            raise ValueError(f"unknown crop {self.crop!r}; choose from {', '.join(CROPS)}")

    def to_json(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_json(cls, d: dict) -> Preprocessing:
        return cls(int(d["image_size"]), int(d.get("channels", 3)), tuple(d["mean"]), tuple(d["std"]),
                   d.get("resize", cls.resize), d.get("crop", "none"))

    def to_model_pixels(self, gray: np.ndarray) -> np.ndarray:
        if self.crop == "center":
            gray = center_square(gray)
        return resize_square(gray, self.image_size)

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


def center_square(gray: np.ndarray) -> np.ndarray:
    """The largest centred square of a (H, W) image (torchxrayvision's ``XRayCenterCrop``: the long
    side is cut evenly at both ends, an odd remainder at the start)."""
    gray = np.asarray(gray)
    h, w = gray.shape[:2]
    side = min(h, w)
    top, left = h // 2 - side // 2, w // 2 - side // 2
    return gray[top:top + side, left:left + side]


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
