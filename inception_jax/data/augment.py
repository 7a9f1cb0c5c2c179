"""On-device augmentation for in-memory datasets (jit-compiled, per-example keys).

Every example's randomness comes from ``fold_in(key, dataset_index)``, so the
augmented batch is the same however the batch is split over devices.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp


def normalize(
    images_uint8: jax.Array, mean: Sequence[float], std: Sequence[float], dtype=jnp.float32
) -> jax.Array:
    """uint8 [0, 255] -> (x / 255 - mean) / std, like torchvision's ToTensor + Normalize."""
    x = images_uint8.astype(jnp.float32) / 255.0
    return ((x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)).astype(dtype)


def random_crop_flip(images: jax.Array, keys: jax.Array, padding: int, flip: bool) -> jax.Array:
    """torchvision ``RandomCrop(size, padding)`` (zero padding) + ``RandomHorizontalFlip``,
    one key per example; works on uint8 or float images (N, H, W, C)."""
    n, h, w, c = images.shape

    def one(image, key):
        k_crop_y, k_crop_x, k_flip = jax.random.split(key, 3)
        if padding > 0:
            padded = jnp.pad(image, ((padding, padding), (padding, padding), (0, 0)))
            dy = jax.random.randint(k_crop_y, (), 0, 2 * padding + 1)
            dx = jax.random.randint(k_crop_x, (), 0, 2 * padding + 1)
            image = jax.lax.dynamic_slice(padded, (dy, dx, 0), (h, w, c))
        if flip:
            image = jnp.where(jax.random.bernoulli(k_flip), image[:, ::-1], image)
        return image

    return jax.vmap(one)(images, keys)


def example_keys(key: jax.Array, indices: jax.Array) -> jax.Array:
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(indices)
