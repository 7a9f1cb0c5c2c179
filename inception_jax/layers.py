"""The building blocks, by their old import path: they now live in
:mod:`inception_jax.nn` (``pooling``, ``norm``, ``conv``, ``blocks``), and
``inception_jax.layers.X`` keeps working for every name listed there."""

from inception_jax.nn import *  # noqa: F403
from inception_jax.nn import __all__  # noqa: F401
