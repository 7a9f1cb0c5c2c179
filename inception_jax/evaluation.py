"""The evaluation table of generative-model papers, as OpenAI's ADM evaluator
(guided-diffusion ``evaluations/evaluator.py``) defines it, on the FID network.

    from inception_jax import evaluation, fid
    net = fid.FIDNetwork.load("pt_inception-2015-12-05-6726825d.pth")
    values, notes = evaluation.evaluate(net, "ref_batch.npz", "samples/")
    values["fid"], values["sfid"], values["precision"]

Metrics (``METRICS``): ``fid`` and ``kid`` on the 2048-d pool features; ``sfid``, FID on
the spatial features (the first 7 channels of Mixed_6d's 1x1 branch, the TF graph's
``mixed_6/conv``, 17 x 17 x 7 = 2023 values flattened in NHWC order);
``inception_score`` of the samples, from the pool features times the classifier's
weights without its bias (the TF graph's ``softmax/logits/MatMul``), the mean over 10
consecutive splits in input order (the ADM evaluator's chunks of 5000 at 50,000
samples); ``precision``, ``recall``, ``density`` and ``coverage``
(:mod:`inception_jax.sample_metrics`) on the pool features. Both kinds of feature come
from one forward pass.

Inputs: a folder of images, an image batch ``.npz`` (``arr_0``: uint8 N x H x W x 3, read
a batch at a time), or a statistics ``.npz`` (``mu`` and ``sigma``, and ``mu_s`` and
``sigma_s`` for sFID; the ADM reference batches hold these beside ``arr_0``, and where a
file holds statistics, FID and sFID use them, as the ADM evaluator does).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import zipfile
from collections.abc import Sequence
from typing import Any, Dict, Iterable, Iterator, Optional, Tuple

import numpy as np

from inception_jax import fid, sample_metrics
from inception_jax.fid import FIDError

METRICS = ("fid", "sfid", "inception_score", "precision", "recall", "density", "coverage", "kid")
STATISTICS_METRICS = ("fid", "sfid")  # a statistics file is enough for these
POOL_LAYER = "Mixed_7c"  # averaged over space: the TF graph's pool_3
SPATIAL_LAYER = "Mixed_6d.branch1x1"  # the TF graph's mixed_6/conv (after its BN and ReLU)
SPATIAL_CHANNELS = 7
IS_SPLITS = 10  # consecutive, in input order: the ADM evaluator's 5000-sample splits at 50,000
KID_SUBSET_SIZE = 1000
STATISTICS_KEYS = {"fid": ("mu", "sigma"), "sfid": ("mu_s", "sigma_s")}


# --- inputs --------------------------------------------------------------------------

_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


class NpzImages(Sequence):
    """The images of a batch ``.npz`` (``arr_0``: uint8 N x H x W x 3, as the ADM
    evaluator reads them), read from the file when asked for, so a batch of 50,000 is
    never in memory whole. Reads in order are sequential reads of the archive member."""

    def __init__(self, path: str, key: str = "arr_0"):
        self.path = path
        try:
            self._zip = zipfile.ZipFile(path)
            self._file = self._zip.open(f"{key}.npy")
            version = np.lib.format.read_magic(self._file)
            if version not in _HEADER_READERS:
                raise ValueError(f".npy format {version}, expected 1.0 or 2.0")
            shape, fortran, dtype = _HEADER_READERS[version](self._file)
        except Exception as e:
            raise FIDError(
                f"{path}: not a readable image batch ({type(e).__name__}: {str(e)[:100]})"
            ) from None
        if dtype != np.uint8 or len(shape) != 4 or shape[3] != 3 or fortran:
            raise FIDError(
                f"{path}: {key} of shape {shape} and dtype {dtype}: expected uint8 N x H x W x 3 images "
                "(C order), as the ADM evaluator's batches"
            )
        self.shape = shape
        self._start = self._file.tell()
        self._row_bytes = int(np.prod(shape[1:]))
        self._next = 0  # the row the file is positioned at

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index):
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                return np.stack([self[i] for i in range(start, stop, step)])
            return self._read(start, max(stop, start))
        if not -len(self) <= index < len(self):
            raise IndexError(f"{self.path}: image {index} of {len(self)}")
        index %= len(self)
        return self._read(index, index + 1)[0]

    def _read(self, start: int, stop: int) -> np.ndarray:
        if start != self._next:
            self._file.seek(self._start + start * self._row_bytes)
        data = self._file.read((stop - start) * self._row_bytes)
        if len(data) != (stop - start) * self._row_bytes:
            raise FIDError(f"{self.path}: the file ends before image {stop} of {len(self)}; it is truncated")
        self._next = stop
        return np.frombuffer(data, np.uint8).reshape((stop - start, *self.shape[1:]))


@dataclasses.dataclass
class Source:
    """One side of an evaluation: its images (file names or an :class:`NpzImages`;
    None for a statistics file) and the statistics stored in it."""

    path: str
    images: Optional[Sequence[Any]]
    stored: Dict[str, np.ndarray]

    def has_statistics(self, metric: str) -> bool:
        return all(k in self.stored for k in STATISTICS_KEYS[metric])


def open_source(path: str) -> Source:
    """A folder of images, an image batch ``.npz``, or a statistics ``.npz``."""
    if not path.endswith(".npz"):
        return Source(path, fid.list_images(path), {})
    if not os.path.isfile(path):
        raise FIDError(f"{path}: no such file; give a folder of images, an image batch or a statistics .npz")
    try:
        with np.load(path) as f:
            names = set(f.files)
            stored = {k: f[k][()] for k in ("mu", "sigma", "mu_s", "sigma_s") if k in names}
    except Exception as e:
        raise FIDError(f"{path}: not a readable .npz ({type(e).__name__}: {str(e)[:100]})") from None
    for mu, sigma in STATISTICS_KEYS.values():
        if (mu in stored) != (sigma in stored):
            raise FIDError(f"{path}: holds {mu if mu in stored else sigma} without its pair ({mu}, {sigma})")
    if "arr_0" not in names and "mu" not in stored:
        raise FIDError(
            f"{path}: neither an image batch (arr_0) nor statistics (mu, sigma); "
            f"it holds {', '.join(sorted(names))}"
        )
    return Source(path, NpzImages(path) if "arr_0" in names else None, stored)


# --- features ------------------------------------------------------------------------


@dataclasses.dataclass
class Features:
    pool: np.ndarray  # (N, 2048) float32: the pool features (FID, KID, IS, precision, ...)
    spatial: np.ndarray  # (N, 2023) float32: the spatial features (sFID)


@functools.lru_cache(maxsize=8)  # one compile for both sides
def _features_fn(model):
    import jax
    import jax.numpy as jnp

    from inception_jax.taps import intermediate_features

    def fn(variables, x01):  # x01: already at the network's size (_load resizes on the host)
        taps = intermediate_features(model, variables, 2.0 * x01 - 1.0, [SPATIAL_LAYER, POOL_LAYER])
        pool = jnp.mean(taps[POOL_LAYER].astype(jnp.float32), axis=(1, 2))
        spatial = taps[SPATIAL_LAYER][..., :SPATIAL_CHANNELS].astype(jnp.float32)
        return pool, spatial.reshape(spatial.shape[0], -1)  # NHWC: TF's row-major [17, 17, 7]

    return jax.jit(fn)


def feature_batches(
    net: fid.FIDNetwork,
    images: Sequence[Any],
    batch_size: int = 50,
    resize: str = "pytorch-fid",
    size: int = fid.FID_SIZE,
    progress: bool = False,
    devices: Optional[Sequence[Any]] = None,
) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """``(pool, spatial)`` float32 features of ``images`` (file names, image arrays or an
    :class:`NpzImages`), one batch at a time and in order, read and resized on the host
    as :func:`inception_jax.fid.activations` does, in one forward pass a batch; each
    batch is split over ``devices`` (this process's by default)."""
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    if resize not in fid.RESIZE_MODES:
        raise FIDError(f"resize={resize!r}: expected one of {', '.join(fid.RESIZE_MODES)}")
    n = len(images)
    if n == 0:
        raise FIDError("no images given")
    devices = list(devices) if devices is not None else jax.local_devices()
    step = max(batch_size // len(devices), 1) * len(devices)  # a multiple of the devices
    sharding = NamedSharding(Mesh(np.array(devices), ("batch",)), PartitionSpec("batch"))
    variables = jax.device_put(net.variables, NamedSharding(sharding.mesh, PartitionSpec()))
    fn = _features_fn(net.model)
    bar = fid._progress(n, progress)
    try:
        for start in range(0, n, step):
            chunk = images[start : start + step]
            batch = np.zeros((step, size, size, 3), np.float32)
            for k, item in enumerate(chunk):
                batch[k] = fid.network_input(item, resize, size)
            pool, spatial = (
                np.asarray(a)[: len(chunk)] for a in fn(variables, jax.device_put(batch, sharding))
            )
            yield pool, spatial
            bar(len(chunk))
    finally:
        bar(None)  # an error message then starts on a line of its own


def features(net: fid.FIDNetwork, images: Sequence[Any], **kw) -> Features:
    """All the pool and spatial features of ``images`` (:func:`feature_batches`'s
    keywords), held in memory: what KID, the Inception Score and the k-NN metrics need."""
    pools, spatials = zip(*feature_batches(net, images, **kw))
    return Features(np.concatenate(pools), np.concatenate(spatials))


def feature_statistics(net: fid.FIDNetwork, images: Sequence[Any], **kw) -> Dict[str, np.ndarray]:
    """``mu``, ``sigma`` (pool) and ``mu_s``, ``sigma_s`` (spatial) of ``images``,
    accumulated batch by batch (:class:`inception_jax.fid.RunningStatistics`): memory
    O(D^2), never O(N x D), for FID and sFID alone."""
    pool = spatial = None
    for p, s in feature_batches(net, images, **kw):
        if pool is None:
            pool, spatial = fid.RunningStatistics(p.shape[1]), fid.RunningStatistics(s.shape[1])
        pool.update(p)
        spatial.update(s)
    (mu, sigma), (mu_s, sigma_s) = pool.result(), spatial.result()
    return {"mu": mu, "sigma": sigma, "mu_s": mu_s, "sigma_s": sigma_s}


def unbiased_logits(net: fid.FIDNetwork, pool: np.ndarray) -> np.ndarray:
    """The 1008 class logits of the pool features as the Inception Score takes them:
    times the classifier's weights, without its bias (the TF graph's
    ``softmax/logits/MatMul``, which the ADM evaluator and improved-gan read)."""
    kernel = np.asarray(net.variables["params"]["fc"]["kernel"], np.float64)
    return np.asarray(pool, np.float64) @ kernel


# --- the table -----------------------------------------------------------------------


def parse_metrics(text: str) -> Tuple[str, ...]:
    names = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = [m for m in names if m not in METRICS]
    if unknown or not names:
        raise FIDError(f"--metrics {text}: expected a comma list of {','.join(METRICS)}")
    return tuple(m for m in METRICS if m in names)


def _sides(metric: str, ref: Source, samples: Source) -> Tuple[Source, ...]:
    return (samples,) if metric == "inception_score" else (ref, samples)


def _gives(side: Source, metric: str) -> bool:
    return side.images is not None or (metric in STATISTICS_KEYS and side.has_statistics(metric))


def _fewest_images(metric: str, ref: Source, samples: Source) -> int:
    return min(len(s.images) if s.images is not None else 0 for s in _sides(metric, ref, samples))


def available(ref: Source, samples: Source, nearest_k: int = 3) -> Tuple[str, ...]:
    """The metrics these inputs allow: fid and sfid from images or statistics, the
    others from images (the Inception Score from the samples' alone); precision,
    recall, density and coverage where each set has more than ``nearest_k`` images."""
    return tuple(
        m
        for m in METRICS
        if all(_gives(s, m) for s in _sides(m, ref, samples))
        and not (m in sample_metrics.MANIFOLD_METRICS and _fewest_images(m, ref, samples) <= nearest_k)
        and not (m == "kid" and _fewest_images(m, ref, samples) < 2)
    )


def check(
    ref: Source,
    samples: Source,
    metrics: Sequence[str],
    nearest_k: int = 3,
    kid_subset_size: Optional[int] = None,
    dims: int = 2048,
) -> None:
    """FIDError, naming the file and the metric, for what these inputs cannot give."""
    if dims != 2048 and tuple(metrics) != ("fid",):
        raise FIDError(
            f"--dims {dims}: only fid takes another block; {', '.join(m for m in metrics if m != 'fid')} "
            "use the 2048-d pool features (ask --metrics fid, or leave --dims at 2048)"
        )
    for m in metrics:
        for s in _sides(m, ref, samples):
            if not _gives(s, m):
                needs = (
                    f"{' and '.join(STATISTICS_KEYS[m])} or images"
                    if m in STATISTICS_KEYS
                    else "the images (a folder or an arr_0 batch)"
                )
                raise FIDError(
                    f"{s.path}: a statistics file, but {m} needs {needs}; leave {m} out of --metrics"
                )
        fewest = _fewest_images(m, ref, samples)
        if m in sample_metrics.MANIFOLD_METRICS and not 1 <= nearest_k < fewest:
            raise FIDError(f"--nearest-k {nearest_k}: needs 1 <= k < the number of images ({fewest})")
        if m == "kid" and not 2 <= (kid_subset_size or 2) <= fewest:
            raise FIDError(
                f"kid subset size {kid_subset_size}: needs 2 to the {fewest} images of the smaller set"
            )


def evaluate(
    net: fid.FIDNetwork,
    ref,
    samples,
    metrics: Optional[Iterable[str]] = None,
    nearest_k: int = 3,
    kid_subsets: int = 100,
    kid_subset_size: Optional[int] = None,
    dims: int = 2048,
    batch_size: int = 50,
    resize: str = "pytorch-fid",
    progress: bool = False,
) -> Tuple[Dict[str, float], Dict[str, str]]:
    """``(values, notes)``: ``{metric: value}`` of ``samples`` against ``ref`` (paths or
    :class:`Source` objects) for each of ``metrics`` (default: all the inputs allow), and a
    few words on how each was taken. ``dims`` (pytorch-fid's blocks) applies to FID
    alone. ``kid_subset_size`` defaults to 1000 or the smaller set's size (as clean-fid
    does); KID's value is the mean over the subsets."""
    ref = ref if isinstance(ref, Source) else open_source(ref)
    samples = samples if isinstance(samples, Source) else open_source(samples)
    metrics = available(ref, samples, nearest_k) if metrics is None else metrics
    metrics = tuple(m for m in METRICS if m in metrics)
    check(ref, samples, metrics, nearest_k, kid_subset_size, dims)
    kw = dict(batch_size=batch_size, resize=resize, progress=progress)
    if dims != 2048:  # FID alone, on another of pytorch-fid's blocks
        stats = [
            (s.stored["mu"], s.stored["sigma"])
            if s.has_statistics("fid")
            else fid.streaming_statistics(net, s.images, dims, **kw)
            for s in (ref, samples)
        ]
        return {"fid": fid.frechet_distance(*stats[0], *stats[1])}, _stored_note(ref, samples, "fid")
    per_image = set(metrics) - set(STATISTICS_METRICS)
    feats: Dict[int, Features] = {}
    stats: Dict[int, Dict[str, np.ndarray]] = {}
    for side in (ref, samples):
        mine = per_image - ({"inception_score"} if side is ref else set())
        if side.images is not None and mine:  # KID, IS, the k-NN metrics: every feature
            feats[id(side)] = features(net, side.images, **kw)
        elif side.images is not None and any(
            not side.has_statistics(m) for m in metrics if m in STATISTICS_KEYS
        ):
            stats[id(side)] = feature_statistics(net, side.images, **kw)  # FID, sFID: streamed
    values: Dict[str, float] = {}
    notes: Dict[str, str] = {}
    for m in STATISTICS_METRICS:
        if m in metrics:
            mu, sigma = STATISTICS_KEYS[m]
            pair = []
            for s in (ref, samples):
                if s.has_statistics(m):
                    pair.append((s.stored[mu], s.stored[sigma]))
                elif id(s) in stats:
                    pair.append((stats[id(s)][mu], stats[id(s)][sigma]))
                else:
                    pair.append(fid.statistics(getattr(feats[id(s)], "pool" if m == "fid" else "spatial")))
            values[m] = fid.frechet_distance(*pair[0], *pair[1])
            notes.update(_stored_note(ref, samples, m))
    if "inception_score" in metrics:
        logits = unbiased_logits(net, feats[id(samples)].pool)
        values["inception_score"], std = fid.inception_score(logits, splits=IS_SPLITS)
        notes["inception_score"] = f"of the samples only; {IS_SPLITS} splits in input order, std {std:.4g}"
    manifold = [m for m in metrics if m in sample_metrics.MANIFOLD_METRICS]
    if manifold:
        real, fake = feats[id(ref)].pool, feats[id(samples)].pool
        values.update(sample_metrics.manifold_metrics(real, fake, nearest_k, manifold, progress=progress))
        notes.update({m: f"k={nearest_k}" for m in manifold})
    if "kid" in metrics:
        real, fake = feats[id(ref)].pool, feats[id(samples)].pool
        size = kid_subset_size or min(KID_SUBSET_SIZE, len(real), len(fake))
        values["kid"], std = fid.kernel_inception_distance(real, fake, kid_subsets, size)
        notes["kid"] = f"std {std:.4g} over {kid_subsets} subsets of {size}"
    return {m: values[m] for m in metrics}, notes


def _stored_note(ref: Source, samples: Source, metric: str) -> Dict[str, str]:
    stored = [s.path for s in (ref, samples) if s.has_statistics(metric)]
    names = " and ".join(STATISTICS_KEYS[metric])
    return {metric: f"the {names} stored in {' and '.join(stored)}"} if stored else {}


def save_statistics(path: str, stats: Dict[str, np.ndarray]) -> None:
    """``mu``, ``sigma`` (pool) and ``mu_s``, ``sigma_s`` (spatial), the ADM reference
    batches' names (:func:`feature_statistics` gives them); pytorch-fid reads the first
    two."""
    np.savez(path, **{k: stats[k] for k in ("mu", "sigma", "mu_s", "sigma_s")})


def print_table(values: Dict[str, float], notes: Dict[str, str], file=sys.stdout) -> None:
    width = max(map(len, values))
    for m, v in values.items():
        print(f"{m:<{width}}  {v:.6g}" + (f"  ({notes[m]})" if m in notes else ""), file=file)
