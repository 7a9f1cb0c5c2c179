"""The XLA:CPU backend: hand-written gradients that make training on a CPU faster.

Measured on a 2-core CPU (docs/benchmarks.md), each is faster there than what XLA:CPU
makes of JAX's own autodiff, and each gives the same numbers as the plain program
(tests/test_backends.py: loss, gradients and BatchNorm statistics of every model
within 1e-5, and against PyTorch's autograd in tests/test_layers.py):

* ``max_pool``: the forward records which window offset won (torch's first-maximum
  rule, as int8) and the backward is one fused gather; XLA:CPU's select-and-scatter
  is far slower.
* ``batch_norm_train``: the closed-form BatchNorm gradient (two channel reductions).
* ``conv``: 1x1 convolutions as matrix products, and the filter gradient of the
  others as one GEMM per kernel row.

They are ``jax.custom_vjp`` functions, so forward-mode autodiff (``jax.jvp``,
``jax.jacfwd``, Hessian-vector products) does not go through them: they are off
unless asked for, never part of a model block, and nobody measured them on a GPU or
TPU. Turn them on around the code that traces a training step::

    from inception_jax.backends import cpu_kernels
    with cpu_kernels():                 # or cpu_kernels("auto"): on only on a CPU
        step = jax.jit(train_step).lower(...).compile()

The trainer does this itself with ``config.cpu_kernels`` ("auto": on exactly when
``jax.default_backend() == "cpu"``).
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import Iterator, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from inception_jax import nn as layers
from inception_jax.nn import dispatch

Setting = Union[bool, str]

# XLA:CPU options added for programs that run once (initialisation: ``train.programs.
# run_once``, at O0 everywhere). XLA's older loop emitters compile the init's random-
# number kernels sooner than the MLIR fusion emitters, with the same values
# (tests/test_models.py checks them bitwise). Measured on a 2-core CPU, init compile at
# O0 without / with it (docs/benchmarks.md): inception_cifar 2.7-2.9 / 1.7-1.8 s,
# googlenet 6.3-7.5 / 4.4-5.7 s, inception_v3 7.9-8.5 / 7.4-8.0 s. For the train step it
# is not used: it compiled inception_v3's step slower.
ONE_OFF_COMPILER_OPTIONS = {"xla_cpu_use_fusion_emitters": False}
_ON = ("on", "true", "1", "yes")
_OFF = ("off", "false", "0", "no")


def resolve(setting: Setting) -> bool:
    """``"auto"`` -> whether JAX runs on the CPU; True/False (or "on"/"off") as given."""
    if isinstance(setting, bool):
        return setting
    text = str(setting).strip().lower()
    if text == "auto":
        return jax.default_backend() == "cpu"
    if text in _ON:
        return True
    if text in _OFF:
        return False
    raise ValueError(f"cpu_kernels={setting!r}: expected 'auto', True or False")


@contextlib.contextmanager
def cpu_kernels(enabled: Setting = True) -> Iterator[bool]:
    """Functions traced inside this block use the CPU kernels (``enabled`` True or
    "auto" on a CPU) or the plain program (False). Yields whether they are on."""
    on = resolve(enabled)
    with dispatch.using(KERNELS if on else {}):
        yield on


# ----------------------------------------------------------------------------
# max pool: the forward records the winning window offset, the backward gathers
# ----------------------------------------------------------------------------


def _pad_neg_inf(x: jax.Array, pads) -> jax.Array:
    if any(pads[0]) or any(pads[1]):
        x = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=-np.inf)
    return x


def _window_taps(xp: jax.Array, kernel, strides):
    """``(i, j, slice)`` for every window offset (row-major) of a VALID sliding
    window over the padded input: the input values that offset sees, in output shape."""
    (kh, kw), (sh, sw) = kernel, strides
    out_h = (xp.shape[1] - kh) // sh + 1
    out_w = (xp.shape[2] - kw) // sw + 1
    for i in range(kh):
        for j in range(kw):
            yield i, j, xp[:, i : i + sh * (out_h - 1) + 1 : sh, j : j + sw * (out_w - 1) + 1 : sw]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def max_pool(x: jax.Array, kernel, strides, pads) -> jax.Array:
    """Max pool over explicit ``pads`` ((top, bottom), (left, right)); values equal
    ``lax.reduce_window``'s, computed as a separable max over strided slices."""
    (kh, kw), (sh, sw) = kernel, strides
    xp = _pad_neg_inf(x, pads)
    out_h = (xp.shape[1] - kh) // sh + 1
    out_w = (xp.shape[2] - kw) // sw + 1
    rows = functools.reduce(jnp.maximum, [xp[:, i : i + sh * (out_h - 1) + 1 : sh] for i in range(kh)])
    return functools.reduce(jnp.maximum, [rows[:, :, j : j + sw * (out_w - 1) + 1 : sw] for j in range(kw)])


