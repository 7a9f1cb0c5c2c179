"""BatchNorm with PyTorch's running-statistics rule, and cross-device batch
statistics in one collective."""

from __future__ import annotations

import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from inception_jax.nn import dispatch

Dtype = Any


class BatchNorm(nn.Module):
    """BatchNorm over the channel (last) axis with PyTorch's update rule.

    Attributes:
      momentum: PyTorch convention, ``running = (1 - momentum) * running + momentum * batch``.
      epsilon: added to the variance.
      dtype: output dtype; statistics are always computed in float32.
      axis_name: if set, batch statistics are averaged over this mapped axis.
    """

    momentum: float = 0.1
    epsilon: float = 1e-3
    dtype: Dtype = jnp.float32
    axis_name: Optional[str] = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        running_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        running_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        if train:
            y, mean, var = batch_norm_train(
                x, scale, bias, float(self.epsilon), self.axis_name, jnp.dtype(self.dtype)
            )
            if not self.is_initializing():
                count = math.prod(x.shape[:-1])
                if self.axis_name is not None:
                    count = count * lax.axis_size(self.axis_name)
                m = self.momentum
                unbiased = var * (count / max(count - 1, 1))
                running_mean.value = (1 - m) * running_mean.value + m * mean
                running_var.value = (1 - m) * running_var.value + m * unbiased
            return y
        mean, var = running_mean.value, running_var.value
        mul = scale * lax.rsqrt(var + self.epsilon)
        y = x.astype(statistics_dtype(x.dtype)) * mul + (bias - mean * mul)
        return y.astype(self.dtype)


def statistics_dtype(dtype) -> jnp.dtype:
    """The dtype BatchNorm computes its statistics and normalisation in: float32 for
    float32/bfloat16/float16 activations, float64 for float64 ones (x64 mode)."""
    return jnp.promote_types(dtype, jnp.float32)


def across_devices(axis_name: Optional[str]) -> Optional[str]:
    """``axis_name`` if it names a mapped axis of more than one device, else None.

    Averaging over one device changes no value (a mean of one is itself), but each
    collective is a separate kernel for XLA to compile and a fusion boundary: on one
    device the statistics and gradients skip it (XLA may then fuse, and round, a
    little differently).
    """
    if axis_name is not None and lax.axis_size(axis_name) > 1:
        return axis_name
    return None


def batch_statistics(x: jax.Array, axis_name: Optional[str] = None):
    """Float32 (float64 for float64 input) mean and biased variance over all axes but
    the last, across the devices of ``axis_name`` if given, in one collective.

    Each device computes its own mean and (two-pass) variance; one ``all_gather``
    brings every device's pair, and they combine as PyTorch's SyncBatchNorm does:
    ``mean = mean_i(m_i)``, ``var = mean_i(v_i) + mean_i((m_i - mean)^2)`` (equal
    counts per device). Unlike ``E[x^2] - E[x]^2`` this keeps its digits when the
    mean is large against the spread.
    """
    axes = tuple(range(x.ndim - 1))
    axis_name = across_devices(axis_name)
    xf = x.astype(statistics_dtype(x.dtype))
    mean = jnp.mean(xf, axis=axes)
    var = jnp.mean(jnp.square(xf - mean), axis=axes)
    if axis_name is not None:
        gathered = lax.all_gather(jnp.stack([mean, var]), axis_name)  # (devices, 2, C)
        means, variances = gathered[:, 0], gathered[:, 1]
        mean = jnp.mean(means, axis=0)
        var = jnp.mean(variances, axis=0) + jnp.mean(jnp.square(means - mean), axis=0)
    return mean, var


def batch_norm_train(x, scale, bias, epsilon: float, axis_name: Optional[str], dtype):
    """Train-mode BatchNorm: (normalised output in ``dtype``, batch mean, biased batch
    variance), differentiated by JAX's autodiff."""
    replacement = dispatch.kernel("batch_norm_train")
    if replacement is not None:
        return replacement(x, scale, bias, epsilon, axis_name, dtype)
    mean, var = batch_statistics(x, axis_name)
    mul = scale * lax.rsqrt(var + epsilon)
    y = (x.astype(statistics_dtype(x.dtype)) * mul + (bias - mean * mul)).astype(dtype)
    return y, mean, var
