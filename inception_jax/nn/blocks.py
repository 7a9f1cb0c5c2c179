"""The Inception blocks: the v1 module and its naive form, the reference CIFAR recipe's
factorised, asymmetric, grid-reduction, residual and depthwise-separable blocks,
timm-style mixed blocks, dropout and the auxiliary classifier."""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from inception_jax.nn.conv import BasicConv, ConvSpec, _torch_padding, conv_branch
from inception_jax.nn.pooling import (
    adaptive_avg_pool,
    apply_pool,
    flatten_nchw,
    max_pool,
)

Dtype = Any


def _check_in_channels(module: str, expected: int, x: jax.Array) -> None:
    if expected is not None and x.shape[-1] != expected:
        raise ValueError(
            f"{module}: expected an input with {expected} channels (in_channels), got shape "
            f"{tuple(x.shape)}; pass in_channels={x.shape[-1]} or fix the previous layer"
        )


class InceptionModule(nn.Module):
    """The GoogLeNet Inception module with 1x1 reductions (Szegedy et al. 2014).

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
        b1 = conv_branch(x, [(self.ch1x1, 1)], name="branch1", train=train, conv=self.conv)
        b2 = conv_branch(
            x, [(self.ch3x3red, 1), (self.ch3x3, 3, 1, 1)], name="branch2", train=train, conv=self.conv
        )
        b3 = conv_branch(
            x, [(self.ch5x5red, 1), (self.ch5x5, k, 1, k // 2)], name="branch3", train=train, conv=self.conv
        )
        b4 = max_pool(x, kernel_size=3, stride=1, padding=1, ceil_mode=self.pool_ceil_mode)
        b4 = conv_branch(b4, [(self.pool_proj, 1)], name="branch4", train=train, conv=self.conv, start=1)
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
        b1 = conv_branch(x, [(self.ch1x1, 1)], name="branch1", train=train, conv=self.conv)
        b2 = conv_branch(x, [(self.ch3x3, 3, 1, 1)], name="branch2", train=train, conv=self.conv)
        b3 = conv_branch(x, [(self.ch5x5, 5, 1, 2)], name="branch3", train=train, conv=self.conv)
        b4 = max_pool(x, kernel_size=3, stride=1, padding=1)
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
        x = self.conv(128, kernel_size=1, name="conv")(x, train)
        x = flatten_nchw(x)
        x = nn.relu(nn.Dense(1024, dtype=self.dtype, name="fc1")(x))
        x = Dropout(rate=self.dropout, axis_name=self.axis_name)(x, train)
        return nn.Dense(self.num_classes, dtype=self.dtype, name="fc2")(x)


class FactorizedConv5x5(nn.Module):
    """A 5x5 receptive field as two stacked 3x3 convs (Inception v2/v3):
    ``features_mid`` then ``features`` output channels, size preserved."""

    features_mid: int
    features: int
    conv: Callable[..., nn.Module] = BasicConv

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = self.conv(self.features_mid, kernel_size=3, strides=1, padding=1, name="conv1")(x, train)
        return self.conv(self.features, kernel_size=3, strides=1, padding=1, name="conv2")(x, train)


class AsymmetricConv(nn.Module):
    """An n x n receptive field as a 1 x n conv followed by an n x 1 conv
    (Inception v3's asymmetric factorization), size preserved."""

    features: int
    kernel_size: int
    conv: Callable[..., nn.Module] = BasicConv

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        c, n = self.conv, self.kernel_size
        x = c(self.features, kernel_size=(1, n), strides=1, padding=(0, n // 2), name="conv1")(x, train)
        return c(self.features, kernel_size=(n, 1), strides=1, padding=(n // 2, 0), name="conv2")(x, train)


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
        b1 = c(self.ch3x3, kernel_size=3, strides=2, name="branch3x3")(x, train)
        b2 = c(self.ch3x3dbl_red, kernel_size=1, name="branch3x3dbl_1")(x, train)
        b2 = c(self.ch3x3dbl, kernel_size=3, strides=1, padding=1, name="branch3x3dbl_2")(b2, train)
        b2 = c(self.ch3x3dbl, kernel_size=3, strides=2, name="branch3x3dbl_3")(b2, train)
        return jnp.concatenate([b1, b2, max_pool(x, kernel_size=3, stride=2)], axis=-1)


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
            conv_branch(x, specs, name=f"branch{i}", train=train, conv=self.conv)
            for i, specs in enumerate(self.branches)
        ]
        up = nn.Conv(x.shape[-1], kernel_size=(1, 1), use_bias=True, dtype=self.dtype, name="conv2d")(
            jnp.concatenate(outs, axis=-1)
        )
        out = x + self.scale * up
        return nn.relu(out) if self.activate else out


class DepthwiseSeparableConv(nn.Module):
    """Depthwise 3x3 conv (one filter per channel) followed by a pointwise 1x1
    conv, both with bias, as in the reference CIFAR recipe (the idea MobileNet/Xception took
    from Inception's 1x1 reductions)."""

    features: int
    kernel_size: int = 3
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        k = self.kernel_size
        x = nn.Conv(
            x.shape[-1],
            kernel_size=(k, k),
            padding=_torch_padding(k // 2),
            feature_group_count=x.shape[-1],
            dtype=self.dtype,
            name="depthwise",
        )(x)
        return nn.Conv(self.features, kernel_size=(1, 1), dtype=self.dtype, name="pointwise")(x)


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
                    y = conv_branch(y, [item], name=name, train=train, conv=self.conv)
            outs.append(y)
        return jnp.concatenate(outs, axis=-1)


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
