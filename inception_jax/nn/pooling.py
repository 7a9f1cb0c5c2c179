"""Pools with PyTorch semantics (ceil_mode, count_include_pad, adaptive pooling),
NHWC."""

from __future__ import annotations

from typing import Any, Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from inception_jax.nn import dispatch

Dtype = Any
IntPair = Union[int, Tuple[int, int]]


def _pair(v: IntPair) -> Tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    return (int(v[0]), int(v[1]))


def _pool_pads(size: int, k: int, s: int, p: int, ceil_mode: bool) -> Tuple[int, int]:
    """(low, high) padding that makes a VALID window reduction give torch's size."""
    if ceil_mode:
        out = -(-(size + 2 * p - k) // s) + 1
        # PyTorch drops a last window that would start in the right padding.
        if (out - 1) * s >= size + p:
            out -= 1
    else:
        out = (size + 2 * p - k) // s + 1
    if out < 1:
        raise ValueError(
            f"pool: window {k} (stride {s}, padding {p}) does not fit an input of size {size}; "
            "use a larger input image"
        )
    extra = max((out - 1) * s + k - (size + 2 * p), 0)
    return (p, p + extra)


def max_pool(
    x: jax.Array,
    kernel_size: IntPair,
    stride: Optional[IntPair] = None,
    padding: IntPair = 0,
    ceil_mode: bool = False,
) -> jax.Array:
    """``torch.nn.MaxPool2d`` on NHWC input (padding never wins the max).

    A ``lax.reduce_window`` max, so JAX's own autodiff applies in both modes; its
    gradient goes to each window's first maximum in row-major order, PyTorch's
    rule, so ties match torch (tested).
    """
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(stride if stride is not None else kernel_size)
    ph, pw = _pair(padding)
    pads = (_pool_pads(x.shape[1], kh, sh, ph, ceil_mode), _pool_pads(x.shape[2], kw, sw, pw, ceil_mode))
    replacement = dispatch.kernel("max_pool")
    if replacement is not None:
        return replacement(x, (kh, kw), (sh, sw), pads)
    return lax.reduce_window(
        x, np.array(-np.inf, x.dtype), lax.max, (1, kh, kw, 1), (1, sh, sw, 1), ((0, 0), *pads, (0, 0))
    )


def avg_pool(
    x: jax.Array,
    kernel_size: IntPair,
    stride: Optional[IntPair] = None,
    padding: IntPair = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
) -> jax.Array:
    """``torch.nn.AvgPool2d`` on NHWC input.

    With ``count_include_pad=True`` the divisor counts the explicit zero padding
    but not the extra columns that ``ceil_mode`` adds, exactly as PyTorch does.
    """
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(stride if stride is not None else kernel_size)
    ph, pw = _pair(padding)
    h, w = x.shape[1], x.shape[2]
    pad_h = _pool_pads(h, kh, sh, ph, ceil_mode)
    pad_w = _pool_pads(w, kw, sw, pw, ceil_mode)
    window, strides = (1, kh, kw, 1), (1, sh, sw, 1)
    summed = lax.reduce_window(
        x, np.array(0, x.dtype), lax.add, window, strides, ((0, 0), pad_h, pad_w, (0, 0))
    )
    # The divisor depends only on static shapes: compute it with numpy.
    if count_include_pad:
        ones = np.ones((1, h + 2 * ph, w + 2 * pw, 1), np.float32)
        count_pads = ((0, 0), (0, pad_h[1] - ph), (0, pad_w[1] - pw), (0, 0))
    else:
        ones = np.ones((1, h, w, 1), np.float32)
        count_pads = ((0, 0), pad_h, pad_w, (0, 0))
    counts = lax.reduce_window(ones, np.array(0, np.float32), lax.add, window, strides, count_pads)
    return (summed / counts.astype(x.dtype)).astype(x.dtype)


def _adaptive_matrix(size: int, out: int) -> np.ndarray:
    """(out, size) averaging matrix with torch's adaptive bins [floor(i*n/o), ceil((i+1)*n/o))."""
    m = np.zeros((out, size), np.float32)
    for i in range(out):
        start = (i * size) // out
        end = -(-((i + 1) * size) // out)
        m[i, start:end] = 1.0 / (end - start)
    return m


def adaptive_avg_pool(x: jax.Array, output_size: IntPair) -> jax.Array:
    """``torch.nn.AdaptiveAvgPool2d`` on NHWC input (overlapping bins included)."""
    oh, ow = _pair(output_size)
    h, w = x.shape[1], x.shape[2]
    if (oh, ow) == (1, 1):
        return global_avg_pool(x, keepdims=True)
    if h % oh == 0 and w % ow == 0:
        n, _, _, c = x.shape
        return x.reshape(n, oh, h // oh, ow, w // ow, c).mean(axis=(2, 4)).astype(x.dtype)
    mh = jnp.asarray(_adaptive_matrix(h, oh), x.dtype)
    mw = jnp.asarray(_adaptive_matrix(w, ow), x.dtype)
    return jnp.einsum("ph,nhwc,qw->npqc", mh, x, mw, precision=lax.Precision.HIGHEST).astype(x.dtype)


def global_avg_pool(x: jax.Array, keepdims: bool = False) -> jax.Array:
    """Mean over the spatial axes (global average pooling): NHWC -> NC."""
    return jnp.mean(x, axis=(1, 2), keepdims=keepdims).astype(x.dtype)


def flatten_nchw(x: jax.Array) -> jax.Array:
    """Flattens NHWC in PyTorch's NCHW order, so Linear weights convert unchanged."""
    return jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)


PoolSpec = Tuple  # ("max", k, s[, p]) or ("avg", k, s, p, count_include_pad)


def apply_pool(x: jax.Array, spec: PoolSpec) -> jax.Array:
    kind, k, s = spec[0], spec[1], spec[2]
    p = spec[3] if len(spec) > 3 else 0
    if kind == "max":
        return max_pool(x, k, s, p)
    if kind == "avg":
        return avg_pool(x, k, s, p, count_include_pad=spec[4] if len(spec) > 4 else True)
    raise ValueError(f"pool spec {spec!r}: expected kind 'max' or 'avg'")
