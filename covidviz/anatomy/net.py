"""The lung-field network and its input contract (shared by ``segment_lungs`` and tools/train_lungs.py).

A small U-Net (four down-sampling steps, batch norm, ~0.49 M parameters) that maps a
``INPUT_SIZE`` x ``INPUT_SIZE`` histogram-equalised film to one lung logit per pixel.

The input contract (:func:`model_input`): the whole film is resized to a square (squashed, not
cropped, exactly as the V7 Labs masks were drawn on square-resampled films) with area averaging,
then histogram-equalised. Equalising makes the network blind to any monotone change of grey levels
(window, gamma, a detector's look-up table, the third party's equalisation of the children's
films), which is most of what differs between hospitals.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn

INPUT_SIZE = 128
CHANNELS = (8, 16, 32, 64, 128)


def equalise(small: np.ndarray) -> np.ndarray:
    """Histogram equalisation of a uint8 image to float32 in [-1, 1] (each grey level -> the mid-rank
    of its pixels, so a constant image maps to 0, not to one end)."""
    hist = np.bincount(small.ravel(), minlength=256).astype(np.float64)
    cdf = np.cumsum(hist)
    mid = (cdf - hist / 2) / max(cdf[-1], 1.0)  # mid-rank in (0, 1)
    lut = (mid * 2 - 1).astype(np.float32)
    return lut[small]


def resize_gray(gray: np.ndarray, size: int) -> np.ndarray:
    """uint8 (h, w) -> uint8 (size, size), squashed, area-averaged when shrinking."""
    im = Image.fromarray(gray)
    resample = Image.BOX if min(gray.shape) >= size else Image.BILINEAR
    return np.asarray(im.resize((size, size), resample=resample))


def model_input(gray: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """A uint8 film (any size) -> the network's float32 (size, size) input."""
    small = gray if gray.shape == (size, size) else resize_gray(gray, size)
    return equalise(small)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class LungUNet(nn.Module):
    """U-Net: ``(n, 1, s, s)`` equalised films -> ``(n, 1, s, s)`` lung logits; ``s`` divisible by 16."""

    def __init__(self, channels=CHANNELS):
        super().__init__()
        c = tuple(int(x) for x in channels)
        self.down = nn.ModuleList([_block(1, c[0])] + [_block(c[i], c[i + 1]) for i in range(len(c) - 1)])
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList([nn.ConvTranspose2d(c[i + 1], c[i], 2, stride=2) for i in reversed(range(len(c) - 1))])
        self.dec = nn.ModuleList([_block(2 * c[i], c[i]) for i in reversed(range(len(c) - 1))])
        self.head = nn.Conv2d(c[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, blk in enumerate(self.down):
            x = blk(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, dec in zip(self.up, self.dec):
            x = dec(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)
