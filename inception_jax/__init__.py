"""inception_jax: the Inception family (GoogLeNet v1, BN-Inception, Inception v3, v4,
Inception-ResNet-v2 and CIFAR-sized variants) in JAX / Flax linen."""

import importlib

__version__ = "0.1.0"
__all__ = [
    "__version__",
    "create",
    "intermediate_features",
    "list_models",
    "models",
    "nn",
    "train",
    "train_and_evaluate",
]
_MODULES = (
    "backends",
    "checkpoint",
    "data",
    "export",
    "fid",
    "metrics",
    "models",
    "nn",
    "taps",
    "train",
    "weights",
)


def __getattr__(name):
    # Imported on first use, so that ``import inception_jax.hostmem`` (which must
    # run before JAX starts its threads) does not import JAX.
    if name in _MODULES:
        return importlib.import_module(f"inception_jax.{name}")
    if name in ("create", "list_models"):
        return getattr(importlib.import_module("inception_jax.models"), name)
    if name == "intermediate_features":
        return importlib.import_module("inception_jax.taps").intermediate_features
    if name == "train_and_evaluate":
        return importlib.import_module("inception_jax.train").train_and_evaluate
    raise AttributeError(f"module 'inception_jax' has no attribute {name!r}")
