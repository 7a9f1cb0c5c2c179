"""Convolution + BatchNorm + ReLU (``BasicConv``), conv branches, the classifier
layer."""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from inception_jax.nn import dispatch
from inception_jax.nn.norm import BatchNorm
from inception_jax.nn.pooling import IntPair, _pair

Dtype = Any


def _torch_padding(padding: IntPair) -> Sequence[Tuple[int, int]]:
    ph, pw = _pair(padding)
    return ((ph, ph), (pw, pw))


def conv_general_dilated(*args, **kwargs):
    """``lax.conv_general_dilated`` for ``nn.Conv``, or a backend's replacement."""
    replacement = dispatch.kernel("conv")
    return (replacement or lax.conv_general_dilated)(*args, **kwargs)


def _stored_shape(key, shape, dtype=jnp.float32):
    """The kernel initializer outside ``init``: Flax still calls a parameter's
    initializer (abstractly) on every ``apply`` to check the stored parameter's shape,
    and tracing the random draw for that cost about 10 ms per convolution each time
    a train step was traced. The values are never used."""
    del key
    return jnp.zeros(shape, dtype)


class BasicConv(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 1e-3) -> ReLU, torchvision's ``BasicConv2d``.

    ``padding`` is PyTorch-style symmetric zero padding (an int or (ph, pw)).
    Submodules are ``conv`` and ``bn`` like the references.
    """

    features: int
    kernel_size: IntPair
    strides: IntPair = 1
    padding: IntPair = 0
    use_bias: bool = False
    bn_eps: float = 1e-3
    bn_momentum: float = 0.1
    activation: bool = True
    dtype: Dtype = jnp.float32
    axis_name: Optional[str] = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = nn.Conv(
            self.features,
            _pair(self.kernel_size),
            _pair(self.strides),
            padding=_torch_padding(self.padding),
            use_bias=self.use_bias,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=nn.initializers.lecun_normal() if self.is_initializing() else _stored_shape,
            name="conv",
            conv_general_dilated=conv_general_dilated,
        )(x)
        x = BatchNorm(self.bn_momentum, self.bn_eps, self.dtype, self.axis_name, name="bn")(x, train)
        return nn.relu(x) if self.activation else x


ConvSpec = Tuple  # (features, kernel_size[, strides[, padding]])


def conv_branch(
    x: jax.Array,
    specs: Sequence[ConvSpec],
    name: str,
    train: bool,
    conv: Callable[..., nn.Module] = BasicConv,
    start: int = 0,
) -> jax.Array:
    """Applies ``conv`` units in sequence, named like a torch ``nn.Sequential``.

    One spec gives a module called ``name``; several give ``name_<start>``,
    ``name_<start+1>``, ... Must be called from inside a compact method.
    """
    for i, spec in enumerate(specs):
        features, kernel = spec[0], spec[1]
        strides = spec[2] if len(spec) > 2 else 1
        padding = spec[3] if len(spec) > 3 else 0
        sub_name = name if len(specs) == 1 and start == 0 else f"{name}_{start + i}"
        x = conv(features, kernel, strides, padding, name=sub_name)(x, train)
    return x


def make_conv(dtype: Dtype, axis_name: Optional[str], **kw) -> Callable[..., nn.Module]:
    """A ``BasicConv`` factory carrying the model-wide dtype / axis_name / BN settings."""
    return functools.partial(BasicConv, dtype=dtype, axis_name=axis_name, **kw)


def dense(num_classes: int, dtype: Dtype, name: str) -> nn.Dense:
    return nn.Dense(num_classes, dtype=dtype, param_dtype=jnp.float32, name=name)
