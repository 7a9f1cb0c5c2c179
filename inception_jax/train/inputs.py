"""The data adapters of a run: a dataset held on the devices (batches gathered there
by index) or streamed from disk; both hand the runner device batches."""

from __future__ import annotations

import os
from typing import Dict

import jax
import jax.numpy as jnp
import numpy as np

from inception_jax import config as config_lib
from inception_jax.data import source as data_source
from inception_jax.train.parallel import Runner


def load_datasets(config):
    """(train, eval) in-memory datasets for the config (decoded once, cached)."""
    if config.dataset == "synthetic":
        n_cls = config.num_classes if config.num_classes > 0 else 10
        train = data_source.synthetic(config.synthetic_examples, config.image_size, n_cls, config.seed)
        evald = data_source.synthetic(
            max(config.synthetic_examples // 4, 1), config.image_size, n_cls, config.seed, split_seed=1
        )
        return train, evald
    cache = os.path.expanduser(config.cache_dir) if config.cache_dir else None
    train = data_source.load_in_memory(
        config.dataset, config.train_split, config.data_dir, cache, config.bad_records
    )
    evald = data_source.load_in_memory(
        config.dataset, config.eval_split, config.data_dir, cache, config.bad_records
    )
    if train.images.shape[1] != config.image_size:
        raise ValueError(
            f"config.image_size={config.image_size}: the {config.dataset} images are "
            f"{train.images.shape[1]}x{train.images.shape[2]}; set "
            f"--config.image_size={train.images.shape[1]}"
        )
    return train, evald


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The data order of an epoch: a function of (seed, epoch) only, so a resumed run
    continues exactly where the interrupted one stopped."""
    return np.random.default_rng([seed, epoch]).permutation(n).astype(np.int32)


def _summarise_eval(runner: Runner, total) -> Dict[str, float]:
    m = runner.metrics(total)
    return {"accuracy": m["correct"] / max(m["count"], 1), "loss": m["loss_sum"] / max(m["count"], 1)}


class InMemoryData:
    """A dataset held on the accelerator; batches are index arrays into it."""

    def __init__(self, config, train_ds, eval_ds):
        self.config, self.train_ds, self.eval_ds = config, train_ds, eval_ds
        self.num_classes = config.num_classes if config.num_classes > 0 else train_ds.num_classes
        self.num_train = len(train_ds)
        self.steps_per_epoch = self.num_train // config.batch_size
        self.skipped = train_ds.skipped + eval_ds.skipped
        self.max_label = int(train_ds.labels.max()) if train_ds.labels.size else -1
        self._perm_epoch, self._perm, self._ones = -1, None, None

    def place(self, runner: Runner, start_step: int) -> None:
        self.runner = runner
        self.images = runner.put_replicated(self.train_ds.images)
        self.labels = runner.put_replicated(self.train_ds.labels)
        self.eval_images = runner.put_replicated(self.eval_ds.images)
        self.eval_labels = runner.put_replicated(self.eval_ds.labels)

    def train_args(self, step: int) -> tuple:
        epoch, offset = divmod(step, self.steps_per_epoch)
        if epoch != self._perm_epoch:
            self._perm = epoch_permutation(self.config.seed, epoch, self.num_train)
            self._perm_epoch = epoch
        b = self.config.batch_size
        idx = self.runner.put_batch(self._perm[offset * b : (offset + 1) * b])
        if self._ones is None:
            self._ones = self.runner.put_batch(np.ones(b, np.float32))
        images, labels = self.runner.gather(self.images, self.labels, idx)
        return images, labels, self._ones, idx

    def train_steps_args(self, step: int, n: int) -> tuple:
        """The arguments of ``Runner.train_many`` for steps ``step .. step + n - 1`` (of one
        epoch): the dataset on the devices and each step's indices."""
        epoch, offset = divmod(step, self.steps_per_epoch)
        assert offset + n <= self.steps_per_epoch, "a call of several steps stays in one epoch"
        if epoch != self._perm_epoch:
            self._perm = epoch_permutation(self.config.seed, epoch, self.num_train)
            self._perm_epoch = epoch
        b = self.config.batch_size
        idx = self._perm[offset * b : (offset + n) * b].reshape(n, b)
        if self._ones is None:
            self._ones = self.runner.put_batch(np.ones(b, np.float32))
        return self.images, self.labels, self.runner.put_steps(idx), self._ones

    def evaluate(self, state) -> Dict[str, float]:
        return evaluate(
            self.runner,
            state,
            self.eval_images,
            self.eval_labels,
            len(self.eval_ds),
            self.config.eval_batch_size,
        )

    checkpoint_item = None  # the data order is a function of the step alone

    def close(self) -> None:
        pass


class StreamingData:
    """A dataset streamed from disk by grain worker processes (ImageNet); the train
    iterator's state is saved in every checkpoint (``checkpoint_item``)."""

    def __init__(self, config):
        from inception_jax.data.streaming import StreamingLoader

        pc, pi = jax.process_count(), jax.process_index()
        common = dict(
            dataset=config.dataset,
            data_dir=config.data_dir,
            image_size=config.image_size,
            seed=config.seed,
            workers=config.pipeline_workers,
            process_index=pi,
            process_count=pc,
            bad_records=config.bad_records,
        )
        self.config = config
        self.train_loader = StreamingLoader(
            split=config.train_split, batch_size=config.batch_size // pc, train=True, **common
        )
        self.eval_loader = StreamingLoader(
            split=config.eval_split, batch_size=config.eval_batch_size // pc, train=False, **common
        )
        self.num_classes = config.num_classes if config.num_classes > 0 else self.train_loader.num_classes
        self.num_train = self.train_loader.num_examples
        self.steps_per_epoch = self.train_loader.steps_per_epoch
        self.skipped = 0
        self.max_label = -1
        self.checkpoint_item = self.train_loader.iterator()  # position 0 = step 0

    def place(self, runner: Runner, start_step: int) -> None:
        self.runner = runner
        if self.checkpoint_item.position != start_step:
            if start_step:
                print(
                    f"The checkpoint of step {start_step} holds no input-pipeline state: the data "
                    f"continues at step {start_step} by position",
                    flush=True,
                )
            self.checkpoint_item.seek(start_step)

    def train_args(self, step: int) -> tuple:
        self.checkpoint_item.seek(step)  # a no-op unless the loop skipped or repeated a step
        batch = next(self.checkpoint_item)
        put = self.runner.put_local_batch
        # augmented on the host already: the ids only seed on-device augmentation, which is off
        return (
            put(batch["image"]),
            put(batch["label"]),
            put(np.asarray(batch["valid"], np.float32)),
            put(batch["index"]),
        )

    def evaluate(self, state) -> Dict[str, float]:
        total = None
        put = self.runner.put_local_batch
        # every process runs the same number of batches (the smaller shards are padded)
        for batch in self.eval_loader.batches():
            valid = put(np.asarray(batch["valid"], bool))
            m = self.runner.evaluate(state, put(batch["image"]), put(batch["label"]), valid)
            total = m if total is None else jax.tree_util.tree_map(jnp.add, total, m)
        return _summarise_eval(self.runner, total)

    def close(self) -> None:
        self.checkpoint_item.close()


def open_data(config):
    if not config_lib.uses_streaming(config):
        return InMemoryData(config, *load_datasets(config))
    return StreamingData(config)


def evaluate(runner: Runner, state, images, labels, n: int, batch_size: int) -> Dict[str, float]:
    total = None
    for start in range(0, n, batch_size):
        idx = np.arange(start, start + batch_size, dtype=np.int32)
        mask = idx < n
        idx = np.where(mask, idx, 0).astype(np.int32)
        batch = runner.gather(images, labels, runner.put_batch(idx))
        m = runner.evaluate(state, *batch, runner.put_batch(mask))
        total = m if total is None else jax.tree_util.tree_map(jnp.add, total, m)
    return _summarise_eval(runner, total)
