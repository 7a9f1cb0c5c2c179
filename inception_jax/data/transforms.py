"""Host-side Inception augmentation (numpy + PIL), as torchvision does it.

Training: ``RandomResizedCrop`` (scale 0.08-1, aspect 3/4-4/3, bilinear) and a
horizontal flip; evaluation: resize of the shorter side to ``size / 0.875`` and a
center crop. The randomness of one example comes from the generator it is given;
the streaming pipeline seeds it with ``(seed, epoch, record index)``.
"""

from __future__ import annotations

import math
from typing import Tuple

import numpy as np


def random_resized_crop_box(
    height: int, width: int, rng: np.random.Generator, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)
) -> Tuple[int, int, int, int]:
    """(top, left, h, w) of torchvision's ``RandomResizedCrop.get_params``: 10 tries at
    a random area/aspect, else a center crop with the aspect clamped to ``ratio``."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def resized_crop(image: np.ndarray, top: int, left: int, h: int, w: int, size: int) -> np.ndarray:
    """Crop (top, left, h, w) and resize to size x size, bilinear (PIL), like torchvision."""
    from PIL import Image

    pil = Image.fromarray(image).crop((left, top, left + w, top + h))
    return np.asarray(pil.resize((size, size), Image.BILINEAR), np.uint8)


def train_transform(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    top, left, h, w = random_resized_crop_box(image.shape[0], image.shape[1], rng)
    out = resized_crop(image, top, left, h, w, size)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return out


def eval_transform(image: np.ndarray, size: int, crop_fraction: float = 0.875) -> np.ndarray:
    from PIL import Image

    resize = int(math.floor(size / crop_fraction))
    h, w = image.shape[:2]
    if h < w:
        nh, nw = resize, int(resize * w / h)
    else:
        nh, nw = int(resize * h / w), resize
    pil = Image.fromarray(image).resize((nw, nh), Image.BILINEAR)
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    return np.asarray(pil.crop((left, top, left + size, top + size)), np.uint8)
