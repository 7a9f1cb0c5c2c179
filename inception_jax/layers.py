"""Building blocks shared by every Inception generation (Flax linen, NHWC).

Conventions used throughout the package:

* Inputs and activations are NHWC. Parameters are float32; ``dtype`` is the
  compute dtype (e.g. ``jnp.bfloat16`` on accelerators).
* BatchNorm keeps its running statistics in the ``batch_stats`` collection and
  follows PyTorch exactly (momentum 0.1 meaning ``new = 0.9 * old + 0.1 * batch``,
  running variance updated with the *unbiased* batch variance), so that a model
  converted from PyTorch keeps matching it in train mode too.
* ``train`` switches BatchNorm between batch and running statistics and turns
  dropout on; ``axis_name`` (optional) averages BatchNorm statistics across
  devices under ``pmap`` / ``shard_map``.
* Pools reproduce PyTorch semantics (``ceil_mode``, ``count_include_pad``,
  adaptive pooling) because the reference models depend on them.
* Submodules are named like the PyTorch reference: an ``nn.Sequential`` index
  becomes a ``_<index>`` suffix (``branch2.0`` -> ``branch2_0``) so that weight
  conversion (``inception_jax.convert``) goes by name.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from inception_jax.backends import dispatch

Dtype = Any
IntPair = Union[int, Tuple[int, int]]


def _pair(v: IntPair) -> Tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    return (int(v[0]), int(v[1]))


# ----------------------------------------------------------------------------
# Pools with PyTorch semantics
# ----------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------
# BatchNorm and the conv -> BN -> ReLU unit
# ----------------------------------------------------------------------------


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


def _torch_padding(padding: IntPair) -> Sequence[Tuple[int, int]]:
    ph, pw = _pair(padding)
    return ((ph, ph), (pw, pw))


def conv_general_dilated(*args, **kwargs):
    """``lax.conv_general_dilated`` for ``nn.Conv``, or a backend's replacement."""
    replacement = dispatch.kernel("conv")
    return (replacement or lax.conv_general_dilated)(*args, **kwargs)


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


# ----------------------------------------------------------------------------
# Inception v1 modules and the auxiliary classifier
# ----------------------------------------------------------------------------


def _check_in_channels(module: str, expected: int, x: jax.Array) -> None:
    if expected is not None and x.shape[-1] != expected:
        raise ValueError(
            f"{module}: expected an input with {expected} channels (in_channels), got shape "
            f"{tuple(x.shape)}; pass in_channels={x.shape[-1]} or fix the previous layer"
        )


