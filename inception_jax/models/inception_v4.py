"""Inception-v4: Szegedy et al., "Inception-v4, Inception-ResNet and the Impact of
Residual Connections on Learning", AAAI 2017.

Matches ``timm``'s ``inception_v4`` (itself Cadene's port of the TF-slim
weights) layer for layer: the blocks sit in ``features_0`` ... ``features_21``
(timm's ``features.<i>``), BatchNorm eps 1e-3, no padding unless stated,
average pools that exclude padding from the divisor, dropout 0 before
``last_linear``. Its weights expect Inception preprocessing (mean = std = 0.5).

Differences: none in the numbers.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import flax.linen as linen
import jax
import jax.numpy as jnp

from inception_jax import nn
from inception_jax.models.registry import INCEPTION_MEAN, INCEPTION_STD, ModelInfo, Pretrained, register

# timm inception_v4.tf_in1k (pretrained_cfg): 299 input, crop_pct 0.875 -> Resize(341)
# + CenterCrop(299), bicubic, mean = std = 0.5; 1000 classes (Cadene's original
# inceptionv4-8e4777a0.pth has 1001, background first: load_pretrained drops it).
PRETRAINED = Pretrained(
    source="timm",
    hf_hub_id="timm/inception_v4.tf_in1k",
    url="https://huggingface.co/timm/inception_v4.tf_in1k/resolve/main/model.safetensors",
    filename="inception_v4.tf_in1k.safetensors",
    input_size=299,
    resize_size=341,
    interpolation="bicubic",
    mean=INCEPTION_MEAN,
    std=INCEPTION_STD,
)

_AVG = ("avg", 3, 1, 1, False)
_MAX = ("max", 3, 2)

INCEPTION_A = ([(96, 1)], [(64, 1), (96, 3, 1, 1)], [(64, 1), (96, 3, 1, 1), (96, 3, 1, 1)], [_AVG, (96, 1)])
REDUCTION_A = ([(384, 3, 2)], [(192, 1), (224, 3, 1, 1), (256, 3, 2)], [_MAX])
INCEPTION_B = (
    [(384, 1)],
    [(192, 1), (224, (1, 7), 1, (0, 3)), (256, (7, 1), 1, (3, 0))],
    [
        (192, 1),
        (192, (7, 1), 1, (3, 0)),
        (224, (1, 7), 1, (0, 3)),
        (224, (7, 1), 1, (3, 0)),
        (256, (1, 7), 1, (0, 3)),
    ],
    [_AVG, (128, 1)],
)
REDUCTION_B = (
    [(192, 1), (192, 3, 2)],
    [(256, 1), (256, (1, 7), 1, (0, 3)), (320, (7, 1), 1, (3, 0)), (320, 3, 2)],
    [_MAX],
)
MIXED_4A = ([(64, 1), (96, 3)], [(64, 1), (64, (1, 7), 1, (0, 3)), (64, (7, 1), 1, (3, 0)), (96, 3)])


class Mixed3a(linen.Module):
    conv: Callable[..., linen.Module] = nn.BasicConv

    @linen.compact
    def __call__(self, x, train=False):
        return jnp.concatenate(
            [
                nn.max_pool(x, kernel_size=3, stride=2),
                self.conv(96, kernel_size=3, strides=2, name="conv")(x, train),
            ],
            axis=-1,
        )


class Mixed5a(linen.Module):
    conv: Callable[..., linen.Module] = nn.BasicConv

    @linen.compact
    def __call__(self, x, train=False):
        return jnp.concatenate(
            [
                self.conv(192, kernel_size=3, strides=2, name="conv")(x, train),
                nn.max_pool(x, kernel_size=3, stride=2),
            ],
            axis=-1,
        )


class InceptionC(linen.Module):
    """8x8 block whose 1x3/3x1 branches split and concatenate (timm's InceptionC)."""

    conv: Callable[..., linen.Module] = nn.BasicConv

    @linen.compact
    def __call__(self, x, train=False):
        c = self.conv
        b0 = c(256, kernel_size=1, name="branch0")(x, train)
        b1 = c(384, kernel_size=1, name="branch1_0")(x, train)
        b1 = jnp.concatenate(
            [
                c(256, kernel_size=(1, 3), strides=1, padding=(0, 1), name="branch1_1a")(b1, train),
                c(256, kernel_size=(3, 1), strides=1, padding=(1, 0), name="branch1_1b")(b1, train),
            ],
            axis=-1,
        )
        b2 = c(384, kernel_size=1, name="branch2_0")(x, train)
        b2 = c(448, kernel_size=(3, 1), strides=1, padding=(1, 0), name="branch2_1")(b2, train)
        b2 = c(512, kernel_size=(1, 3), strides=1, padding=(0, 1), name="branch2_2")(b2, train)
        b2 = jnp.concatenate(
            [
                c(256, kernel_size=(1, 3), strides=1, padding=(0, 1), name="branch2_3a")(b2, train),
                c(256, kernel_size=(3, 1), strides=1, padding=(1, 0), name="branch2_3b")(b2, train),
            ],
            axis=-1,
        )
        pooled = nn.avg_pool(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
        b3 = c(256, kernel_size=1, name="branch3_1")(pooled, train)
        return jnp.concatenate([b0, b1, b2, b3], axis=-1)


class InceptionV4(linen.Module):
    num_classes: int = 1000
    dropout: float = 0.0
    dtype: Any = jnp.float32
    axis_name: Optional[str] = None

    @linen.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        nn.check_image_input("inception_v4", x, 75)
        c = nn.make_conv(self.dtype, self.axis_name)
        blocks = [
            lambda n: c(32, kernel_size=3, strides=2, name=n),  # N x 149 x 149 x 32
            lambda n: c(32, kernel_size=3, name=n),  # N x 147 x 147 x 32
            lambda n: c(64, kernel_size=3, strides=1, padding=1, name=n),  # N x 147 x 147 x 64
            lambda n: Mixed3a(conv=c, name=n),  # N x 73 x 73 x 160
            lambda n: nn.MixedBlock(branches=MIXED_4A, conv=c, name=n),  # N x 71 x 71 x 192
            lambda n: Mixed5a(conv=c, name=n),  # N x 35 x 35 x 384
            *[lambda n: nn.MixedBlock(branches=INCEPTION_A, conv=c, name=n)] * 4,  # N x 35 x 35 x 384
            lambda n: nn.MixedBlock(branches=REDUCTION_A, conv=c, name=n),  # N x 17 x 17 x 1024
            *[lambda n: nn.MixedBlock(branches=INCEPTION_B, conv=c, name=n)] * 7,  # N x 17 x 17 x 1024
            lambda n: nn.MixedBlock(branches=REDUCTION_B, conv=c, name=n),  # N x 8 x 8 x 1536
            *[lambda n: InceptionC(conv=c, name=n)] * 3,  # N x 8 x 8 x 1536
        ]
        x = x.astype(self.dtype)  # N x 299 x 299 x 3
        for i, make in enumerate(blocks):
            x = make(f"features_{i}")(x, train)
        x = nn.global_avg_pool(x)  # N x 1536
        x = nn.Dropout(rate=self.dropout, axis_name=self.axis_name)(x, train)
        return nn.dense(self.num_classes, dtype=self.dtype, name="last_linear")(x)  # N x 1000


register(
    ModelInfo(
        "inception_v4",
        InceptionV4,
        299,
        75,
        classifier="last_linear",
        reference="timm inception_v4",
        pretrained=PRETRAINED,
    )
)
