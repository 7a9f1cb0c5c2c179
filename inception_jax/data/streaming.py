"""Streaming input pipeline on grain, for datasets too large to hold in memory (ImageNet).

Records are read with ``tfds.data_source`` (random access into the prepared
ArrayRecord files; no TensorFlow) inside a grain ``MapDataset``; grain's worker
processes decode the JPEGs and apply the Inception augmentation of
:mod:`inception_jax.data.transforms`, and hand whole batches back through shared
memory (no pickled image arrays). Batches are uint8 NHWC; normalisation happens on
the device.

Determinism: the order of an epoch is grain's shuffle of this process's shard
(seeded with ``seed``, reshuffled every epoch) and every crop is drawn from
``numpy.random.default_rng([seed, epoch, record index])``, so a batch is a
function of its position alone. The train iterator's state (:class:`ResumableIterator`)
is saved in each checkpoint; a resumed run sees exactly the examples, in the same
order, that the uninterrupted one would have, whatever ``workers`` it resumes with.

Several processes: each reads its own shard (``index % process_count ==
process_index``). Training uses ``num_examples // process_count`` examples of
every shard, so all processes take the same number of steps; evaluation covers
every example once and pads the smaller shards with masked examples, so every
process runs the same number of batches.

Worker processes are spawned (forking a process that runs JAX is unsafe), so a script
that streams must keep its top-level code under ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
from typing import Iterator, Optional

import numpy as np

from inception_jax.data import transforms
from inception_jax.errors import first_line

PAD = -1  # the record index of an evaluation padding example


def _grain():
    import grain

    # grain reads absl flags; a program that is not an absl app has not parsed them
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    return grain


def _open_source(dataset: str, split: str, data_dir: Optional[str]):
    from inception_jax.data.source import _data_source

    return _data_source(dataset, split, data_dir)


def load_example(source, index: int, epoch: int, size: int, train: bool, seed: int, bad_records: str):
    """One record, decoded and augmented: ``{"image", "label", "valid", "index"}``.
    ``index`` :data:`PAD` gives a masked padding example; an undecodable record raises a
    ValueError naming it, or (``bad_records="skip"``) becomes a masked example."""
    blank = {
        "image": np.zeros((size, size, 3), np.uint8),
        "label": np.int32(0),
        "valid": np.bool_(False),
        "index": np.int32(index),
    }
    if index == PAD:
        return blank
    try:
        record = source[int(index)]
        image = np.asarray(record["image"], np.uint8)
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=-1)
        image = image[..., :3]
        if train:
            image = transforms.train_transform(image, size, np.random.default_rng([seed, epoch, int(index)]))
        else:
            image = transforms.eval_transform(image, size)
        label = np.int32(record["label"])
    except Exception as e:
        if bad_records != "skip":
            raise ValueError(
                f"record {int(index)} could not be decoded ({type(e).__name__}: "
                f"{first_line(e, limit=120)}); set --config.bad_records=skip to skip such records"
            ) from None
        return blank  # masked out of the loss and the metrics
    return {
        "image": np.ascontiguousarray(image),
        "label": label,
        "valid": np.bool_(True),
        "index": np.int32(index),
    }


class _Load:
    """grain map: ``(epoch, record index)`` -> :func:`load_example`. The tfds source is
    opened in the process that uses it (not pickled into the workers)."""

    def __init__(self, dataset, split, data_dir, size, train, seed, bad_records):
        self.args = (dataset, split, data_dir)
        self.size, self.train, self.seed, self.bad_records = size, train, seed, bad_records
        self._source = None

    def __getstate__(self):
        return dict(self.__dict__, _source=None)

    def __call__(self, element):
        if self._source is None:
            self._source = _open_source(*self.args)
        epoch, index = element if isinstance(element, tuple) else (0, element)
        return load_example(self._source, index, epoch, self.size, self.train, self.seed, self.bad_records)


class _ShardIndex:
    """Position j of a process's shard -> record index (PAD past the shard's end)."""

    def __init__(self, process_index: int, process_count: int, num_examples: int):
        self.pi, self.pc, self.n = process_index, process_count, num_examples

    def __call__(self, j):
        index = self.pi + int(j) * self.pc
        return index if index < self.n else PAD


class _WithEpoch:
    def __init__(self, length: int):
        self.length = length

    def __call__(self, position, index):
        return (int(position) // self.length, int(index))


def _die_with_parent(worker_index: int, worker_count: int) -> None:
    """Runs first in each grain worker: on Linux the worker is then killed when the
    process that started it dies, even by SIGKILL, so a killed run leaves no decoding
    processes behind (holding memory and its output pipe)."""
    del worker_index, worker_count
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)


def _iterate(ds, workers: int):
    """An iterator over a ``MapDataset`` of batches: ``workers`` processes (each decoding
    in one thread, batches returned in shared memory), or this process for 0."""
    grain = _grain()
    if workers > 0:
        it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=2))
        it_ds = it_ds.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=4),
            worker_init_fn=_die_with_parent,
        )
    else:
        it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
    return iter(it_ds)


class ResumableIterator:
    """An iterator over an infinite grain dataset of batches, with a checkpointable state.

    The state (JSON bytes, saved by grain's Orbax handler) holds the position in
    batches, the worker count and grain's own iterator state. Restored with the same
    worker count, grain's state is applied; with another, the iterator restarts at the
    saved position (every batch is a function of its position, so nothing changes).
    """

    def __init__(self, dataset, workers: int):
        self._dataset, self._workers = dataset, workers
        self._offset, self._consumed, self._it = 0, 0, None
        self.restarts = 0

    @property
    def position(self) -> int:
        """How many batches were taken, counted from the start of training."""
        return self._offset + self._consumed

    def _start(self, offset: int, grain_state=None) -> None:
        self.close()
        self._it = _iterate(self._dataset[offset:] if offset else self._dataset, self._workers)
        self._offset, self._consumed = offset, 0
        if grain_state is not None:
            self._it.set_state(grain_state)

    def seek(self, position: int) -> None:
        """Continue at batch ``position``."""
        if position != self.position or self._it is None:
            self._start(position)

    def __iter__(self):
        return self

    def __next__(self):
        if self._it is None:
            self._start(self._offset)
        while True:
            try:
                batch = next(self._it)
                break
            except RuntimeError as e:
                # a worker died (OOM killer, a signal): start new ones at the same position;
                # the batches do not change (each is a function of its position)
                if "terminated unexpectedly" not in str(e):
                    raise
                if self.restarts >= 3:
                    raise RuntimeError(
                        "data loading workers keep dying (3 restarts); lower "
                        "--config.pipeline_workers or check memory"
                    ) from None
                self.restarts += 1
                self._start(self.position)
        self._consumed += 1
        return batch

    def get_state(self) -> bytes:
        if self._it is None:
            self._start(self._offset)
        return json.dumps(
            {
                "position": self.position,
                "offset": self._offset,
                "workers": self._workers,
                "grain": self._it.get_state(),
            }
        ).encode()

    def set_state(self, state: bytes) -> None:
        s = json.loads(state)
        if s["workers"] == self._workers:
            self._start(int(s["offset"]), s["grain"])
            self._consumed = int(s["position"]) - int(s["offset"])
        else:
            self._start(int(s["position"]))

    def start_prefetch(self) -> None:  # called by grain's Orbax handler after a restore
        pass

    def close(self) -> None:
        if self._it is not None and hasattr(self._it, "close"):
            self._it.close()
        self._it = None


class StreamingLoader:
    """Batches of one split, this process's shard: dicts of ``image`` uint8 (B, S, S, 3),
    ``label`` int32, ``valid`` bool (False: padding or a skipped record) and ``index``
    (the record index, -1 for padding)."""

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
        bad_records: str = "error",
    ):
        if bad_records not in ("error", "skip"):
            raise ValueError(f"bad_records={bad_records!r}: expected 'error' or 'skip'")
        source = _open_source(dataset, split, data_dir)  # fails early with a clear line
        self.num_examples = len(source)
        self.num_classes = int(source.dataset_info.features["label"].num_classes)
        self.image_size, self.batch_size, self.train = image_size, batch_size, train
        self.seed, self.workers = seed, workers
        self.process_index, self.process_count = process_index, process_count
        self._load = _Load(dataset, split, data_dir, image_size, train, seed, bad_records)

    @property
    def shard(self) -> np.ndarray:
        """The record indices this process reads (training: the first ``n // processes``)."""
        stop = self.process_count * (self.num_examples // self.process_count) if self.train else None
        return np.arange(self.process_index, self.num_examples, self.process_count)[:stop]

    @property
    def steps_per_epoch(self) -> int:
        # every process takes the same number of steps: the smallest shard decides
        return (self.num_examples // self.process_count) // self.batch_size

    @property
    def eval_steps(self) -> int:
        # the largest shard decides; smaller ones are padded with masked examples
        return math.ceil(math.ceil(self.num_examples / self.process_count) / self.batch_size)

    def dataset(self):
        """The grain ``MapDataset`` of batches: infinite for training, one pass for evaluation."""
        grain = _grain()
        if self.train:
            length = self.num_examples // self.process_count
            ds = grain.MapDataset.range(length).map(
                _ShardIndex(self.process_index, self.process_count, 1 << 62)
            )
            ds = ds.shuffle(seed=self.seed).map_with_index(_WithEpoch(length))
            ds = ds.map(self._load).batch(self.batch_size, drop_remainder=True)
            return ds.repeat()
        ds = grain.MapDataset.range(self.eval_steps * self.batch_size)
        ds = ds.map(_ShardIndex(self.process_index, self.process_count, self.num_examples)).map(self._load)
        return ds.batch(self.batch_size)

    def iterator(self) -> ResumableIterator:
        """Training: the resumable iterator over every step's batch (position 0 = step 0)."""
        if not self.train:
            raise ValueError("iterator() is for training splits; use batches() to evaluate")
        return ResumableIterator(self.dataset(), self.workers)

    def batches(self, start_step: int = 0) -> Iterator[dict]:
        """Training: batches from ``start_step`` on (endless); evaluation: one pass."""
        if self.train:
            it = self.iterator()
            it.seek(start_step)
            try:
                yield from it
            finally:
                it.close()
            return
        it = _iterate(self.dataset(), self.workers)
        try:
            yield from it
        finally:
            if hasattr(it, "close"):
                it.close()
