"""Inception-ResNet-v2: Szegedy et al., "Inception-v4, Inception-ResNet and the Impact
of Residual Connections on Learning", AAAI 2017.

Matches ``timm``'s ``inception_resnet_v2`` layer for layer (names
``conv2d_1a`` ... ``mixed_5b``, ``repeat_<i>`` / ``repeat_1_<i>`` /
``repeat_2_<i>`` for timm's ``repeat.<i>`` ..., ``block8``, ``conv2d_7b``,
``classif``): residual Inception blocks whose residual branch is scaled by
0.17 (Block35 x10), 0.10 (Block17 x20) and 0.20 (Block8 x9) before the sum,
a last Block8 with scale 1 and no ReLU, BatchNorm eps 1e-3, average pools
excluding padding. Its weights expect Inception preprocessing (mean = std = 0.5).

Differences: none in the numbers.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as linen
import jax
import jax.numpy as jnp

from inception_jax import nn
from inception_jax.models.registry import INCEPTION_MEAN, INCEPTION_STD, ModelInfo, Pretrained, register

# timm inception_resnet_v2.tf_in1k (pretrained_cfg): 299 input, crop_pct 0.8975 ->
# Resize(333) + CenterCrop(299), bicubic, mean = std = 0.5; 1000 classes (Cadene's
# original inceptionresnetv2-520b38e4.pth has 1001 and names the classifier
# last_linear: load_pretrained drops the background row and renames it).
PRETRAINED = Pretrained(
    source="timm",
    hf_hub_id="timm/inception_resnet_v2.tf_in1k",
    url="https://huggingface.co/timm/inception_resnet_v2.tf_in1k/resolve/main/model.safetensors",
    filename="inception_resnet_v2.tf_in1k.safetensors",
    input_size=299,
    resize_size=333,
    interpolation="bicubic",
    mean=INCEPTION_MEAN,
    std=INCEPTION_STD,
)

MIXED_5B = (
    [(96, 1)],
    [(48, 1), (64, 5, 1, 2)],
    [(64, 1), (96, 3, 1, 1), (96, 3, 1, 1)],
    [("avg", 3, 1, 1, False), (64, 1)],
)
MIXED_6A = ([(384, 3, 2)], [(256, 1), (256, 3, 1, 1), (384, 3, 2)], [("max", 3, 2)])
MIXED_7A = (
    [(256, 1), (384, 3, 2)],
    [(256, 1), (288, 3, 2)],
    [(256, 1), (288, 3, 1, 1), (320, 3, 2)],
    [("max", 3, 2)],
)
BLOCK35 = ([(32, 1)], [(32, 1), (32, 3, 1, 1)], [(32, 1), (48, 3, 1, 1), (64, 3, 1, 1)])
BLOCK17 = ([(192, 1)], [(128, 1), (160, (1, 7), 1, (0, 3)), (192, (7, 1), 1, (3, 0))])
BLOCK8 = ([(192, 1)], [(192, 1), (224, (1, 3), 1, (0, 1)), (256, (3, 1), 1, (1, 0))])


class InceptionResNetV2(linen.Module):
    num_classes: int = 1000
    dropout: float = 0.0
    dtype: Any = jnp.float32
    axis_name: Optional[str] = None

    @linen.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        nn.check_image_input("inception_resnet_v2", x, 75)
        c = nn.make_conv(self.dtype, self.axis_name)

        def residual(y, spec, scale, name, activate=True):
            return nn.ResidualInceptionBlock(
                branches=spec, scale=scale, activate=activate, conv=c, dtype=self.dtype, name=name
            )(y, train)

        x = x.astype(self.dtype)  # N x 299 x 299 x 3
        x = c(32, kernel_size=3, strides=2, name="conv2d_1a")(x, train)  # N x 149 x 149 x 32
        x = c(32, kernel_size=3, name="conv2d_2a")(x, train)  # N x 147 x 147 x 32
        x = c(64, kernel_size=3, strides=1, padding=1, name="conv2d_2b")(x, train)  # N x 147 x 147 x 64
        x = nn.max_pool(x, kernel_size=3, stride=2)  # N x 73 x 73 x 64
        x = c(80, kernel_size=1, name="conv2d_3b")(x, train)  # N x 73 x 73 x 80
        x = c(192, kernel_size=3, name="conv2d_4a")(x, train)  # N x 71 x 71 x 192
        x = nn.max_pool(x, kernel_size=3, stride=2)  # N x 35 x 35 x 192
        x = nn.MixedBlock(branches=MIXED_5B, conv=c, name="mixed_5b")(x, train)  # N x 35 x 35 x 320
        for i in range(10):
            x = residual(x, BLOCK35, 0.17, f"repeat_{i}")  # N x 35 x 35 x 320
        x = nn.MixedBlock(branches=MIXED_6A, conv=c, name="mixed_6a")(x, train)  # N x 17 x 17 x 1088
        for i in range(20):
            x = residual(x, BLOCK17, 0.10, f"repeat_1_{i}")  # N x 17 x 17 x 1088
        x = nn.MixedBlock(branches=MIXED_7A, conv=c, name="mixed_7a")(x, train)  # N x 8 x 8 x 2080
        for i in range(9):
            x = residual(x, BLOCK8, 0.20, f"repeat_2_{i}")  # N x 8 x 8 x 2080
        x = residual(x, BLOCK8, 1.0, "block8", activate=False)  # N x 8 x 8 x 2080
        x = c(1536, kernel_size=1, name="conv2d_7b")(x, train)  # N x 8 x 8 x 1536
        x = nn.global_avg_pool(x)  # N x 1536
        x = nn.Dropout(rate=self.dropout, axis_name=self.axis_name)(x, train)
        return nn.dense(self.num_classes, dtype=self.dtype, name="classif")(x)  # N x 1000


register(
    ModelInfo(
        "inception_resnet_v2",
        InceptionResNetV2,
        299,
        75,
        classifier="classif",
        reference="timm inception_resnet_v2",
        pretrained=PRETRAINED,
    )
)
