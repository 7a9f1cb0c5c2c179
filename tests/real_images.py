"""Photo-sized test images for the preprocessing / prediction tests: records of a tfds
``cifar10`` (in the tests the synthetic one of synthetic_data.py) upscaled (bicubic)
to sizes and aspect ratios that exercise the resize and center-crop rounding, written
as PNG and JPEG."""

from __future__ import annotations

import os

import numpy as np

# (height, width, format): portrait, landscape, odd sizes, already crop-sized
SIZES = ((300, 231, "png"), (257, 343, "jpeg"), (224, 224, "png"))


def cifar_images(data_dir: str, count: int, offset: int = 0) -> list[np.ndarray]:
    import tensorflow_datasets as tfds

    src = tfds.data_source("cifar10", split=f"train[{offset}:{offset + count}]", data_dir=data_dir)
    return [np.asarray(src[i]["image"], np.uint8) for i in range(count)]


def write_images(directory, data_dir: str, sizes=SIZES, offset: int = 0) -> list[str]:
    """Writes one upscaled image of the cifar10 in ``data_dir`` per entry of ``sizes``;
    returns the paths."""
    from PIL import Image

    paths = []
    for i, (image, (h, w, fmt)) in enumerate(zip(cifar_images(data_dir, len(sizes), offset), sizes)):
        path = os.path.join(str(directory), f"cifar_{offset + i}_{h}x{w}.{'jpg' if fmt == 'jpeg' else fmt}")
        Image.fromarray(image).resize((w, h), Image.BICUBIC).save(path, format=fmt.upper())
        paths.append(path)
    return paths
