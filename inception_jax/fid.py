"""FID, KID and Inception Score with the FID Inception network, equal to pytorch-fid.

Three lines::

    from inception_jax import fid
    net = fid.FIDNetwork.load("pt_inception-2015-12-05-6726825d.pth")   # pytorch-fid's file
    print(fid.fid_from_paths(net, "real_images/", "fake_images/"))

Command line (each PATH a folder of images or a statistics ``.npz``)::

    python -m inception_jax.fid --weights pt_inception-2015-12-05-6726825d.pth real/ fake/
    python -m inception_jax.fid --weights W --save-stats real/ real_stats.npz

What is computed as pytorch-fid computes it: images are read as RGB and scaled to
[0, 1]; ``resize="pytorch-fid"`` resizes them to 299x299 bilinearly on the float
tensor (``align_corners=False``, no antialiasing), ``resize="clean"`` as clean-fid
does (PIL bicubic with antialiasing, per channel in float, from the uint8 image);
the network scales to [-1, 1] and returns pytorch-fid's block (64, 192, 768 or 2048
channels), average-pooled to one vector per image; ``mu`` and ``sigma`` are the mean
and covariance (float64). Statistics files hold ``mu`` and ``sigma`` as pytorch-fid's
do (either reads the other's).

Where it differs from pytorch-fid, on purpose: images are resized on the host (numpy,
equal to ``F.interpolate`` to float32 rounding), so a folder of mixed sizes compiles
the network once; 16-bit images are scaled to 8 bits and transparent ones composited
on white (:func:`read_image`); ``mu`` and ``sigma`` are accumulated batch by batch
(:class:`RunningStatistics`: O(dims^2) memory, independent of the batch size); and
Tr((sigma1 sigma2)^(1/2)) comes from two symmetric eigendecompositions
(:func:`trace_sqrt_product`) instead of scipy's ``sqrtm``: the same number where
``sqrtm`` is finite, a finite one for singular covariances, and faster.

Extraction is data-parallel over this process's devices, and over ``jax.distributed``
processes (each computes its share of the images once; all get every activation).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Tuple

import numpy as np

DIMS = (64, 192, 768, 2048)
BLOCK_INDEX_BY_DIM = {64: 0, 192: 1, 768: 2, 2048: 3}
IMAGE_EXTENSIONS = ("bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp")
RESIZE_MODES = ("pytorch-fid", "clean")
FID_SIZE = 299


class FIDError(ValueError):
    """Bad input to the FID tools: a missing folder, an unreadable image, a wrong file."""


# --- resizing ------------------------------------------------------------------------


def _bilinear_taps(in_size: int, out_size: int):
    """For each output index along one axis: the two input indices it reads and their
    weights, as torch's bilinear interpolation with ``align_corners=False`` computes
    them (source coordinate (i + 0.5) * in / out - 0.5, clamped at 0), in float32 as
    torch does: its rounding of the scale moves the last pixels by up to 1e-5."""
    f32 = np.float32
    scale = f32(in_size) / f32(out_size)
    source = np.maximum(scale * (np.arange(out_size, dtype=f32) + f32(0.5)) - f32(0.5), f32(0.0))
    low = np.minimum(source.astype(np.int64), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    weight_high = source - low.astype(f32)
    return low, high, f32(1.0) - weight_high, weight_high


def resize_bilinear(images, size: int = FID_SIZE) -> np.ndarray:
    """pytorch-fid's resize: ``F.interpolate(x, (size, size), mode="bilinear",
    align_corners=False)`` (no antialiasing) of float HWC or NHWC images, computed on
    the host in numpy; returns float32. Images of any size cost no compilation."""
    images = np.asarray(images, np.float32)
    for axis in (-3, -2):  # rows, then columns: separable, as torch's weights are
        if images.shape[axis] == size:
            continue
        low, high, weight_low, weight_high = _bilinear_taps(images.shape[axis], size)
        shape = [1] * images.ndim
        shape[axis] = size
        images = np.take(images, low, axis=axis) * weight_low.reshape(shape) + np.take(
            images, high, axis=axis
        ) * weight_high.reshape(shape)
    return images


def resize_clean(image: np.ndarray, size: int = FID_SIZE) -> np.ndarray:
    """clean-fid's resize of one uint8 HWC image: PIL bicubic (antialiased) on each
    channel as a float image, clipped to [0, 255]; returns float32 HWC in [0, 255]."""
    from PIL import Image

    channels = []
    for k in range(image.shape[2]):
        plane = Image.fromarray(np.asarray(image[:, :, k], np.float32), mode="F")
        channels.append(np.asarray(plane.resize((size, size), Image.BICUBIC), np.float32))
    return np.clip(np.stack(channels, axis=-1), 0, 255)


# --- images --------------------------------------------------------------------------


def list_images(folder: str) -> list:
    """The image files of ``folder`` (pytorch-fid's extensions, sorted), or FIDError."""
    if not os.path.isdir(folder):
        raise FIDError(f"{folder}: no such folder; give a folder of images or a statistics .npz")
    files = sorted(
        os.path.join(folder, f)
        for f in os.listdir(folder)
        if f.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS and os.path.isfile(os.path.join(folder, f))
    )
    if not files:
        raise FIDError(
            f"{folder}: no images in it (looked for {', '.join('.' + e for e in IMAGE_EXTENSIONS)})"
        )
    return files


def to_rgb8(pixels: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 RGB from an image array: HxW or HxWx1 grayscale (repeated to three
    channels), HxWx3 RGB, HxWx2 gray+alpha or HxWx4 RGBA (composited on white: each
    channel c with opacity a = alpha / 255 becomes round(c a + 255 (1 - a))); uint8, or
    uint16 scaled to 8 bits as round(value / 257) (65535 is 255; a plain cast would
    saturate or wrap)."""
    pixels = np.asarray(pixels)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 2, 3, 4) or min(pixels.shape[:2]) < 1:
        raise FIDError(
            f"image of shape {pixels.shape}: expected HxW, or HxWxC with C 1 (gray), 2 (gray, alpha), "
            "3 (RGB) or 4 (RGBA)"
        )
    if pixels.dtype == np.uint16:
        pixels = np.rint(pixels / 257.0).astype(np.uint8)
    elif pixels.dtype != np.uint8:
        raise FIDError(
            f"image of dtype {pixels.dtype}: expected uint8 (or uint16); "
            "convert floats in [0, 1] with (x * 255).round().astype(np.uint8)"
        )
    color, alpha = (pixels, None) if pixels.shape[2] in (1, 3) else (pixels[:, :, :-1], pixels[:, :, -1:])
    if alpha is not None:
        opacity = alpha.astype(np.float32) / np.float32(255.0)
        color = np.rint(color * opacity + np.float32(255.0) * (1.0 - opacity)).astype(np.uint8)
    return np.repeat(color, 3, axis=2) if color.shape[2] == 1 else color


_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def read_image(path: str) -> np.ndarray:
    """uint8 HWC RGB, or FIDError naming the file. As :func:`to_rgb8`: 16-bit
    grayscale (Pillow's modes "I;16" and "I") scaled to 8 bits by round(value / 257);
    transparency ("RGBA", "LA", "PA", or a palette or grayscale image with a transparent
    colour) composited on white; grayscale repeated to three channels; palette images
    through their RGB(A) colours. pytorch-fid (``.convert("RGB")``) saturates 16-bit
    values at 255 and drops the alpha channel instead; the two agree on 8-bit opaque
    images. Pillow itself reads 16-bit RGB PNGs as 8-bit RGB (keeping the high byte)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode in _SIXTEEN_BIT_MODES:
                values = np.asarray(im)
                if values.size and (values.min() < 0 or values.max() > 65535):
                    raise FIDError(f"values from {values.min()} to {values.max()}: expected 16-bit (0-65535)")
                return to_rgb8(values.astype(np.uint16))
            transparent = im.mode in _ALPHA_MODES or "transparency" in im.info
            return to_rgb8(np.asarray(im.convert("RGBA" if transparent else "RGB"), np.uint8))
    except FIDError as e:
        raise FIDError(f"{path}: {e}") from None
    except Exception as e:
        raise FIDError(f"{path}: not a readable image ({type(e).__name__}: {str(e)[:100]})") from None


# --- the network ---------------------------------------------------------------------


@dataclasses.dataclass
class FIDNetwork:
    """The FID Inception network and its variables (``fid_inception_v3``)."""

    model: Any
    variables: Any

    @classmethod
    def load(cls, weights: str, dtype=None) -> "FIDNetwork":
        """From pytorch-fid's weights file (``pt_inception-2015-12-05-6726825d.pth``),
        a converted ``.safetensors`` of it, or a ``save_pretrained`` directory."""
        import jax.numpy as jnp

        from inception_jax import models
        from inception_jax.weights import convert, files, pretrained

        if not os.path.exists(weights):
            raise FIDError(
                f"--weights {weights}: no such file; pytorch-fid's FID weights are {_WEIGHTS_HINT}"
            )
        try:
            if os.path.isdir(weights):
                variables = pretrained.load_variables(weights)
            else:
                state_dict = files.load_torch_state_dict(weights)
                variables = convert.from_torch("fid_inception_v3", state_dict)
        except ValueError as e:
            raise FIDError(
                f"--weights {weights}: not the FID Inception network's weights ({str(e)[:160]}); "
                f"use {_WEIGHTS_HINT}"
            ) from None
        model = models.create("fid_inception_v3", dtype=dtype or jnp.float32)
        return cls(model, variables)

    @classmethod
    def random(cls, seed: int = 0) -> "FIDNetwork":
        """Random weights (for tests and timing)."""
        import jax

        from inception_jax import models
        from inception_jax.train.programs import init_variables

        model = models.create("fid_inception_v3")
        return cls(model, init_variables(model, jax.random.PRNGKey(seed), (1, 75, 75, 3)))


_WEIGHTS_HINT = (
    "pt_inception-2015-12-05-6726825d.pth from https://github.com/mseitzer/pytorch-fid/releases "
    "(pytorch-fid downloads it to ~/.cache/torch/hub/checkpoints)"
)


@functools.lru_cache(maxsize=8)  # one compile for both folders of a FID
def _block_fn(model, dims: int):
    import jax
    import jax.numpy as jnp

    block = BLOCK_INDEX_BY_DIM[dims]

    def fn(variables, x01):
        (out,) = model.apply(variables, 2.0 * x01 - 1.0, train=False, output_blocks=(block,))
        # pytorch-fid average-pools blocks 0-2 to 1x1 (block 3 already is)
        return jnp.mean(out.astype(jnp.float32), axis=(1, 2))

    return jax.jit(fn)


def network_input(item, resize: str, size: int) -> np.ndarray:
    """One image (a path or an array, as :func:`to_rgb8` takes) as float32 HWC in
    [0, 1] at ``size`` x ``size``, resized on the host, so that every batch has one
    shape and the network compiles once whatever the image sizes."""
    image = read_image(item) if isinstance(item, (str, os.PathLike)) else to_rgb8(item)
    if resize == "clean":
        return resize_clean(image, size) / np.float32(255.0)
    return resize_bilinear(image / np.float32(255.0), size)


def activation_batches(
    net: FIDNetwork,
    images: Sequence[Any],
    dims: int = 2048,
    batch_size: int = 50,
    resize: str = "pytorch-fid",
    size: int = FID_SIZE,
    progress: bool = False,
    devices: Optional[Sequence[Any]] = None,
) -> Iterator[np.ndarray]:
    """This process's activations of ``images``, one (B, dims) float64 array a batch,
    in order: what :func:`activations` and :func:`streaming_statistics` consume.

    The batch is split over ``devices`` (default: this process's devices); with several
    ``jax.distributed`` processes, each yields its contiguous share of ``images``
    (ceil(N / processes) of them, the last one fewer), and each runs the same number of
    batches. Images are read and resized on the host one batch ahead of need at most:
    memory does not grow with N.
    """
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    if dims not in BLOCK_INDEX_BY_DIM:
        raise FIDError(f"--dims {dims}: expected one of {', '.join(map(str, DIMS))}")
    if resize not in RESIZE_MODES:
        raise FIDError(f"resize={resize!r}: expected one of {', '.join(RESIZE_MODES)}")
    if batch_size < 1:
        raise FIDError(f"batch_size={batch_size}: expected a positive number")
    n = len(images)
    if n == 0:
        raise FIDError("no images given")
    pc, pi = jax.process_count(), jax.process_index()
    per_process = -(-n // pc)
    first, stop = pi * per_process, min(n, (pi + 1) * per_process)
    devices = list(devices) if devices is not None else jax.local_devices()
    step = max(batch_size // len(devices), 1) * len(devices)  # a multiple of the devices
    mesh = Mesh(np.array(devices), ("batch",))
    sharding = NamedSharding(mesh, PartitionSpec("batch"))
    variables = jax.device_put(net.variables, NamedSharding(mesh, PartitionSpec()))
    fn = _block_fn(net.model, dims)

    bar = _progress(per_process * pc, progress and pi == 0)
    try:
        for start in range(first, first + per_process, step):
            count = max(0, min(step, stop - start))
            batch = np.zeros((step, size, size, 3), np.float32)  # padded: one shape, one program
            for k in range(count):
                batch[k] = network_input(images[start + k], resize, size)
            acts = fn(variables, jax.device_put(batch, sharding))
            yield np.asarray(acts, np.float64)[:count]
            bar(count * pc)
    finally:
        bar(None)  # an error message then starts on a line of its own


def activations(
    net: FIDNetwork,
    images: Sequence[Any],
    dims: int = 2048,
    batch_size: int = 50,
    resize: str = "pytorch-fid",
    size: int = FID_SIZE,
    progress: bool = False,
    devices: Optional[Sequence[Any]] = None,
) -> np.ndarray:
    """(N, dims) float64 activations of ``images``: file paths (read as
    :func:`read_image` says), or image arrays (as :func:`to_rgb8` takes them).

    Holds all N of them: what KID and precision/recall need. For FID alone,
    :func:`streaming_statistics` keeps only the running mean and covariance.
    Devices and processes as :func:`activation_batches`; with several processes every
    process returns all N rows, in order.
    """
    import jax
    from jax.experimental import multihost_utils

    kw = dict(dims=dims, batch_size=batch_size, resize=resize, size=size, progress=progress)
    out = np.concatenate(list(activation_batches(net, images, devices=devices, **kw)))
    pc = jax.process_count()
    if pc > 1:
        per_process = -(-len(images) // pc)
        padded = np.zeros((per_process, dims), np.float64)
        padded[: len(out)] = out
        gathered = multihost_utils.process_allgather(padded)  # float32 without x64: exact here
        out = np.asarray(gathered, np.float64).reshape(pc * per_process, dims)
    return out[: len(images)]


def _progress(
    total: int, show: bool, desc: str = "FID activations", unit: str = "img"
) -> Callable[[Optional[int]], None]:
    if not show:
        return lambda k: None
    from tqdm import tqdm

    bar = tqdm(total=total, unit=unit, desc=desc, file=sys.stderr)

    def update(k):
        if k is None:
            bar.close()
        else:
            bar.update(min(k, bar.total - bar.n))

    return update


# --- statistics and distances ---------------------------------------------------------


class RunningStatistics:
    """Mean and covariance of feature vectors that arrive in batches, in float64 and
    O(D^2) memory whatever their number: each batch's own mean and centred scatter
    matrix are merged in with Chan, Golub and LeVeque's pairwise update, so the result
    does not depend on the batch size (it equals ``np.mean`` and ``np.cov`` of all the
    rows to rounding). Partial results (from other processes) merge the same way."""

    def __init__(self, dims: int):
        self.count = 0
        self.mean = np.zeros(dims, np.float64)
        self.scatter = np.zeros((dims, dims), np.float64)  # sum of (x - mean)(x - mean)^T

    def update(self, rows) -> "RunningStatistics":
        rows = np.asarray(rows, np.float64)
        if rows.ndim != 2 or rows.shape[1] != self.mean.shape[0]:
            raise FIDError(f"features of shape {rows.shape}: expected (batch, {self.mean.shape[0]})")
        if len(rows):
            batch_mean = rows.mean(axis=0)
            centred = rows - batch_mean
            self._merge(len(rows), batch_mean, centred.T @ centred)
        return self

    def merge(self, other: "RunningStatistics") -> "RunningStatistics":
        if other.count:
            self._merge(other.count, other.mean, other.scatter)
        return self

    def _merge(self, count: int, mean: np.ndarray, scatter: np.ndarray) -> None:
        total = self.count + count
        delta = mean - self.mean
        self.mean = self.mean + delta * (count / total)
        self.scatter += scatter
        self.scatter += np.outer(delta * (self.count * count / total), delta)
        self.count = total

    def result(self, warn: bool = True) -> Tuple[np.ndarray, np.ndarray]:
        """``(mu, sigma)``, sigma normalised by N - 1 as ``np.cov``; ``warn``: one line
        on stderr when N is too small for a non-singular covariance."""
        if self.count < 2:
            raise FIDError(f"{self.count} image(s): need at least 2 for a covariance")
        if warn:
            warn_if_singular(self.count, self.mean.shape[0])
        sigma = self.scatter / (self.count - 1)
        return self.mean.copy(), (sigma + sigma.T) / 2  # the outer products round asymmetrically


def warn_if_singular(count: int, dims: int) -> None:
    """One line on stderr when ``count`` feature vectors of ``dims`` dimensions cannot
    give a non-singular covariance (its rank is at most count - 1)."""
    if count <= dims:
        print(
            f"warning: FID from {count} images with {dims}-d features: the covariance is singular; "
            f"use at least {dims + 1} images (pytorch-fid's advice: 10,000+)",
            file=sys.stderr,
        )


def statistics(acts: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``(mu, sigma)``: mean and covariance (N - 1 normalised) of (N, D) activations."""
    acts = np.asarray(acts, np.float64)
    if acts.ndim != 2 or acts.shape[0] < 2:
        raise FIDError(f"activations of shape {acts.shape}: need at least 2 images for a covariance")
    warn_if_singular(*acts.shape)
    return acts.mean(axis=0), np.cov(acts, rowvar=False)


def streaming_statistics(
    net: FIDNetwork, images: Sequence[Any], dims: int = 2048, **kw
) -> Tuple[np.ndarray, np.ndarray]:
    """``(mu, sigma)`` of the activations of ``images`` (as :func:`activations` takes
    them and its keywords), accumulated batch by batch in a :class:`RunningStatistics`:
    memory is O(dims^2), never O(N x dims). With several ``jax.distributed`` processes
    each accumulates its share and all return the merged result."""
    import jax

    running = RunningStatistics(dims)
    for batch in activation_batches(net, images, dims, **kw):
        running.update(batch)
    if jax.process_count() > 1:
        running = _merge_over_processes(running)
    return running.result(warn=jax.process_index() == 0)  # one warning, not one a process


def _merge_over_processes(running: RunningStatistics) -> RunningStatistics:
    """Every process's partial statistics, merged in process order. Sent as raw bits
    (uint32 pairs): without jax's x64 mode an all-gather would round float64 to float32."""
    from jax.experimental import multihost_utils

    def gather(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, np.float64)
        bits = np.asarray(multihost_utils.process_allgather(x.view(np.uint32)))
        return np.ascontiguousarray(bits).view(np.float64).reshape((-1,) + x.shape)

    counts = gather(np.array([running.count], np.float64))[:, 0]
    means, scatters = gather(running.mean), gather(running.scatter)
    merged = RunningStatistics(running.mean.shape[0])
    for count, mean, scatter in zip(counts, means, scatters):
        part = RunningStatistics(len(mean))
        part.count, part.mean, part.scatter = int(count), mean, scatter
        merged.merge(part)
    return merged


def _checked_covariance(sigma: np.ndarray, name: str) -> np.ndarray:
    if sigma.ndim != 2 or sigma.shape[0] != sigma.shape[1]:
        raise FIDError(f"{name} of shape {sigma.shape}: expected a square covariance matrix")
    if not np.isfinite(sigma).all():
        raise FIDError(f"{name} has non-finite entries: expected a covariance matrix")
    scale = np.abs(sigma).max()
    if np.abs(sigma - sigma.T).max() > 1e-6 * scale:
        raise FIDError(f"{name} is not symmetric: expected a covariance matrix (np.cov of the features)")
    return sigma


def _not_covariance(eigenvalues: np.ndarray, what: str) -> Optional[str]:
    """A message when ``eigenvalues`` go further below zero than rounding can take a
    covariance (1e-5 of the largest), else None."""
    low, high = eigenvalues.min(), np.abs(eigenvalues).max()
    if low < -1e-5 * high:
        return (
            f"{what} has eigenvalue {low:.3g} (largest {high:.3g}): not a covariance matrix; "
            "pass the covariance of the features (np.cov)"
        )
    return None


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr((sigma1 sigma2)^(1/2)) for two covariance matrices, by two symmetric
    eigendecompositions in float64 (no general matrix square root): with
    R = sigma1^(1/2), sigma1 sigma2 = R (R sigma2) has the eigenvalues of the symmetric
    positive semi-definite R sigma2 R, so the trace is the sum of their square roots.
    Eigenvalues within rounding of zero (below ``np.linalg.matrix_rank``'s tolerance,
    dims x machine epsilon x the largest) count as zero: their square roots would add
    only noise. So singular and rank-deficient covariances (fewer images than
    dimensions) give a finite value, accurate where scipy's ``sqrtm`` is not."""
    values, vectors = np.linalg.eigh(sigma1)
    problem = _not_covariance(values, "sigma1")
    if problem:
        raise FIDError(problem)
    root1 = (vectors * np.sqrt(_zero_below_rounding(values))) @ vectors.T
    inner = root1 @ sigma2 @ root1
    values = np.linalg.eigvalsh((inner + inner.T) / 2)
    problem = _not_covariance(values, "sigma1^(1/2) sigma2 sigma1^(1/2)")
    if problem:
        raise FIDError(problem.replace("not a covariance matrix", "sigma2 is not a covariance matrix"))
    return float(np.sqrt(_zero_below_rounding(values)).sum())


def _zero_below_rounding(eigenvalues: np.ndarray) -> np.ndarray:
    tolerance = len(eigenvalues) * np.finfo(np.float64).eps * np.abs(eigenvalues).max()
    return np.where(eigenvalues > tolerance, eigenvalues, 0.0)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 0.0) -> float:
    """||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)), the trace of
    the root by :func:`trace_sqrt_product` (finite for singular covariances too).

    Equals pytorch-fid's ``calculate_frechet_distance`` (scipy's ``sqrtm``) wherever
    that is finite. pytorch-fid retries with 1e-6 on both diagonals when its root is
    not finite; ``eps`` adds that offset here (``eps=1e-6`` reproduces its fallback
    number; the default 0 takes the covariances as they are)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape[0] != mu1.shape[0]:
        raise FIDError(
            f"statistics of different sizes: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs "
            f"{sigma2.shape}; compute both with the same --dims"
        )
    sigma1, sigma2 = _checked_covariance(sigma1, "sigma1"), _checked_covariance(sigma2, "sigma2")
    diff = mu1 - mu2
    offset = eps * np.eye(sigma1.shape[0])
    trace_root = trace_sqrt_product(sigma1 + offset, sigma2 + offset)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_root)


def polynomial_mmd(x: np.ndarray, y: np.ndarray, degree: int = 3, gamma=None, coef: float = 1.0) -> float:
    """Unbiased squared MMD of two feature sets with the kernel (gamma x.y + coef)^degree,
    gamma = 1 / dim by default (KID's kernel)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    kxx = (gamma * x @ x.T + coef) ** degree
    kyy = (gamma * y @ y.T + coef) ** degree
    kxy = (gamma * x @ y.T + coef) ** degree
    m, n = x.shape[0], y.shape[0]
    term_x = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    term_y = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(term_x + term_y - 2 * kxy.mean())


def kernel_inception_distance(
    real: np.ndarray,
    fake: np.ndarray,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma=None,
    coef: float = 1.0,
    seed: int = 0,
) -> Tuple[float, float]:
    """KID: mean and standard deviation of :func:`polynomial_mmd` over ``subsets`` random
    subsets of ``subset_size`` features of each set (drawn without replacement)."""
    real, fake = np.asarray(real), np.asarray(fake)
    if subset_size > min(len(real), len(fake)):
        raise FIDError(
            f"subset_size={subset_size}: larger than the {min(len(real), len(fake))} features of the "
            "smaller set; lower it"
        )
    rng = np.random.default_rng(seed)
    values = [
        polynomial_mmd(
            real[rng.choice(len(real), subset_size, replace=False)],
            fake[rng.choice(len(fake), subset_size, replace=False)],
            degree,
            gamma,
            coef,
        )
        for _ in range(subsets)
    ]
    return float(np.mean(values)), float(np.std(values))


def inception_score(
    logits: np.ndarray, splits: int = 10, split_size: Optional[int] = None
) -> Tuple[float, float]:
    """Inception Score from (N, classes) logits: exp(E_x KL(p(y|x) || p(y))) on each of
    ``splits`` consecutive chunks of ceil(N / splits), or, given ``split_size``, on
    consecutive chunks of that many (the ADM evaluator's 5000; the last one shorter);
    returns its mean and standard deviation (N - 1; NaN for one chunk). torchmetrics
    shuffles the logits first; shuffle them to match."""
    from scipy.special import log_softmax

    logp = log_softmax(np.asarray(logits, np.float64), axis=1)
    # torch.chunk's (and so torchmetrics') split sizes, unless given
    size = split_size or -(-len(logp) // splits)
    scores = []
    for part in (logp[i : i + size] for i in range(0, len(logp), size)):
        p = np.exp(part)
        log_py = np.log(p.mean(axis=0))
        scores.append(np.exp((p * (part - log_py)).sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores, ddof=1)) if len(scores) > 1 else float("nan")


# --- statistics files ----------------------------------------------------------------


def save_statistics(path: str, mu: np.ndarray, sigma: np.ndarray) -> None:
    np.savez(path, mu=mu, sigma=sigma)


def load_statistics(path: str) -> Tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path) as f:
            return f["mu"][:], f["sigma"][:]
    except KeyError:
        raise FIDError(f"{path}: a statistics .npz needs arrays 'mu' and 'sigma'") from None
    except Exception as e:
        raise FIDError(f"{path}: not a readable .npz ({type(e).__name__}: {str(e)[:100]})") from None


def statistics_of(
    net: FIDNetwork, path: str, dims: int = 2048, batch_size: int = 50, resize: str = "pytorch-fid", **kw
) -> Tuple[np.ndarray, np.ndarray]:
    """``(mu, sigma)`` of a folder of images, or read from a statistics ``.npz``."""
    if path.endswith(".npz"):
        if not os.path.isfile(path):
            raise FIDError(f"{path}: no such statistics file")
        return load_statistics(path)
    files = list_images(path)
    return streaming_statistics(net, files, dims, batch_size=batch_size, resize=resize, **kw)


def fid_from_paths(net: FIDNetwork, path1: str, path2: str, **kw) -> float:
    """The FID between two folders of images (or statistics files)."""
    return frechet_distance(*statistics_of(net, path1, **kw), *statistics_of(net, path2, **kw))


# --- command line --------------------------------------------------------------------


def main(argv: Optional[Iterable[str]] = None) -> int:
    from inception_jax import evaluation

    parser = argparse.ArgumentParser(
        prog="python -m inception_jax.fid",
        description="FID, sFID, Inception Score, precision, recall, density, coverage and KID of SAMPLES "
        "against REF, as OpenAI's ADM evaluator defines them, on pytorch-fid's FID Inception network "
        "(FID alone between two statistics files).",
    )
    parser.add_argument("--weights", required=True, help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth")
    parser.add_argument(
        "--metrics",
        help=f"a comma list of {','.join(evaluation.METRICS)} (default: all the inputs allow; "
        "fid alone with --dims other than 2048)",
    )
    parser.add_argument("--nearest-k", type=int, default=3, help="k of precision, recall, density, coverage")
    parser.add_argument("--dims", type=int, default=2048, help="FID's block: 64, 192, 768 or 2048 (default)")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--resize", default="pytorch-fid", help="pytorch-fid (default) or clean")
    parser.add_argument("--json", action="store_true", help="print one JSON object {metric: value} last")
    parser.add_argument(
        "--save-stats",
        action="store_true",
        help="REF images, SAMPLES the .npz to write (mu, sigma; with --dims 2048 also mu_s, sigma_s)",
    )
    parser.add_argument(
        "paths",
        nargs=2,
        metavar="PATH",
        help="REF and SAMPLES: a folder of images, an image batch .npz (arr_0) or a statistics .npz",
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        if args.dims not in BLOCK_INDEX_BY_DIM:
            raise FIDError(f"--dims {args.dims}: expected one of {', '.join(map(str, DIMS))}")
        if args.resize not in RESIZE_MODES:
            raise FIDError(f"--resize {args.resize}: expected one of {', '.join(RESIZE_MODES)}")
        if args.batch_size < 1:
            raise FIDError(f"--batch-size {args.batch_size}: expected a positive number")
        # the inputs before the network: a typo fails in a second, not after loading it
        if args.save_stats:
            source, out = evaluation.open_source(args.paths[0]), args.paths[1]
            if source.images is None:
                raise FIDError(f"{source.path}: a statistics file; --save-stats needs images")
            if not os.path.isdir(os.path.dirname(os.path.abspath(out))):
                raise FIDError(f"{out}: its folder does not exist")
        else:
            ref, samples = (evaluation.open_source(p) for p in args.paths)
            if args.metrics:
                metrics = evaluation.parse_metrics(args.metrics)
            else:
                metrics = (
                    ("fid",) if args.dims != 2048 else evaluation.available(ref, samples, args.nearest_k)
                )
            evaluation.check(ref, samples, metrics, args.nearest_k, dims=args.dims)
        net = FIDNetwork.load(args.weights)
        kw = dict(batch_size=args.batch_size, resize=args.resize, progress=True)
        if args.save_stats:
            if args.dims == 2048:
                evaluation.save_statistics(out, evaluation.feature_statistics(net, source.images, **kw))
                print(f"wrote {out} (mu, sigma: 2048 dims; mu_s, sigma_s: spatial)")
            else:
                mu, sigma = streaming_statistics(net, source.images, args.dims, **kw)
                save_statistics(out, mu, sigma)
                print(f"wrote {out} ({mu.shape[0]} dims)")
            return 0
        values, notes = evaluation.evaluate(net, ref, samples, metrics, args.nearest_k, dims=args.dims, **kw)
    except FIDError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    left_out = [m for m in evaluation.METRICS if m not in values]
    if left_out and not args.metrics and args.dims == 2048:
        print(f"left out, as the inputs do not allow them: {', '.join(left_out)}", file=sys.stderr)
    if args.json:
        for m, note in notes.items():
            print(f"{m}: {note}", file=sys.stderr)
        print(json.dumps(values))
    else:
        evaluation.print_table(values, notes)
    return 0


if __name__ == "__main__":
    from inception_jax.backends import cpu_inference

    cpu_inference.single_arena()  # before JAX starts; on a CPU about 2x the images/s
    # the package's copy of this module, not this __main__ one: inception_jax.evaluation
    # raises inception_jax.fid.FIDError, which is not __main__.FIDError
    from inception_jax.fid import main as package_main

    sys.exit(package_main())
