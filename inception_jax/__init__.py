"""inception_jax: the Inception family (GoogLeNet v1, BN-Inception, Inception v3, v4,
Inception-ResNet-v2 and CIFAR-sized variants) in JAX / Flax linen."""

from inception_jax import layers, models
from inception_jax.models import create, list_models

__version__ = "0.1.0"
__all__ = ["layers", "models", "create", "list_models", "__version__"]
