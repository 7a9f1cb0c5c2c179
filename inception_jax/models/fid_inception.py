"""The FID Inception network: Inception v3 as the 2015-12-05 TensorFlow graph that FID
was defined on, built the way pytorch-fid builds it (``fid_inception_v3``).

It differs from torchvision's Inception v3 only where pytorch-fid patches it:
1008 classes, no aux head, and the pool branches of its blocks (``FIDInceptionA``
and ``FIDInceptionC``: 3x3 average pools that do not count the zero padding;
``FIDInceptionE_1``: the same; ``FIDInceptionE_2`` (Mixed_7c): a 3x3 *max* pool).
Names and weights are torchvision's, so pytorch-fid's weights file
(``pt_inception-2015-12-05-6726825d.pth``) converts by name.

Input: NHWC images scaled to [-1, 1] at 299x299; :mod:`inception_jax.fid` resizes
and scales [0, 1] images as pytorch-fid does. ``apply(..., output_blocks=(3,))``
returns pytorch-fid's block outputs (64, 192, 768 or 2048 channels).
"""

from __future__ import annotations

from typing import Tuple

from inception_jax.models.inception_v3 import InceptionV3
from inception_jax.models.registry import INCEPTION_MEAN, INCEPTION_STD, ModelInfo, Pretrained, register

FID_POOLS = ("avg_exclude_pad",) * 7 + ("avg_exclude_pad", "max")

PRETRAINED = Pretrained(
    source="pytorch-fid",
    url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
    "pt_inception-2015-12-05-6726825d.pth",
    filename="pt_inception-2015-12-05-6726825d.pth",
    input_size=299,
    resize_size=299,
    mean=INCEPTION_MEAN,
    std=INCEPTION_STD,
    num_classes=1008,
)


class FIDInceptionV3(InceptionV3):
    num_classes: int = 1008
    aux_logits: bool = False
    pools: Tuple[str, ...] = FID_POOLS


register(
    ModelInfo(
        "fid_inception_v3",
        FIDInceptionV3,
        299,
        75,
        num_classes=1008,
        classifier="fc",
        reference="pytorch_fid.inception.fid_inception_v3",
        pretrained=PRETRAINED,
    )
)
