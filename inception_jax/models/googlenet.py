"""GoogLeNet (Inception v1): Szegedy et al., "Going Deeper with Convolutions", CVPR 2015.

Three registered variants share this file:

* ``googlenet`` matches ``torchvision.models.googlenet`` exactly (same layer
  names, so its ImageNet weights convert by name): BatchNorm after every conv,
  ceil-mode max pools, a 2x2 last pool, the 3x3 conv in the "5x5" branch that
  torchvision keeps for weight compatibility (vision issue #906), dropout 0.2,
  aux heads after 4a and 4d with adaptive 4x4 pooling and dropout 0.7, and the
  ``transform_input`` option (re-normalises ImageNet-normalised input to the
  [-1, 1] scaling the original Google weights expect).
* ``googlenet_paper`` is the paper / design-doc version: a real 5x5 conv in
  the third branch, padded (not ceil-mode) pools, dropout 0.4.
* ``googlenet_cifar`` adapts the torchvision body to 32x32 inputs: a 3x3 stem
  without any downsampling (conv1 3x3, conv2 1x1, conv3 3x3; no maxpool1/2),
  so the Inception stages see 32x32 / 16x16 / 8x8 grids; aux heads optional.

Differences from torchvision: train mode returns ``(logits, aux1, aux2)`` in
network order (torchvision's namedtuple is ``(logits, aux2, aux1)``); the
paper's original aux heads used a 5x5/3 average pool, here (as in torchvision
and the reference CIFAR recipe) adaptive 4x4 pooling.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as linen
import jax
import jax.numpy as jnp

from inception_jax import nn
from inception_jax.models.registry import ModelInfo, Pretrained, register

# torchvision GoogLeNet_Weights.IMAGENET1K_V1 (ported from the original paper's
# weights): Resize(256) + CenterCrop(224), bilinear, ImageNet mean/std, and the
# model built with transform_input=True.
PRETRAINED = Pretrained(
    source="torchvision",
    url="https://download.pytorch.org/models/googlenet-1378be20.pth",
    filename="googlenet-1378be20.pth",
    input_size=224,
    resize_size=256,
    model_kwargs=(("transform_input", True),),
    check_hash=True,
    accuracy=(69.778, 89.53),
)

# (in, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj) from the paper's Table 1.
INCEPTION_CFG = {
    "inception3a": (192, 64, 96, 128, 16, 32, 32),
    "inception3b": (256, 128, 128, 192, 32, 96, 64),
    "inception4a": (480, 192, 96, 208, 16, 48, 64),
    "inception4b": (512, 160, 112, 224, 24, 64, 64),
    "inception4c": (512, 128, 128, 256, 24, 64, 64),
    "inception4d": (512, 112, 144, 288, 32, 64, 64),
    "inception4e": (528, 256, 160, 320, 32, 128, 128),
    "inception5a": (832, 256, 160, 320, 32, 128, 128),
    "inception5b": (832, 384, 192, 384, 48, 128, 128),
}

_NAMES = {"torchvision": "googlenet", "paper": "googlenet_paper", "cifar": "googlenet_cifar"}
# Smallest input each variant runs on (torchvision's googlenet fails below 15x15; the
# padded pools of the paper variant run on any size).
_MIN_SIZE = {"torchvision": 15, "paper": 1, "cifar": 2}
_DEFAULT_DROPOUT = {"torchvision": 0.2, "paper": 0.4, "cifar": 0.2}


def transform_imagenet_input(x: jax.Array) -> jax.Array:
    """torchvision's ``transform_input``: ImageNet mean/std normalisation -> (x - 0.5) / 0.5."""
    mean = jnp.array([0.485, 0.456, 0.406], x.dtype)
    std = jnp.array([0.229, 0.224, 0.225], x.dtype)
    return x * (std / 0.5) + (mean - 0.5) / 0.5


