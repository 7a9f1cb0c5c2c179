"""Streaming input pipeline for datasets too large to hold in memory (ImageNet).

Records are read with ``tfds.data_source`` (random access into ArrayRecord
files) by worker processes, which decode the JPEGs and apply Inception-style
augmentation on the host: torchvision's ``RandomResizedCrop`` (scale 0.08-1,
aspect 3/4-4/3, bilinear) and a horizontal flip for training; resize of the
shorter side to ``image_size / 0.875`` and a center crop for evaluation.
Batches come out as uint8 NHWC arrays; normalisation happens on the device.

Workers are started with the "spawn" method (forking a process that runs JAX
is unsafe), so a script that trains on a streaming dataset must keep its
top-level code under ``if __name__ == "__main__":`` (train.py does).

Each process reads only its own shard (``index % process_count ==
process_index``). The order of an epoch and every crop are functions of
``(seed, epoch, index)``, so a resumed run sees exactly the examples (and
augmentations) the interrupted one would have.
"""

from __future__ import annotations

import collections
import concurrent.futures
import math
import multiprocessing
from concurrent.futures.process import BrokenProcessPool
from typing import Iterator, Optional, Tuple

import numpy as np

_WORKER_SOURCE = None


def _open_source(dataset: str, split: str, data_dir: Optional[str]):
    from inception_jax.data.source import _data_source

    return _data_source(dataset, split, data_dir)


def _init_worker(dataset, split, data_dir):
    global _WORKER_SOURCE
    import signal

    # Ctrl-C reaches the whole process group: the main process decides when to stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER_SOURCE = _open_source(dataset, split, data_dir)


