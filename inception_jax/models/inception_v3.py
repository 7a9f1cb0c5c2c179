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

import flax.linen as linen
import jax
import jax.numpy as jnp

from inception_jax import nn
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
        return nn.avg_pool(x, kernel_size=3, stride=1, padding=1)
    if pool == "avg_exclude_pad":
        return nn.avg_pool(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
    if pool == "max":
        return nn.max_pool(x, kernel_size=3, stride=1, padding=1)
    raise ValueError(f"pool={pool!r}: expected 'avg', 'avg_exclude_pad' or 'max'")


class InceptionA(linen.Module):
    """35x35 block: 1x1 | 1x1->5x5 | 1x1->3x3->3x3 | pool->1x1."""

    pool_features: int
    conv: Callable[..., linen.Module] = nn.BasicConv
    pool: str = "avg"

    @linen.compact
    def __call__(self, x, train=False):
        c = self.conv
        b1 = c(64, kernel_size=1, name="branch1x1")(x, train)
        b5 = c(48, kernel_size=1, name="branch5x5_1")(x, train)
        b5 = c(64, kernel_size=5, strides=1, padding=2, name="branch5x5_2")(b5, train)
        b3 = c(64, kernel_size=1, name="branch3x3dbl_1")(x, train)
        b3 = c(96, kernel_size=3, strides=1, padding=1, name="branch3x3dbl_2")(b3, train)
        b3 = c(96, kernel_size=3, strides=1, padding=1, name="branch3x3dbl_3")(b3, train)
        bp = c(self.pool_features, kernel_size=1, name="branch_pool")(branch_pool(x, self.pool), train)
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionC(linen.Module):
    """17x17 block with 7x7 factorized into 1x7 and 7x1 convs."""

    channels_7x7: int
    conv: Callable[..., linen.Module] = nn.BasicConv
    pool: str = "avg"

    @linen.compact
    def __call__(self, x, train=False):
        c, c7 = self.conv, self.channels_7x7
        b1 = c(192, kernel_size=1, name="branch1x1")(x, train)
        b7 = c(c7, kernel_size=1, name="branch7x7_1")(x, train)
        b7 = c(c7, kernel_size=(1, 7), strides=1, padding=(0, 3), name="branch7x7_2")(b7, train)
        b7 = c(192, kernel_size=(7, 1), strides=1, padding=(3, 0), name="branch7x7_3")(b7, train)
        bd = c(c7, kernel_size=1, name="branch7x7dbl_1")(x, train)
        bd = c(c7, kernel_size=(7, 1), strides=1, padding=(3, 0), name="branch7x7dbl_2")(bd, train)
        bd = c(c7, kernel_size=(1, 7), strides=1, padding=(0, 3), name="branch7x7dbl_3")(bd, train)
        bd = c(c7, kernel_size=(7, 1), strides=1, padding=(3, 0), name="branch7x7dbl_4")(bd, train)
        bd = c(192, kernel_size=(1, 7), strides=1, padding=(0, 3), name="branch7x7dbl_5")(bd, train)
        bp = c(192, kernel_size=1, name="branch_pool")(branch_pool(x, self.pool), train)
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(linen.Module):
    """17x17 -> 8x8 grid reduction."""

    conv: Callable[..., linen.Module] = nn.BasicConv

    @linen.compact
    def __call__(self, x, train=False):
        c = self.conv
        b3 = c(192, kernel_size=1, name="branch3x3_1")(x, train)
        b3 = c(320, kernel_size=3, strides=2, name="branch3x3_2")(b3, train)
        b7 = c(192, kernel_size=1, name="branch7x7x3_1")(x, train)
        b7 = c(192, kernel_size=(1, 7), strides=1, padding=(0, 3), name="branch7x7x3_2")(b7, train)
        b7 = c(192, kernel_size=(7, 1), strides=1, padding=(3, 0), name="branch7x7x3_3")(b7, train)
        b7 = c(192, kernel_size=3, strides=2, name="branch7x7x3_4")(b7, train)
        return jnp.concatenate([b3, b7, nn.max_pool(x, kernel_size=3, stride=2)], axis=-1)


class InceptionE(linen.Module):
    """8x8 block with expanded (parallel 1x3 / 3x1) outputs."""

    conv: Callable[..., linen.Module] = nn.BasicConv
    pool: str = "avg"

    @linen.compact
    def __call__(self, x, train=False):
        c = self.conv
        b1 = c(320, kernel_size=1, name="branch1x1")(x, train)
        b3 = c(384, kernel_size=1, name="branch3x3_1")(x, train)
        b3 = jnp.concatenate(
            [
                c(384, kernel_size=(1, 3), strides=1, padding=(0, 1), name="branch3x3_2a")(b3, train),
                c(384, kernel_size=(3, 1), strides=1, padding=(1, 0), name="branch3x3_2b")(b3, train),
            ],
            axis=-1,
        )
        bd = c(448, kernel_size=1, name="branch3x3dbl_1")(x, train)
        bd = c(384, kernel_size=3, strides=1, padding=1, name="branch3x3dbl_2")(bd, train)
        bd = jnp.concatenate(
            [
                c(384, kernel_size=(1, 3), strides=1, padding=(0, 1), name="branch3x3dbl_3a")(bd, train),
                c(384, kernel_size=(3, 1), strides=1, padding=(1, 0), name="branch3x3dbl_3b")(bd, train),
            ],
            axis=-1,
        )
        bp = c(192, kernel_size=1, name="branch_pool")(branch_pool(x, self.pool), train)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionAux(linen.Module):
    """Aux head on Mixed_6e: avgpool 5/3 -> 1x1 (128) -> 5x5 (768) -> global pool -> fc."""

    num_classes: int
    conv: Callable[..., linen.Module] = nn.BasicConv
    dtype: Any = jnp.float32

    @linen.compact
    def __call__(self, x, train=False):
        x = nn.avg_pool(x, kernel_size=5, stride=3)  # N x 5 x 5 x 768
        x = self.conv(128, kernel_size=1, name="conv0")(x, train)  # N x 5 x 5 x 128
        x = self.conv(768, kernel_size=5, name="conv1")(x, train)  # N x 1 x 1 x 768
        x = nn.global_avg_pool(x)  # N x 768
        return nn.dense(self.num_classes, dtype=self.dtype, name="fc")(x)  # N x 1000


class InceptionV3(linen.Module):
    num_classes: int = 1000
    aux_logits: bool = True
    transform_input: bool = False
    dropout: float = 0.5
    dtype: Any = jnp.float32
    axis_name: Optional[str] = None
    # the pool branches of Mixed_5b-5d, 6b-6e, 7b, 7c (FIDInceptionV3 changes them)
    pools: Tuple[str, ...] = ("avg",) * 9

    @linen.compact
    def __call__(self, x: jax.Array, train: bool = False, output_blocks: Sequence[int] = ()):
        """Logits (train mode with aux heads: ``(logits, aux)``). With ``output_blocks``
        (pytorch-fid's block indices 0-3), the list of those blocks' outputs instead, NHWC:
        0 the first max pool (64 channels), 1 the second (192), 2 Mixed_6e (768), 3 the
        global average pool (N, 1, 1, 2048); the network stops after the last one asked."""
        run_aux = self.aux_logits and (train or self.is_initializing())
        nn.check_image_input("inception_v3", x, 299 if run_aux else 75)
        wanted = sorted(set(output_blocks))
        if wanted and (wanted[0] < 0 or wanted[-1] > 3):
            raise ValueError(f"output_blocks={tuple(output_blocks)}: expected indices in 0-3")
        outs = []

        def block_done(index, value) -> bool:
            if index in wanted:
                outs.append(value)
            return bool(wanted) and index == wanted[-1]

        c = nn.make_conv(self.dtype, self.axis_name)
        p = self.pools
        if self.transform_input:
            x = transform_imagenet_input(x)
        x = x.astype(self.dtype)  # N x 299 x 299 x 3
        x = c(32, kernel_size=3, strides=2, name="Conv2d_1a_3x3")(x, train)  # N x 149 x 149 x 32
        x = c(32, kernel_size=3, name="Conv2d_2a_3x3")(x, train)  # N x 147 x 147 x 32
        x = c(64, kernel_size=3, strides=1, padding=1, name="Conv2d_2b_3x3")(x, train)  # N x 147 x 147 x 64
        x = nn.max_pool(x, kernel_size=3, stride=2)  # N x 73 x 73 x 64
        if block_done(0, x):
            return outs
        x = c(80, kernel_size=1, name="Conv2d_3b_1x1")(x, train)  # N x 73 x 73 x 80
        x = c(192, kernel_size=3, name="Conv2d_4a_3x3")(x, train)  # N x 71 x 71 x 192
        x = nn.max_pool(x, kernel_size=3, stride=2)  # N x 35 x 35 x 192
        if block_done(1, x):
            return outs
        x = InceptionA(pool_features=32, conv=c, pool=p[0], name="Mixed_5b")(x, train)  # N x 35 x 35 x 256
        x = InceptionA(pool_features=64, conv=c, pool=p[1], name="Mixed_5c")(x, train)  # N x 35 x 35 x 288
        x = InceptionA(pool_features=64, conv=c, pool=p[2], name="Mixed_5d")(x, train)  # N x 35 x 35 x 288
        reduction = nn.GridReduction(ch3x3=384, ch3x3dbl_red=64, ch3x3dbl=96, conv=c, name="Mixed_6a")
        x = reduction(x, train)  # N x 17 x 17 x 768
        x = InceptionC(channels_7x7=128, conv=c, pool=p[3], name="Mixed_6b")(x, train)  # N x 17 x 17 x 768
        x = InceptionC(channels_7x7=160, conv=c, pool=p[4], name="Mixed_6c")(x, train)  # N x 17 x 17 x 768
        x = InceptionC(channels_7x7=160, conv=c, pool=p[5], name="Mixed_6d")(x, train)  # N x 17 x 17 x 768
        x = InceptionC(channels_7x7=192, conv=c, pool=p[6], name="Mixed_6e")(x, train)  # N x 17 x 17 x 768
        if block_done(2, x):
            return outs
        aux = None
        if run_aux:
            head = InceptionAux(num_classes=self.num_classes, conv=c, dtype=self.dtype, name="AuxLogits")
            aux = head(x, train)  # N x 1000
        x = InceptionD(conv=c, name="Mixed_7a")(x, train)  # N x 8 x 8 x 1280
        x = InceptionE(conv=c, pool=p[7], name="Mixed_7b")(x, train)  # N x 8 x 8 x 2048
        x = InceptionE(conv=c, pool=p[8], name="Mixed_7c")(x, train)  # N x 8 x 8 x 2048
        x = nn.global_avg_pool(x)  # N x 2048
        if block_done(3, x[:, None, None, :]):
            return outs
        x = nn.Dropout(rate=self.dropout, axis_name=self.axis_name)(x, train)
        logits = nn.dense(self.num_classes, dtype=self.dtype, name="fc")(x)  # N x 1000
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
