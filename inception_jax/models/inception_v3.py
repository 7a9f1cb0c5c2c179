"""Inception v3: Szegedy et al., "Rethinking the Inception Architecture for Computer
Vision", CVPR 2016.

Matches ``torchvision.models.inception_v3`` exactly, names included
(``Conv2d_1a_3x3``, ``Mixed_5b.branch3x3dbl_1``, ``AuxLogits.conv0``, ...):
factorized 5x5 (two 3x3), asymmetric 1x7/7x1 and 1x3/3x1 convs, efficient grid
reduction (Mixed_6a / Mixed_7a), the auxiliary head on Mixed_6e, BatchNorm eps
1e-3, count_include_pad average pools, dropout 0.5, ``transform_input``.

Differences: none in the numbers. Train mode returns ``(logits, aux)`` (a
tuple, not torchvision's namedtuple). As in torchvision, the aux head needs
299x299 inputs (its 5x5/3 pool and 5x5 conv need a 17x17 Mixed_6e map); the
network alone runs from 75x75, so smaller images need ``aux_logits=False``.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from inception_jax import nn as layers
from inception_jax.models.googlenet import transform_imagenet_input
from inception_jax.models.registry import ModelInfo, Pretrained, register

# torchvision Inception_V3_Weights.IMAGENET1K_V1 (ported from TensorFlow):
# Resize(342) + CenterCrop(299), bilinear, ImageNet mean/std, transform_input=True.
PRETRAINED = Pretrained(
    source="torchvision",
    url="https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth",
    filename="inception_v3_google-0cc3c7bd.pth",
    input_size=299,
    resize_size=342,
    model_kwargs=(("transform_input", True),),
    check_hash=True,
    accuracy=(77.294, 93.45),
)


def branch_pool(x: jax.Array, pool: str) -> jax.Array:
    """The 3x3 stride-1 pool of a block's pool branch: torchvision's ``"avg"`` (the zero
    padding counted), or the FID network's ``"avg_exclude_pad"`` and ``"max"``."""
    if pool == "avg":
        return layers.avg_pool(x, 3, 1, 1)
    if pool == "avg_exclude_pad":
        return layers.avg_pool(x, 3, 1, 1, count_include_pad=False)
    if pool == "max":
        return layers.max_pool(x, 3, 1, 1)
    raise ValueError(f"pool={pool!r}: expected 'avg', 'avg_exclude_pad' or 'max'")


class InceptionA(nn.Module):
    """35x35 block: 1x1 | 1x1->5x5 | 1x1->3x3->3x3 | pool->1x1."""

    pool_features: int
    conv: Callable[..., nn.Module] = layers.BasicConv
    pool: str = "avg"

    @nn.compact
    def __call__(self, x, train=False):
        c = self.conv
        b1 = c(64, 1, name="branch1x1")(x, train)
        b5 = c(48, 1, name="branch5x5_1")(x, train)
        b5 = c(64, 5, 1, 2, name="branch5x5_2")(b5, train)
        b3 = c(64, 1, name="branch3x3dbl_1")(x, train)
        b3 = c(96, 3, 1, 1, name="branch3x3dbl_2")(b3, train)
        b3 = c(96, 3, 1, 1, name="branch3x3dbl_3")(b3, train)
        bp = c(self.pool_features, 1, name="branch_pool")(branch_pool(x, self.pool), train)
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionC(nn.Module):
    """17x17 block with 7x7 factorized into 1x7 and 7x1 convs."""

    channels_7x7: int
    conv: Callable[..., nn.Module] = layers.BasicConv
    pool: str = "avg"

    @nn.compact
    def __call__(self, x, train=False):
        c, c7 = self.conv, self.channels_7x7
        b1 = c(192, 1, name="branch1x1")(x, train)
        b7 = c(c7, 1, name="branch7x7_1")(x, train)
        b7 = c(c7, (1, 7), 1, (0, 3), name="branch7x7_2")(b7, train)
        b7 = c(192, (7, 1), 1, (3, 0), name="branch7x7_3")(b7, train)
        bd = c(c7, 1, name="branch7x7dbl_1")(x, train)
        bd = c(c7, (7, 1), 1, (3, 0), name="branch7x7dbl_2")(bd, train)
        bd = c(c7, (1, 7), 1, (0, 3), name="branch7x7dbl_3")(bd, train)
        bd = c(c7, (7, 1), 1, (3, 0), name="branch7x7dbl_4")(bd, train)
        bd = c(192, (1, 7), 1, (0, 3), name="branch7x7dbl_5")(bd, train)
        bp = c(192, 1, name="branch_pool")(branch_pool(x, self.pool), train)
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    """17x17 -> 8x8 grid reduction."""

    conv: Callable[..., nn.Module] = layers.BasicConv

    @nn.compact
    def __call__(self, x, train=False):
        c = self.conv
        b3 = c(192, 1, name="branch3x3_1")(x, train)
        b3 = c(320, 3, 2, name="branch3x3_2")(b3, train)
        b7 = c(192, 1, name="branch7x7x3_1")(x, train)
        b7 = c(192, (1, 7), 1, (0, 3), name="branch7x7x3_2")(b7, train)
        b7 = c(192, (7, 1), 1, (3, 0), name="branch7x7x3_3")(b7, train)
        b7 = c(192, 3, 2, name="branch7x7x3_4")(b7, train)
        return jnp.concatenate([b3, b7, layers.max_pool(x, 3, 2)], axis=-1)