def random_resized_crop_box(
    height: int, width: int, rng: np.random.Generator, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)
) -> Tuple[int, int, int, int]:
    """(top, left, h, w) of torchvision's ``RandomResizedCrop.get_params``: 10 tries at
    a random area/aspect, else a center crop with the aspect clamped to ``ratio``."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def resized_crop(image: np.ndarray, top: int, left: int, h: int, w: int, size: int) -> np.ndarray:
    """Crop (top, left, h, w) and resize to size x size, bilinear (PIL), like torchvision."""
    from PIL import Image

    pil = Image.fromarray(image).crop((left, top, left + w, top + h))
    return np.asarray(pil.resize((size, size), Image.BILINEAR), np.uint8)


def train_transform(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    top, left, h, w = random_resized_crop_box(image.shape[0], image.shape[1], rng)
    out = resized_crop(image, top, left, h, w, size)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return out


def eval_transform(image: np.ndarray, size: int, crop_fraction: float = 0.875) -> np.ndarray:
    from PIL import Image

    resize = int(math.floor(size / crop_fraction))
    h, w = image.shape[:2]
    if h < w:
        nh, nw = resize, int(resize * w / h)
    else:
        nh, nw = int(resize * h / w), resize
    pil = Image.fromarray(image).resize((nw, nh), Image.BILINEAR)
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    return np.asarray(pil.crop((left, top, left + size, top + size)), np.uint8)


def _load_batch(args, source=None):
    indices, size, train, seed, epoch, bad_records = args
    source = source if source is not None else _WORKER_SOURCE
    images, labels, valid = [], [], []
    for idx in indices:
        try:
            record = source[int(idx)]
            image = np.asarray(record["image"], np.uint8)
            if image.ndim == 2:
                image = np.repeat(image[..., None], 3, axis=-1)
            image = image[..., :3]
            if train:
                image = train_transform(image, size, np.random.default_rng([seed, epoch, int(idx)]))
            else:
                image = eval_transform(image, size)
            images.append(image)
            labels.append(int(record["label"]))
            valid.append(True)
        except Exception as e:
            if bad_records != "skip":
                raise ValueError(
                    f"record {int(idx)} could not be decoded ({type(e).__name__}: "
                    f"{str(e)[:120]}); set --config.bad_records=skip to skip such records"
                ) from e
            images.append(np.zeros((size, size, 3), np.uint8))
            labels.append(0)
            valid.append(False)  # masked out of the loss and metrics
    return np.stack(images), np.asarray(labels, np.int32), np.asarray(valid)


class StreamingLoader:
    """Yields (images uint8, labels int32, valid bool) batches of this process's shard."""

    def __init__(
        self,
        dataset: str,
        split: str,
        data_dir: Optional[str],
        image_size: int,
        batch_size: int,
        train: bool,
        seed: int = 0,
        workers: int = 4,
        process_index: int = 0,
        process_count: int = 1,
        prefetch: int = 4,
        bad_records: str = "error",
    ):
        source = _open_source(dataset, split, data_dir)  # fails early with a clear line
        self._source = source  # workers=0 reads through it
        self.num_examples = len(source)
        self.num_classes = int(source.dataset_info.features["label"].num_classes)
        self.shard = np.arange(process_index, self.num_examples, process_count, dtype=np.int64)
        self.dataset, self.split, self.data_dir = dataset, split, data_dir
        self.image_size, self.batch_size, self.train = image_size, batch_size, train
        self.seed, self.workers, self.prefetch = seed, workers, prefetch
        self.bad_records = bad_records
        self.process_count = process_count
        self._pool = None
        self.restarts = 0
        self._generation = 0

    @property
    def steps_per_epoch(self) -> int:
        # every process takes the same number of steps: the smallest shard decides
        return (self.num_examples // self.process_count) // self.batch_size

    def epoch_order(self, epoch: int) -> np.ndarray:
        if not self.train:
            return self.shard
        return self.shard[np.random.default_rng([self.seed, epoch]).permutation(len(self.shard))]

    def _pool_or_none(self):
        if self.workers <= 0:
            return None
        if self._pool is None:
            # an executor (not multiprocessing.Pool): a worker that dies (OOM killer, a signal)
            # fails its batches with BrokenProcessPool instead of leaving them waiting forever
            self._pool = concurrent.futures.ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(self.dataset, self.split, self.data_dir),
            )
        return self._pool

    def _tasks(self, start_step: int) -> Iterator[tuple]:
        if self.train:
            step = start_step
            while True:
                epoch, offset = divmod(step, max(self.steps_per_epoch, 1))
                order = self.epoch_order(epoch)
                idx = order[offset * self.batch_size : (offset + 1) * self.batch_size]
                yield (idx, self.image_size, True, self.seed, epoch, self.bad_records), None
                step += 1
        else:
            order = self.shard
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                pad = self.batch_size - len(idx)
                yield (idx, self.image_size, False, self.seed, 0, self.bad_records), pad

    def batches(self, start_step: int = 0) -> Iterator[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
        pending: collections.deque = collections.deque()
        tasks = self._tasks(start_step)
        exhausted = False
        while True:
            while not exhausted and len(pending) < max(self.prefetch, 1):
                try:
                    args, pad = next(tasks)
                except StopIteration:
                    exhausted = True
                    break
                pending.append((args, self._submit(args), pad, self._generation))
            if not pending:
                return
            args, result, pad, generation = pending.popleft()
            images, labels, valid = self._result(args, result, generation)
            if pad:
                images = np.concatenate([images, np.zeros((pad,) + images.shape[1:], np.uint8)])
                labels = np.concatenate([labels, np.zeros((pad,), np.int32)])
                valid = np.concatenate([valid, np.zeros((pad,), bool)])
            yield images, labels, valid

    def _submit(self, args):
        pool = self._pool_or_none()
        return pool.submit(_load_batch, args) if pool else _load_batch(args, self._source)

    def _result(self, args, result, generation: int):
        if not isinstance(result, concurrent.futures.Future):
            return result
        try:
            return result.result()
        except (BrokenProcessPool, concurrent.futures.CancelledError):
            # a worker died: start new ones and decode the lost batches again (same args,
            # same augmentation: the randomness is a function of the indices, seed and epoch)
            if generation == self._generation:  # the first batch of the broken pool to notice
                self.close()
                self._generation += 1
                self.restarts += 1
                if self.restarts > 3:
                    raise RuntimeError(
                        "data loading workers keep dying (3 restarts); lower "
                        "--config.pipeline_workers or check memory"
                    ) from None
            return self._result(args, self._submit(args), self._generation)

    def close(self) -> None:
        if self._pool is not None:
            procs = list((getattr(self._pool, "_processes", None) or {}).values())
            self._pool.shutdown(wait=False, cancel_futures=True)
            for proc in procs:
                proc.kill()  # do not wait for batches nobody will read
            self._pool = None
