"""PyTorch state_dict conversion, by its old import path: it now lives in
:mod:`inception_jax.weights.convert`."""

from inception_jax.weights.convert import *  # noqa: F403
from inception_jax.weights.convert import convert_state_dict, from_torch, torch_key_to_path  # noqa: F401