class InceptionE(nn.Module):
    """8x8 block with expanded (parallel 1x3 / 3x1) outputs."""

    conv: Callable[..., nn.Module] = layers.BasicConv
    pool: str = "avg"

    @nn.compact
    def __call__(self, x, train=False):
        c = self.conv
        b1 = c(320, 1, name="branch1x1")(x, train)
        b3 = c(384, 1, name="branch3x3_1")(x, train)
        b3 = jnp.concatenate(
            [
                c(384, (1, 3), 1, (0, 1), name="branch3x3_2a")(b3, train),
                c(384, (3, 1), 1, (1, 0), name="branch3x3_2b")(b3, train),
            ],
            axis=-1,
        )
        bd = c(448, 1, name="branch3x3dbl_1")(x, train)
        bd = c(384, 3, 1, 1, name="branch3x3dbl_2")(bd, train)
        bd = jnp.concatenate(
            [
                c(384, (1, 3), 1, (0, 1), name="branch3x3dbl_3a")(bd, train),
                c(384, (3, 1), 1, (1, 0), name="branch3x3dbl_3b")(bd, train),
            ],
            axis=-1,
        )
        bp = c(192, 1, name="branch_pool")(branch_pool(x, self.pool), train)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionAux(nn.Module):
    """Aux head on Mixed_6e: avgpool 5/3 -> 1x1 (128) -> 5x5 (768) -> global pool -> fc."""

    num_classes: int
    conv: Callable[..., nn.Module] = layers.BasicConv
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train=False):
        x = layers.avg_pool(x, 5, 3)
        x = self.conv(128, 1, name="conv0")(x, train)
        x = self.conv(768, 5, name="conv1")(x, train)
        x = layers.global_avg_pool(x)
        return layers.dense(self.num_classes, self.dtype, "fc")(x)


class InceptionV3(nn.Module):
    num_classes: int = 1000
    aux_logits: bool = True
    transform_input: bool = False
    dropout: float = 0.5
    dtype: Any = jnp.float32
    axis_name: Optional[str] = None
    # the pool branches of Mixed_5b-5d, 6b-6e, 7b, 7c (FIDInceptionV3 changes them)
    pools: Tuple[str, ...] = ("avg",) * 9

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, output_blocks: Sequence[int] = ()):
        """Logits (train mode with aux heads: ``(logits, aux)``). With ``output_blocks``
        (pytorch-fid's block indices 0-3), the list of those blocks' outputs instead, NHWC:
        0 the first max pool (64 channels), 1 the second (192), 2 Mixed_6e (768), 3 the
        global average pool (N, 1, 1, 2048); the network stops after the last one asked."""
        run_aux = self.aux_logits and (train or self.is_initializing())
        layers.check_image_input("inception_v3", x, 299 if run_aux else 75)
        wanted = sorted(set(output_blocks))
        if wanted and (wanted[0] < 0 or wanted[-1] > 3):
            raise ValueError(f"output_blocks={tuple(output_blocks)}: expected indices in 0-3")
        outs = []

        def block_done(index, value) -> bool:
            if index in wanted:
                outs.append(value)
            return bool(wanted) and index == wanted[-1]

        c = layers.make_conv(self.dtype, self.axis_name)
        p = self.pools
        if self.transform_input:
            x = transform_imagenet_input(x)
        x = c(32, 3, 2, name="Conv2d_1a_3x3")(x.astype(self.dtype), train)
        x = c(32, 3, name="Conv2d_2a_3x3")(x, train)
        x = c(64, 3, 1, 1, name="Conv2d_2b_3x3")(x, train)
        x = layers.max_pool(x, 3, 2)
        if block_done(0, x):
            return outs
        x = c(80, 1, name="Conv2d_3b_1x1")(x, train)
        x = c(192, 3, name="Conv2d_4a_3x3")(x, train)
        x = layers.max_pool(x, 3, 2)
        if block_done(1, x):
            return outs
        x = InceptionA(32, c, p[0], name="Mixed_5b")(x, train)
        x = InceptionA(64, c, p[1], name="Mixed_5c")(x, train)
        x = InceptionA(64, c, p[2], name="Mixed_5d")(x, train)
        x = layers.GridReduction(384, 64, 96, c, name="Mixed_6a")(x, train)
        x = InceptionC(128, c, p[3], name="Mixed_6b")(x, train)
        x = InceptionC(160, c, p[4], name="Mixed_6c")(x, train)
        x = InceptionC(160, c, p[5], name="Mixed_6d")(x, train)
        x = InceptionC(192, c, p[6], name="Mixed_6e")(x, train)
        if block_done(2, x):
            return outs
        aux = InceptionAux(self.num_classes, c, self.dtype, name="AuxLogits")(x, train) if run_aux else None
        x = InceptionD(c, name="Mixed_7a")(x, train)
        x = InceptionE(c, p[7], name="Mixed_7b")(x, train)
        x = InceptionE(c, p[8], name="Mixed_7c")(x, train)
        x = layers.global_avg_pool(x)
        if block_done(3, x[:, None, None, :]):
            return outs
        x = layers.Dropout(self.dropout, self.axis_name)(x, train)
        logits = layers.dense(self.num_classes, self.dtype, "fc")(x)
        if self.aux_logits and train:
            return logits, aux
        return logits


register(
    ModelInfo(
        "inception_v3",
        InceptionV3,
        299,
        75,
        has_aux=True,
        aux_default=True,
        min_aux_input_size=299,
        classifier="fc",
        aux_prefixes=("AuxLogits",),
        reference="torchvision.models.inception_v3",
        pretrained=PRETRAINED,
    )
)
