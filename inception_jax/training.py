"""Training, by its old import path: it now lives in :mod:`inception_jax.train`
(``optim``, ``steps``, ``parallel``, ``inputs``, ``signals``, ``loop``), and
``inception_jax.training.X`` keeps working for every name listed there."""

from inception_jax.train import *  # noqa: F403
from inception_jax.train import __all__  # noqa: F401