def _max_pool_fwd(x, kernel, strides, pads):
    y = max_pool(x, kernel, strides, pads)
    kw = kernel[1]
    index_dtype = jnp.int8 if kernel[0] * kw < 127 else jnp.int32
    # winner[o] = row-major index of the first window offset holding the maximum
    winner = jnp.full(y.shape, -1, index_dtype)
    for i, j, seen in reversed(list(_window_taps(_pad_neg_inf(x, pads), kernel, strides))):
        winner = jnp.where(seen == y, jnp.asarray(i * kw + j, index_dtype), winner)
    # Materialise y and winner here: left to itself XLA recomputes the window
    # comparisons inside every use in the backward pass (k*k times over).
    y, winner = lax.optimization_barrier((y, winner))
    return y, (winner, jnp.zeros(x.shape[1:3] + (0,), x.dtype))


def _max_pool_bwd(kernel, strides, pads, residuals, g):
    winner, like = residuals  # ``like`` only carries the input's height and width
    (kh, kw), (sh, sw) = kernel, strides
    (pt, pb), (pl, pr) = pads
    h, w = like.shape[0], like.shape[1]
    oh, ow = g.shape[1], g.shape[2]
    # Spread the outputs onto the padded input grid (output o at row o*stride,
    # the rest empty) with kh-1 / kw-1 extra rows / columns in front, so that
    # offset (i, j) of every window is a plain shifted slice of the spread arrays.
    spread = (
        (0, 0, 0),
        (kh - 1, h + pt + pb - (sh * (oh - 1) + 1), sh - 1),
        (kw - 1, w + pl + pr - (sw * (ow - 1) + 1), sw - 1),
        (0, 0, 0),
    )
    gs = lax.pad(g, jnp.zeros((), g.dtype), spread)
    ws = lax.pad(winner, jnp.asarray(-1, winner.dtype), spread)
    dx = None
    for i in range(kh):
        for j in range(kw):
            r, c = kh - 1 - i + pt, kw - 1 - j + pl
            won = ws[:, r : r + h, c : c + w] == i * kw + j
            part = jnp.where(won, gs[:, r : r + h, c : c + w], jnp.zeros((), g.dtype))
            dx = part if dx is None else dx + part
    return (dx,)


max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


# ----------------------------------------------------------------------------
# BatchNorm in train mode: the closed-form gradient
# ----------------------------------------------------------------------------


def _bn_forward(x, scale, bias, epsilon, axis_name, dtype):
    mean, var = layers.batch_statistics(x, axis_name)
    rstd = lax.rsqrt(var + epsilon)
    mul = scale * rstd
    y = (x.astype(layers.statistics_dtype(x.dtype)) * mul + (bias - mean * mul)).astype(dtype)
    return (y, mean, var), (x, mean, rstd, scale)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def batch_norm_train(x, scale, bias, epsilon, axis_name, dtype):
    """``layers.batch_norm_train`` with its gradient in closed form instead of
    autodiff's longer chain through the mean and variance. The statistics outputs
    only feed the running averages, so their cotangents are ignored."""
    return _bn_forward(x, scale, bias, epsilon, axis_name, dtype)[0]


def _batch_norm_train_fwd(x, scale, bias, epsilon, axis_name, dtype):
    return _bn_forward(x, scale, bias, epsilon, axis_name, dtype)


def _batch_norm_train_bwd(epsilon, axis_name, dtype, residuals, cotangents):
    x, mean, rstd, scale = residuals
    wide = layers.statistics_dtype(x.dtype)
    g = cotangents[0].astype(wide)
    axes = tuple(range(x.ndim - 1))
    xhat = (x.astype(wide) - mean) * rstd
    sum_g = jnp.sum(g, axis=axes)
    sum_gx = jnp.sum(g * xhat, axis=axes)
    count = math.prod(x.shape[:-1])
    axis_name = layers.across_devices(axis_name)
    if axis_name is not None:  # the statistics were global: so is their gradient
        total_g, total_gx = lax.psum((sum_g, sum_gx), axis_name)
        count = count * lax.axis_size(axis_name)
    else:
        total_g, total_gx = sum_g, sum_gx
    dx = (scale * rstd) * (g - (total_g + xhat * total_gx) / count)
    return dx.astype(x.dtype), sum_gx, sum_g


