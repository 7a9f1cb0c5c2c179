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
and covariance (float64); the Fréchet distance takes scipy's ``sqrtm`` of
``sigma1 @ sigma2``, retrying with ``eps`` on the diagonals when that is singular.
Statistics files hold ``mu`` and ``sigma`` as pytorch-fid's do (either reads the other's).

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
from typing import Any, Callable, Iterable, Optional, Sequence, Tuple

import numpy as np

DIMS = (64, 192, 768, 2048)
BLOCK_INDEX_BY_DIM = {64: 0, 192: 1, 768: 2, 2048: 3}
IMAGE_EXTENSIONS = ("bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp")
RESIZE_MODES = ("pytorch-fid", "clean")
FID_SIZE = 299


class FIDError(ValueError):
    """Bad input to the FID tools: a missing folder, an unreadable image, a wrong file."""


# --- resizing ------------------------------------------------------------------------


def resize_bilinear(images, size: int = FID_SIZE):
    """pytorch-fid's resize: ``F.interpolate(x, (size, size), mode="bilinear",
    align_corners=False)`` on float NHWC images (no antialiasing)."""
    import jax

    images = jax.numpy.asarray(images, jax.numpy.float32)
    n, _, _, c = images.shape
    return jax.image.resize(images, (n, size, size, c), "bilinear", antialias=False)


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


def read_image(path: str) -> np.ndarray:
    """uint8 HWC RGB, or FIDError naming the file."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), np.uint8)
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
def _block_fn(model, dims: int, resize: bool, size: int):
    import jax
    import jax.numpy as jnp

    block = BLOCK_INDEX_BY_DIM[dims]

    def fn(variables, x01):
        if resize:
            x01 = resize_bilinear(x01, size)
        (out,) = model.apply(variables, 2.0 * x01 - 1.0, train=False, output_blocks=(block,))
        # pytorch-fid average-pools blocks 0-2 to 1x1 (block 3 already is)
        return jnp.mean(out.astype(jnp.float32), axis=(1, 2))

    return jax.jit(fn)


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
    """(N, dims) float64 activations of ``images``: file paths, or uint8 HWC arrays.

    The batch is split over ``devices`` (default: this process's devices); with several
    ``jax.distributed`` processes, each computes its contiguous share of ``images`` once
    and every process returns all N rows, in order.
    """
    import jax
    from jax.experimental import multihost_utils
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    if dims not in BLOCK_INDEX_BY_DIM:
        raise FIDError(f"--dims {dims}: expected one of {', '.join(map(str, DIMS))}")
    if resize not in RESIZE_MODES:
        raise FIDError(f"resize={resize!r}: expected one of {', '.join(RESIZE_MODES)}")
    n = len(images)
    if n == 0:
        raise FIDError("no images given")
    pc, pi = jax.process_count(), jax.process_index()
    per_process = -(-n // pc)
    mine = list(range(pi * per_process, min(n, (pi + 1) * per_process)))
    devices = list(devices) if devices is not None else jax.local_devices()
    step = max(batch_size // len(devices), 1) * len(devices)  # a multiple of the devices
    mesh = Mesh(np.array(devices), ("batch",))
    sharding = NamedSharding(mesh, PartitionSpec("batch"))
    replicated = NamedSharding(mesh, PartitionSpec())
    variables = jax.device_put(net.variables, replicated)
    fn = _block_fn(net.model, dims, resize == "pytorch-fid", size)

    def load(item) -> np.ndarray:
        image = read_image(item) if isinstance(item, (str, os.PathLike)) else np.asarray(item)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise FIDError(f"image of shape {image.shape} and dtype {image.dtype}: expected uint8 HxWx3")
        if resize == "clean":
            return resize_clean(image, size) / 255.0
        if resize == "pytorch-fid" and image.shape[:2] != (size, size):
            return np.asarray(resize_bilinear(image[None] / np.float32(255.0), size)[0])
        return image.astype(np.float32) / 255.0

    bar = _progress(per_process * pc, progress and pi == 0)
    out = np.zeros((per_process, dims), np.float64)
    try:
        for start in range(0, per_process, step):
            idx = mine[start : start + step]
            batch = np.zeros((step, size, size, 3), np.float32)
            for k, i in enumerate(idx):
                batch[k] = load(images[i])
            acts = fn(variables, jax.device_put(batch, sharding))
            out[start : start + len(idx)] = np.asarray(acts, np.float64)[: len(idx)]
            bar(len(idx) * pc)
    finally:
        bar(None)  # an error message then starts on a line of its own
    if pc > 1:
        out = np.asarray(multihost_utils.process_allgather(out)).reshape(pc * per_process, dims)
    return out[:n]


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


def statistics(acts: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``(mu, sigma)``: mean and covariance (N - 1 normalised) of (N, D) activations."""
    acts = np.asarray(acts, np.float64)
    if acts.ndim != 2 or acts.shape[0] < 2:
        raise FIDError(f"activations of shape {acts.shape}: need at least 2 images for a covariance")
    return acts.mean(axis=0), np.cov(acts, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)).

    When the product's square root is not finite (a singular product), ``eps`` is added
    to both diagonals and it is taken again; an imaginary part on the diagonal larger
    than 1e-3 raises ValueError; otherwise the real part is used."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise FIDError(
            f"statistics of different sizes: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs "
            f"{sigma2.shape}; compute both with the same --dims"
        )
    diff = mu1 - mu2
    root = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(root).all():
        print(f"fid: singular product; adding {eps} to the diagonal of the covariances", file=sys.stderr)
        offset = np.eye(sigma1.shape[0]) * eps
        root = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(root):
        if not np.allclose(np.diagonal(root).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.max(np.abs(root.imag))} in the matrix square root")
        root = root.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(root))


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
    return statistics(activations(net, files, dims, batch_size, resize, **kw))


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
                evaluation.save_statistics(out, evaluation.features(net, source.images, **kw))
                print(f"wrote {out} (mu, sigma: 2048 dims; mu_s, sigma_s: spatial)")
            else:
                mu, sigma = statistics(activations(net, source.images, args.dims, **kw))
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
    # the package's copy of this module, not this __main__ one: inception_jax.evaluation
    # raises inception_jax.fid.FIDError, which is not __main__.FIDError
    from inception_jax.fid import main as package_main

    sys.exit(package_main())