class GoogLeNet(linen.Module):
    """GoogLeNet; ``variant`` is "torchvision", "paper" or "cifar" (see module docstring)."""

    num_classes: int = 1000
    aux_logits: bool = True
    transform_input: bool = False
    dropout: Optional[float] = None
    dropout_aux: float = 0.7
    dtype: Any = jnp.float32
    axis_name: Optional[str] = None
    variant: str = "torchvision"

    @linen.compact
    def __call__(self, x: jax.Array, train: bool = False):
        v = self.variant
        if v not in _NAMES:
            raise ValueError(f"GoogLeNet: unknown variant {v!r}; expected one of {sorted(_NAMES)}")
        nn.check_image_input(_NAMES[v], x, _MIN_SIZE[v])
        conv = nn.make_conv(self.dtype, self.axis_name)
        torchvision_like = v != "paper"
        kernel5 = 3 if torchvision_like else 5

        def pool(y, last=False):
            if torchvision_like:
                k = 2 if last else 3
                return nn.max_pool(y, kernel_size=k, stride=2, ceil_mode=True)
            return nn.max_pool(y, kernel_size=3, stride=2, padding=1)

        def inception(y, name):
            return nn.InceptionModule(
                *INCEPTION_CFG[name],
                branch3_kernel=kernel5,
                pool_ceil_mode=torchvision_like,
                conv=conv,
                name=name,
            )(y, train)

        run_aux = self.aux_logits and (train or self.is_initializing())

        def aux(y, name):
            return nn.AuxiliaryClassifier(
                num_classes=self.num_classes,
                dropout=self.dropout_aux,
                conv=conv,
                dtype=self.dtype,
                axis_name=self.axis_name,
                name=name,
            )(y, train)

        if self.transform_input:
            x = transform_imagenet_input(x)
        x = x.astype(self.dtype)  # googlenet: N x 224 x 224 x 3; googlenet_cifar: N x 32 x 32 x 3
        if v == "cifar":
            x = conv(64, kernel_size=3, strides=1, padding=1, name="conv1")(x, train)  # N x 32 x 32 x 64
            x = conv(64, kernel_size=1, name="conv2")(x, train)  # N x 32 x 32 x 64
            x = conv(192, kernel_size=3, strides=1, padding=1, name="conv3")(x, train)  # N x 32 x 32 x 192
        else:
            x = conv(64, kernel_size=7, strides=2, padding=3, name="conv1")(x, train)  # N x 112 x 112 x 64
            x = pool(x)  # N x 56 x 56 x 64
            x = conv(64, kernel_size=1, name="conv2")(x, train)  # N x 56 x 56 x 64
            x = conv(192, kernel_size=3, strides=1, padding=1, name="conv3")(x, train)  # N x 56 x 56 x 192
            x = pool(x)  # N x 28 x 28 x 192
        x = inception(x, "inception3a")  # N x 28 x 28 x 256
        x = inception(x, "inception3b")  # N x 28 x 28 x 480
        x = pool(x)  # N x 14 x 14 x 480
        x = inception(x, "inception4a")  # N x 14 x 14 x 512
        aux1 = aux(x, "aux1") if run_aux else None  # N x 1000
        x = inception(x, "inception4b")  # N x 14 x 14 x 512
        x = inception(x, "inception4c")  # N x 14 x 14 x 512
        x = inception(x, "inception4d")  # N x 14 x 14 x 528
        aux2 = aux(x, "aux2") if run_aux else None  # N x 1000
        x = inception(x, "inception4e")  # N x 14 x 14 x 832
        x = pool(x, last=True)  # N x 7 x 7 x 832
        x = inception(x, "inception5a")  # N x 7 x 7 x 832
        x = inception(x, "inception5b")  # N x 7 x 7 x 1024
        x = nn.global_avg_pool(x)  # N x 1024
        rate = _DEFAULT_DROPOUT[v] if self.dropout is None else self.dropout
        x = nn.Dropout(rate=rate, axis_name=self.axis_name)(x, train)
        logits = nn.dense(self.num_classes, dtype=self.dtype, name="fc")(x)  # N x 1000
        if self.aux_logits and train:
            return logits, aux1, aux2
        return logits


class GoogLeNetPaper(GoogLeNet):
    variant: str = "paper"


class GoogLeNetCIFAR(GoogLeNet):
    aux_logits: bool = False
    variant: str = "cifar"


_COMMON = dict(has_aux=True, classifier="fc", aux_prefixes=("aux1", "aux2"))
register(
    ModelInfo(
        "googlenet",
        GoogLeNet,
        224,
        _MIN_SIZE["torchvision"],
        aux_default=True,
        min_aux_input_size=_MIN_SIZE["torchvision"],
        reference="torchvision.models.googlenet",
        pretrained=PRETRAINED,
        **_COMMON,
    )
)
register(
    ModelInfo(
        "googlenet_paper",
        GoogLeNetPaper,
        224,
        _MIN_SIZE["paper"],
        aux_default=True,
        min_aux_input_size=_MIN_SIZE["paper"],
        reference="GoogLeNet paper (Szegedy et al. 2014)",
        **_COMMON,
    )
)
register(
    ModelInfo(
        "googlenet_cifar",
        GoogLeNetCIFAR,
        32,
        _MIN_SIZE["cifar"],
        num_classes=10,
        aux_default=False,
        min_aux_input_size=_MIN_SIZE["cifar"],
        reference="torchvision GoogLeNet body, CIFAR stem",
        **_COMMON,
    )
)