class InceptionModule(nn.Module):
    """The GoogLeNet Inception module with 1x1 reductions (design doc, Szegedy et al. 2014).

    Four branches concatenated on channels: 1x1; 1x1 -> 3x3; 1x1 -> "5x5"; 3x3
    max pool -> 1x1 projection. ``branch3_kernel=3`` reproduces torchvision's
    GoogLeNet, whose "5x5" branch is a 3x3 conv (kept for weight compatibility).
    Output channels: ``ch1x1 + ch3x3 + ch5x5 + pool_proj``.
    """

    in_channels: int
    ch1x1: int
    ch3x3red: int
    ch3x3: int
    ch5x5red: int
    ch5x5: int
    pool_proj: int
    branch3_kernel: int = 5
    pool_ceil_mode: bool = False
    conv: Callable[..., nn.Module] = BasicConv

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        _check_in_channels(type(self).__name__, self.in_channels, x)
        k = self.branch3_kernel
        b1 = conv_branch(x, [(self.ch1x1, 1)], "branch1", train, self.conv)
        b2 = conv_branch(x, [(self.ch3x3red, 1), (self.ch3x3, 3, 1, 1)], "branch2", train, self.conv)
        b3 = conv_branch(x, [(self.ch5x5red, 1), (self.ch5x5, k, 1, k // 2)], "branch3", train, self.conv)
        b4 = max_pool(x, 3, 1, 1, ceil_mode=self.pool_ceil_mode)
        b4 = conv_branch(b4, [(self.pool_proj, 1)], "branch4", train, self.conv, start=1)
        return jnp.concatenate([b1, b2, b3, b4], axis=-1)


class NaiveInceptionModule(nn.Module):
    """The naive Inception module (no 1x1 reductions): 1x1, 3x3, 5x5 convs and a 3x3
    max pool applied to the input and concatenated. Output channels:
    ``ch1x1 + ch3x3 + ch5x5 + in_channels``.
    """

    in_channels: int
    ch1x1: int
    ch3x3: int
    ch5x5: int
    conv: Callable[..., nn.Module] = BasicConv

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        _check_in_channels(type(self).__name__, self.in_channels, x)
        b1 = conv_branch(x, [(self.ch1x1, 1)], "branch1", train, self.conv)
        b2 = conv_branch(x, [(self.ch3x3, 3, 1, 1)], "branch2", train, self.conv)
        b3 = conv_branch(x, [(self.ch5x5, 5, 1, 2)], "branch3", train, self.conv)
        b4 = max_pool(x, 3, 1, 1)
        return jnp.concatenate([b1, b2, b3, b4], axis=-1)


class Dropout(nn.Module):
    """Dropout whose mask does not depend on how the batch is split over devices.

    Without ``axis_name`` it draws exactly what ``flax.linen.Dropout`` draws. With
    ``axis_name`` every device draws the mask of the whole global batch from the same
    ``dropout`` key and keeps the rows of its own examples (``axis_index``), so one
    device and N devices drop the same units of the same examples. The masks are
    small (dropout sits after global pooling in every model here).
    """

    rate: float
    axis_name: Optional[str] = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if not train or self.rate == 0.0:
            return x
        if self.rate >= 1.0:
            return jnp.zeros_like(x)
        keep = 1.0 - self.rate
        rng = self.make_rng("dropout")
        # the mask is drawn from float32 uniforms whatever the compute dtype, so a
        # bf16, fp32 or fp64 (x64 mode) model sees the same mask
        p = np.float32(keep)
        if self.axis_name is None:
            mask = jax.random.bernoulli(rng, p, x.shape)
        else:
            local = x.shape[0]
            whole = jax.random.bernoulli(rng, p, (local * lax.axis_size(self.axis_name),) + x.shape[1:])
            mask = lax.dynamic_slice_in_dim(whole, lax.axis_index(self.axis_name) * local, local, 0)
        return lax.select(mask, x / keep, jnp.zeros_like(x))


class AuxiliaryClassifier(nn.Module):
    """GoogLeNet's auxiliary head: adaptive 4x4 average pool -> 1x1 conv (128) ->
    fc 2048->1024 -> ReLU -> dropout -> fc. Flattens in NCHW order like torch."""

    num_classes: int
    dropout: float = 0.7
    conv: Callable[..., nn.Module] = BasicConv
    dtype: Dtype = jnp.float32
    axis_name: Optional[str] = None  # dropout masks independent of the device count

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = adaptive_avg_pool(x, (4, 4))
        x = self.conv(128, 1, name="conv")(x, train)
        x = flatten_nchw(x)
        x = nn.relu(nn.Dense(1024, dtype=self.dtype, name="fc1")(x))
        x = Dropout(self.dropout, self.axis_name)(x, train)
        return nn.Dense(self.num_classes, dtype=self.dtype, name="fc2")(x)


# ----------------------------------------------------------------------------
# Inception v2/v3/v4 building blocks
# ----------------------------------------------------------------------------


class FactorizedConv5x5(nn.Module):
    """A 5x5 receptive field as two stacked 3x3 convs (Inception v2/v3):
    ``features_mid`` then ``features`` output channels, size preserved."""

    features_mid: int
    features: int
    conv: Callable[..., nn.Module] = BasicConv

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = self.conv(self.features_mid, 3, 1, 1, name="conv1")(x, train)
        return self.conv(self.features, 3, 1, 1, name="conv2")(x, train)


class AsymmetricConv(nn.Module):
    """An n x n receptive field as a 1 x n conv followed by an n x 1 conv
    (Inception v3's asymmetric factorization), size preserved."""

    features: int
    kernel_size: int
    conv: Callable[..., nn.Module] = BasicConv

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        n = self.kernel_size
        x = self.conv(self.features, (1, n), 1, (0, n // 2), name="conv1")(x, train)
        return self.conv(self.features, (n, 1), 1, (n // 2, 0), name="conv2")(x, train)


class GridReduction(nn.Module):
    """Efficient grid-size reduction (Inception v3, torchvision's ``InceptionB``):
    a stride-2 3x3 conv branch, a 1x1 -> 3x3 -> stride-2 3x3 branch and a stride-2
    max pool, concatenated, so the grid halves while the channels grow."""

    ch3x3: int = 384
    ch3x3dbl_red: int = 64
    ch3x3dbl: int = 96
    conv: Callable[..., nn.Module] = BasicConv

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        c = self.conv
        b1 = c(self.ch3x3, 3, 2, name="branch3x3")(x, train)
        b2 = c(self.ch3x3dbl_red, 1, name="branch3x3dbl_1")(x, train)
        b2 = c(self.ch3x3dbl, 3, 1, 1, name="branch3x3dbl_2")(b2, train)
        b2 = c(self.ch3x3dbl, 3, 2, name="branch3x3dbl_3")(b2, train)
        return jnp.concatenate([b1, b2, max_pool(x, 3, 2)], axis=-1)


class ResidualInceptionBlock(nn.Module):
    """Residual Inception block (Inception-ResNet): ``act(x + scale * W(concat(branches)))``.

    ``branches`` is a sequence of branches, each a sequence of conv specs
    ``(features, kernel[, strides[, padding]])``; a one-conv branch ``i`` is
    named ``branch<i>``, a longer one ``branch<i>_<j>`` (timm's layout). ``W`` is
    a 1x1 conv with bias called ``conv2d`` projecting back to the input channels.
    Scaling the residual (0.1-0.3) keeps very deep stacks stable.
    """

    branches: Sequence[Sequence[ConvSpec]]
    scale: float = 1.0
    activate: bool = True
    conv: Callable[..., nn.Module] = BasicConv
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        outs = [
            conv_branch(x, specs, f"branch{i}", train, self.conv) for i, specs in enumerate(self.branches)
        ]
        up = nn.Conv(x.shape[-1], (1, 1), use_bias=True, dtype=self.dtype, name="conv2d")(
            jnp.concatenate(outs, axis=-1)
        )
        out = x + self.scale * up
        return nn.relu(out) if self.activate else out


class DepthwiseSeparableConv(nn.Module):
    """Depthwise 3x3 conv (one filter per channel) followed by a pointwise 1x1
    conv, both with bias, as in the design doc (the idea MobileNet/Xception took
    from Inception's 1x1 reductions)."""

    features: int
    kernel_size: int = 3
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        k = self.kernel_size
        x = nn.Conv(
            x.shape[-1],
            (k, k),
            padding=_torch_padding(k // 2),
            feature_group_count=x.shape[-1],
            dtype=self.dtype,
            name="depthwise",
        )(x)
        return nn.Conv(self.features, (1, 1), dtype=self.dtype, name="pointwise")(x)


# ----------------------------------------------------------------------------
# Input checks shared by the models
# ----------------------------------------------------------------------------


def check_image_input(model: str, x: Any, min_size: int, channels: int = 3) -> None:
    """Raises a one-line ValueError for a wrong rank, channel count or a too-small image."""
    shape = tuple(getattr(x, "shape", ()))
    if len(shape) != 4:
        raise ValueError(
            f"{model}: expected a 4-D NHWC image batch (N, H, W, {channels}), got shape {shape}; "
            "add a batch axis or transpose NCHW input with x.transpose(0, 2, 3, 1)"
        )
    if shape[-1] != channels:
        hint = " (this looks like NCHW: use x.transpose(0, 2, 3, 1))" if shape[1] == channels else ""
        raise ValueError(
            f"{model}: expected {channels} channels in the last axis (NHWC), got shape {shape}{hint}"
        )
    if shape[1] < min_size or shape[2] < min_size:
        raise ValueError(
            f"{model}: expected images of at least {min_size}x{min_size}, got {shape[1]}x{shape[2]} "
            f"(shape {shape}); resize the input to {min_size}x{min_size} or larger"
        )


def dense(num_classes: int, dtype: Dtype, name: str) -> nn.Dense:
    return nn.Dense(num_classes, dtype=dtype, param_dtype=jnp.float32, name=name)


def make_conv(dtype: Dtype, axis_name: Optional[str], **kw) -> Callable[..., nn.Module]:
    """A ``BasicConv`` factory carrying the model-wide dtype / axis_name / BN settings."""
    return functools.partial(BasicConv, dtype=dtype, axis_name=axis_name, **kw)


PoolSpec = Tuple  # ("max", k, s[, p]) or ("avg", k, s, p, count_include_pad)


def apply_pool(x: jax.Array, spec: PoolSpec) -> jax.Array:
    kind, k, s = spec[0], spec[1], spec[2]
    p = spec[3] if len(spec) > 3 else 0
    if kind == "max":
        return max_pool(x, k, s, p)
    if kind == "avg":
        return avg_pool(x, k, s, p, count_include_pad=spec[4] if len(spec) > 4 else True)
    raise ValueError(f"pool spec {spec!r}: expected kind 'max' or 'avg'")


class MixedBlock(nn.Module):
    """Parallel branches concatenated on channels, laid out like timm's blocks.

    Each branch is a sequence whose items are conv specs ``(features, kernel[,
    strides[, padding]])`` or pool specs (``("max", k, s)``, ``("avg", k, s, p,
    count_include_pad)``). A branch of one conv is named ``branch<i>``; in a
    longer branch item ``j`` is ``branch<i>_<j>`` (pools count, as in an
    ``nn.Sequential``).
    """

    branches: Sequence[Sequence[Tuple]]
    conv: Callable[..., nn.Module] = BasicConv

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        outs = []
        for i, items in enumerate(self.branches):
            y = x
            for j, item in enumerate(items):
                if isinstance(item[0], str):
                    y = apply_pool(y, item)
                else:
                    name = f"branch{i}" if len(items) == 1 else f"branch{i}_{j}"
                    y = conv_branch(y, [item], name, train, self.conv)
            outs.append(y)
        return jnp.concatenate(outs, axis=-1)
