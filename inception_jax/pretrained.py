"""Public ImageNet weights, by their old import path: they now live in
:mod:`inception_jax.weights` (``files``, ``hub``, ``preprocess``, ``pretrained``), and
``inception_jax.pretrained.X`` keeps working for every name listed there."""

from inception_jax.weights import *  # noqa: F403
from inception_jax.weights import __all__  # noqa: F401
