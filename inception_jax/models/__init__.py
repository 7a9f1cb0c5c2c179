"""The Inception model zoo: ``create(name, ...)``, ``list_models()``.

Importing this package registers every model.
"""

from inception_jax.models import (  # noqa: F401
    bn_inception,
    cifar,
    fid_inception,
    googlenet,
    inception_resnet_v2,
    inception_v3,
    inception_v4,
)
from inception_jax.models.bn_inception import BNInception
from inception_jax.models.cifar import InceptionCIFAR
from inception_jax.models.fid_inception import FIDInceptionV3
from inception_jax.models.googlenet import GoogLeNet
from inception_jax.models.inception_resnet_v2 import InceptionResNetV2
from inception_jax.models.inception_v3 import InceptionV3
from inception_jax.models.inception_v4 import InceptionV4
from inception_jax.models.registry import ModelInfo, Pretrained, create, get_info, list_models

__all__ = [
    "create",
    "list_models",
    "get_info",
    "ModelInfo",
    "Pretrained",
    "GoogLeNet",
    "InceptionCIFAR",
    "BNInception",
    "InceptionV3",
    "InceptionV4",
    "InceptionResNetV2",
    "FIDInceptionV3",
]
