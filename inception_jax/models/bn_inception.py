"""BN-Inception (Inception v2): Ioffe & Szegedy, "Batch Normalization: Accelerating
Deep Network Training by Reducing Internal Covariate Shift", ICML 2015.

Matches Cadene's ``pretrainedmodels.bninception`` (the usual source of ImageNet
weights) layer for layer, with its flat layer names (``inception_3a_1x1``,
``inception_3a_1x1_bn``, ...): convs *with* bias, BatchNorm eps 1e-5, ceil-mode
max pools, count_include_pad average pools, 3x3 convs in place of the 5x5 (two
stacked: ``double_3x3``), stride-2 reductions in 3c and 4e, and a max pool
branch in 5b. Its weights expect BGR input in [0, 255] minus (104, 117, 128).

Difference: the reference ends with a fixed 7x7 average pool, so it only runs
on 224x224 inputs (7x7 features); here it is a global average pool, identical
at 224 and usable at other sizes.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as linen
import jax
import jax.numpy as jnp

from inception_jax import nn
from inception_jax.models.registry import ModelInfo, Pretrained, register

# Cadene's pretrained_settings["bninception"]["imagenet"] with the eval transform of
# pretrainedmodels.utils.TransformImage (scale 0.875): Resize(256) + CenterCrop(224),
# bilinear, to [0, 1], RGB -> BGR, x255, minus (104, 117, 128) (B, G, R), std 1;
# 1000 classes, no background class.
PRETRAINED = Pretrained(
    source="pretrainedmodels",
    url="http://data.lip6.fr/cadene/pretrainedmodels/bn_inception-52deb4733.pth",
    filename="bn_inception-52deb4733.pth",
    input_size=224,
    resize_size=256,
    mean=(104.0, 117.0, 128.0),
    std=(1.0, 1.0, 1.0),
    input_space="BGR",
    input_range=255.0,
)

# name: (1x1, 3x3_reduce, 3x3, double_3x3_reduce, double_3x3, pool kind, pool_proj)
# A reduction block (stride 2) has no 1x1 branch and a plain max pool branch.
BN_INCEPTION_CFG = (
    ("inception_3a", 64, 64, 64, 64, 96, "avg", 32),  # N x 28 x 28 x 256
    ("inception_3b", 64, 64, 96, 64, 96, "avg", 64),  # N x 28 x 28 x 320
    ("inception_3c", None, 128, 160, 64, 96, "reduce", None),  # N x 14 x 14 x 576
    ("inception_4a", 224, 64, 96, 96, 128, "avg", 128),  # N x 14 x 14 x 576
    ("inception_4b", 192, 96, 128, 96, 128, "avg", 128),  # N x 14 x 14 x 576
    ("inception_4c", 160, 128, 160, 128, 160, "avg", 128),  # N x 14 x 14 x 608
    ("inception_4d", 96, 128, 192, 160, 192, "avg", 128),  # N x 14 x 14 x 608
    ("inception_4e", None, 128, 192, 192, 256, "reduce", None),  # N x 7 x 7 x 1056
    ("inception_5a", 352, 192, 320, 160, 224, "avg", 128),  # N x 7 x 7 x 1024
    ("inception_5b", 352, 192, 320, 192, 224, "max", 128),  # N x 7 x 7 x 1024
)


class BNInception(linen.Module):
    num_classes: int = 1000
    dropout: float = 0.0
    dtype: Any = jnp.float32
    axis_name: Optional[str] = None

    @linen.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        nn.check_image_input("bn_inception", x, 31)

        def conv_bn(y, name, features, kernel, stride=1, padding=0):
            y = linen.Conv(
                features,
                kernel_size=(kernel, kernel),
                strides=(stride, stride),
                padding=((padding, padding), (padding, padding)),
                use_bias=True,
                dtype=self.dtype,
                name=name,
            )(y)
            y = nn.BatchNorm(
                momentum=0.1, epsilon=1e-5, dtype=self.dtype, axis_name=self.axis_name, name=name + "_bn"
            )(y, train)
            return linen.relu(y)

        x = x.astype(self.dtype)  # N x 224 x 224 x 3
        x = conv_bn(x, "conv1_7x7_s2", 64, kernel=7, stride=2, padding=3)  # N x 112 x 112 x 64
        x = nn.max_pool(x, kernel_size=3, stride=2, ceil_mode=True)  # N x 56 x 56 x 64
        x = conv_bn(x, "conv2_3x3_reduce", 64, kernel=1)  # N x 56 x 56 x 64
        x = conv_bn(x, "conv2_3x3", 192, kernel=3, stride=1, padding=1)  # N x 56 x 56 x 192
        x = nn.max_pool(x, kernel_size=3, stride=2, ceil_mode=True)  # N x 28 x 28 x 192
        for name, c1, c3r, c3, cdr, cd, pool, proj in BN_INCEPTION_CFG:
            stride = 2 if pool == "reduce" else 1
            outs = []
            if c1 is not None:
                outs.append(conv_bn(x, f"{name}_1x1", c1, kernel=1))
            y = conv_bn(x, f"{name}_3x3_reduce", c3r, kernel=1)
            outs.append(conv_bn(y, f"{name}_3x3", c3, kernel=3, stride=stride, padding=1))
            y = conv_bn(x, f"{name}_double_3x3_reduce", cdr, kernel=1)
            y = conv_bn(y, f"{name}_double_3x3_1", cd, kernel=3, stride=1, padding=1)
            outs.append(conv_bn(y, f"{name}_double_3x3_2", cd, kernel=3, stride=stride, padding=1))
            if pool == "reduce":
                outs.append(nn.max_pool(x, kernel_size=3, stride=2, ceil_mode=True))
            else:
                y = (
                    nn.avg_pool(x, kernel_size=3, stride=1, padding=1, ceil_mode=True)
                    if pool == "avg"
                    else nn.max_pool(x, kernel_size=3, stride=1, padding=1, ceil_mode=True)
                )
                outs.append(conv_bn(y, f"{name}_pool_proj", proj, kernel=1))
            x = jnp.concatenate(outs, axis=-1)  # shapes: BN_INCEPTION_CFG's comments
        x = nn.global_avg_pool(x)  # N x 1024
        x = nn.Dropout(rate=self.dropout, axis_name=self.axis_name)(x, train)
        return nn.dense(self.num_classes, dtype=self.dtype, name="last_linear")(x)  # N x 1000


register(
    ModelInfo(
        "bn_inception",
        BNInception,
        224,
        31,
        classifier="last_linear",
        reference="pretrainedmodels (Cadene) bninception",
        pretrained=PRETRAINED,
    )
)
