"""A few real photos for the preprocessing / prediction tests: CIFAR-10 training
images from the prepared tfds dataset, upscaled (bicubic) to sizes and aspect
ratios that exercise the resize and center-crop rounding, written as PNG and JPEG."""

from __future__ import annotations

import os

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_TFDS = os.path.join(ROOT, "..", "shared", "data", "tfds")
HAVE_CIFAR = os.path.isdir(os.path.join(SHARED_TFDS, "cifar10"))
MISSING = (
    f"{os.path.normpath(SHARED_TFDS)}/cifar10 is missing: this test reads the real CIFAR-10 copy that "
    "sits beside the repository (../shared/data/tfds); put a prepared tfds cifar10 there"
)

# (height, width, format): portrait, landscape, odd sizes, already crop-sized
SIZES = ((300, 231, "png"), (257, 343, "jpeg"), (224, 224, "png"))


def cifar_images(count: int, offset: int = 0) -> list[np.ndarray]:
    import tensorflow_datasets as tfds

    src = tfds.data_source("cifar10", split=f"train[{offset}:{offset + count}]", data_dir=SHARED_TFDS)
    return [np.asarray(src[i]["image"], np.uint8) for i in range(count)]


def write_images(directory, sizes=SIZES, offset: int = 0) -> list[str]:
    """Writes one upscaled CIFAR image per entry of ``sizes``; returns the paths."""
    from PIL import Image

    paths = []
    for i, (image, (h, w, fmt)) in enumerate(zip(cifar_images(len(sizes), offset), sizes)):
        path = os.path.join(str(directory), f"cifar_{offset + i}_{h}x{w}.{'jpg' if fmt == 'jpeg' else fmt}")
        Image.fromarray(image).resize((w, h), Image.BICUBIC).save(path, format=fmt.upper())
        paths.append(path)
    return paths