batch_norm_train.defvjp(_batch_norm_train_fwd, _batch_norm_train_bwd)


# ----------------------------------------------------------------------------
# Convolution: 1x1 as a dot, and a GEMM filter gradient for the others
# ----------------------------------------------------------------------------

_NHWC = ("NHWC", "HWIO", "NHWC")


def _conv(x, w, strides, padding):
    return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_NHWC)


def _filter_grad_gemm(x, g, kernel_shape, strides, padding):
    """d(loss)/d(kernel) as one matrix product per kernel row: the kw column
    offsets of the padded input are laid side by side on the channel axis once,
    then kernel row i is (the rows it saw, flattened to (N*OH*OW, kw*cin)) transposed
    times the output gradient. XLA:CPU's own convolution filter gradient took about
    twice as long over inception_cifar's convolutions (up to 3x on the larger ones,
    a little less on a few small ones)."""
    kh, kw, cin, cout = kernel_shape
    (sh, sw) = strides
    oh, ow = g.shape[1], g.shape[2]
    xp = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
    cols = jnp.concatenate([xp[:, :, j : j + sw * (ow - 1) + 1 : sw] for j in range(kw)], axis=-1)
    g2 = g.reshape(-1, cout)
    rows = [
        lax.dot_general(
            cols[:, i : i + sh * (oh - 1) + 1 : sh].reshape(-1, kw * cin),
            g2,
            (((0,), (0,)), ((), ())),
            preferred_element_type=layers.statistics_dtype(x.dtype),
        )
        for i in range(kh)
    ]
    return jnp.stack(rows).reshape(kh, kw, cin, cout)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_gemm_wgrad(x, w, strides, padding):
    return _conv(x, w, strides, padding)


def _conv_gemm_wgrad_fwd(x, w, strides, padding):
    return _conv(x, w, strides, padding), (x, w)


def _conv_gemm_wgrad_bwd(strides, padding, residuals, g):
    x, w = residuals
    dx = jax.vjp(lambda v: _conv(v, w, strides, padding), x)[1](g)[0]
    dw = _filter_grad_gemm(x, g, w.shape, strides, padding).astype(w.dtype)
    return dx, dw


_conv_gemm_wgrad.defvjp(_conv_gemm_wgrad_fwd, _conv_gemm_wgrad_bwd)


def _as_dot(x, w):
    # a 1x1 convolution is a matrix product over channels: as a dot (and its
    # autodiff, two more dots) it runs ~2x faster than XLA:CPU's convolution
    y = jnp.dot(x.reshape(-1, x.shape[-1]), w.reshape(w.shape[2], w.shape[3]))
    return y.reshape(*x.shape[:3], w.shape[3])


def conv(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    batch_group_count=1,
    precision=None,
    preferred_element_type=None,
):
    """``lax.conv_general_dilated``'s signature: plain NHWC convolutions get the dot /
    GEMM forms above; anything else is passed through unchanged."""
    plain = (
        feature_group_count == 1
        and batch_group_count == 1
        and not isinstance(padding, str)
        and all(d in (None, 1) for d in (lhs_dilation or (1,)))
        and all(d in (None, 1) for d in (rhs_dilation or (1,)))
        and lhs.ndim == 4
        and precision is None
        and preferred_element_type is None
    )
    if plain and dimension_numbers is not None:
        nhwc = lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
        plain = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == nhwc
    if not plain:
        return lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation,
            rhs_dilation,
            dimension_numbers,
            feature_group_count,
            batch_group_count,
            precision,
            preferred_element_type,
        )
    pads = tuple(tuple(int(v) for v in pad) for pad in padding)
    strides = tuple(int(v) for v in window_strides)
    if rhs.shape[:2] == (1, 1) and strides == (1, 1) and not any(map(any, pads)):
        return _as_dot(lhs, rhs)
    return _conv_gemm_wgrad(lhs, rhs, strides, pads)


KERNELS = {"max_pool": max_pool, "batch_norm_train": batch_norm_train, "conv": conv}
