"""The preprocessing contract: the single definition of how a decoded X-ray becomes model input.

Training, analysis, the app and the benches all call these two steps, and the experiment's manifest
records the ``Preprocessing`` so the app feeds uploads exactly what the models were trained on:

1. ``to_model_pixels``: grayscale uint8 (H, W) -> uint8 (S, S), a plain resize of the whole film
   (no crop: findings sit near the edges — costophrenic angles, apices).
2. ``to_tensor``: uint8 (N, S, S) -> float32 (N, 3, S, S), the gray channel repeated three times
   (the backbones come from RGB ImageNet) and normalised with ImageNet's mean and std.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
THUMB_SIZE = 64


@dataclass(frozen=True)
class Preprocessing:
    image_size: int = 224
    channels: int = 3
    mean: tuple[float, ...] = field(default=IMAGENET_MEAN)
    std: tuple[float, ...] = field(default=IMAGENET_STD)
    resize: str = "bilinear, whole image to a square"

    def __post_init__(self):
        if not 16 <= int(self.image_size) <= 2048:
            raise ValueError(f"image size {self.image_size} out of range 16..2048")

    def to_json(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_json(cls, d: dict) -> Preprocessing:
        return cls(int(d["image_size"]), int(d.get("channels", 3)), tuple(d["mean"]), tuple(d["std"]),
                   d.get("resize", cls.resize))

    def to_model_pixels(self, gray: np.ndarray) -> np.ndarray:
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
