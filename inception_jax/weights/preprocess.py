"""The eval transform each set of public weights was made for (torchvision's
``weights.transforms()``, timm's pretrained cfg, Cadene's ``TransformImage``), as
recorded in each model file's ``PRETRAINED``; ImageNet class names."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from inception_jax.errors import first_line
from inception_jax.models.registry import Pretrained
from inception_jax.weights.hub import pretrained_config

ImageLike = Any  # a path, a PIL image, or an HxWxC uint8 array


def _open_image(item: ImageLike):
    from PIL import Image, UnidentifiedImageError

    if isinstance(item, (str, os.PathLike)):
        path = os.fspath(item)
        if not os.path.isfile(path):
            raise ValueError(f"image {path!r} does not exist")
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            first = first_line(e)
            raise ValueError(
                f"image {path!r} could not be decoded ({first}); pass a JPEG/PNG/... image file"
            ) from None
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    array = np.asarray(item)
    if (
        array.dtype != np.uint8
        or array.ndim not in (2, 3)
        or (array.ndim == 3 and array.shape[-1] not in (1, 3, 4))
    ):
        raise ValueError(
            f"preprocess: expected image paths, PIL images or HxWx3 uint8 arrays, "
            f"got an array of shape {array.shape} and dtype {array.dtype}"
        )
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return Image.fromarray(array).convert("RGB")


def _pil_filter(interpolation: str):
    from PIL import Image

    modes = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}
    if interpolation not in modes:
        raise ValueError(f"unknown interpolation {interpolation!r}; expected one of {sorted(modes)}")
    return modes[interpolation]


def resize_center_crop(img, resize_size: int, crop_size: int, interpolation: str = "bilinear"):
    """torchvision's ``Resize(resize_size)`` (shorter side, PIL) + ``CenterCrop(crop_size)``."""
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = resize_size, int(resize_size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), _pil_filter(interpolation))
    if crop_size > new_w or crop_size > new_h:
        raise ValueError(f"crop {crop_size} is larger than the resized image {new_w}x{new_h}")
    top = round((new_h - crop_size) / 2.0)  # Python rounding, as torchvision
    left = round((new_w - crop_size) / 2.0)
    return img.crop((left, top, left + crop_size, top + crop_size))


def preprocess(images: ImageLike | Sequence[ImageLike], name: str | Pretrained) -> np.ndarray:
    """The reference eval transform of ``name``'s pretrained weights -> NHWC float32.

    ``images``: a path, PIL image or HxWx3 uint8 array, or a list of them (a 4-D
    uint8 array is a batch). Each is converted to RGB, its shorter side resized
    with the weights' interpolation, center-cropped, scaled to [0, 1], put in the
    weights' channel order and range and normalised (see
    :class:`inception_jax.models.Pretrained`).
    """
    cfg = pretrained_config(name)
    single = isinstance(images, (str, os.PathLike)) or not isinstance(images, (list, tuple, np.ndarray))
    if single or (isinstance(images, np.ndarray) and images.ndim != 4):
        items = [images]
    else:
        items = list(images)
    if not items:
        raise ValueError("preprocess: no images given")
    mean = np.asarray(cfg.mean, np.float32)
    std = np.asarray(cfg.std, np.float32)
    out = np.empty((len(items), cfg.input_size, cfg.input_size, 3), np.float32)
    for i, item in enumerate(items):
        img = resize_center_crop(_open_image(item), cfg.resize_size, cfg.input_size, cfg.interpolation)
        x = np.asarray(img, np.uint8).astype(np.float32) / np.float32(255.0)
        if cfg.input_space == "BGR":
            x = x[..., ::-1]
        if cfg.input_range != 1:
            x = x * np.float32(cfg.input_range)
        out[i] = (x - mean) / std
    return out


def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in the standard (synset-sorted) index order,
    as torchvision's weights list them."""
    here = os.path.join(os.path.dirname(__file__), "imagenet_classes.txt")
    with open(here, encoding="utf-8") as f:
        names = tuple(line.rstrip("\n") for line in f if line.strip())
    if len(names) != 1000:
        raise ValueError(f"{here} lists {len(names)} classes, expected 1000; reinstall the package")
    return names
