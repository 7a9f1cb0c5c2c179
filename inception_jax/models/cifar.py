"""The reference CIFAR-10 Inception network (``InceptionCIFAR``).

Reference: the PyTorch CIFAR-10 recipe this project follows (tests/design_doc_torch.py), a reduced
GoogLeNet (Szegedy et al. 2014) for 32x32 inputs: conv 3->64 (3x3), 2x2 max
pool, Inception 3a/3b, 2x2 max pool, 4a/4b, 2x2 max pool, global average pool,
dropout 0.4, linear 256->10. Inception modules are that recipe's (a real 5x5
conv, 3x3/1 max pool before the projection). Matches it exactly (327,602
parameters); no differences.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as linen
import jax
import jax.numpy as jnp

from inception_jax import nn
from inception_jax.models.registry import ModelInfo, register

CIFAR_CFG = {
    "inception3a": (64, 32, 32, 64, 8, 16, 16),
    "inception3b": (128, 64, 64, 96, 16, 32, 32),
    "inception4a": (224, 96, 48, 104, 8, 24, 32),
    "inception4b": (256, 80, 56, 112, 12, 32, 32),
}


class InceptionCIFAR(linen.Module):
    num_classes: int = 10
    dropout: float = 0.4
    dtype: Any = jnp.float32
    axis_name: Optional[str] = None

    @linen.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        nn.check_image_input("inception_cifar", x, 8)
        conv = nn.make_conv(self.dtype, self.axis_name)

        def inception(y, name):
            return nn.InceptionModule(*CIFAR_CFG[name], conv=conv, name=name)(y, train)

        x = x.astype(self.dtype)  # N x 32 x 32 x 3
        x = conv(64, kernel_size=3, strides=1, padding=1, name="conv1")(x, train)  # N x 32 x 32 x 64
        x = nn.max_pool(x, kernel_size=2)  # N x 16 x 16 x 64
        x = inception(x, "inception3a")  # N x 16 x 16 x 128
        x = inception(x, "inception3b")  # N x 16 x 16 x 224
        x = nn.max_pool(x, kernel_size=2)  # N x 8 x 8 x 224
        x = inception(x, "inception4a")  # N x 8 x 8 x 256
        x = inception(x, "inception4b")  # N x 8 x 8 x 256
        x = nn.max_pool(x, kernel_size=2)  # N x 4 x 4 x 256
        x = nn.global_avg_pool(x)  # N x 256
        x = nn.Dropout(rate=self.dropout, axis_name=self.axis_name)(x, train)
        return nn.dense(self.num_classes, dtype=self.dtype, name="fc")(x)  # N x 10


register(
    ModelInfo(
        "inception_cifar",
        InceptionCIFAR,
        32,
        8,
        num_classes=10,
        classifier="fc",
        reference="reference PyTorch InceptionCIFAR",
    )
)
