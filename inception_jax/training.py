"""Training: state, optimiser and schedule, the per-device train/eval steps, and
``train_and_evaluate(config, workdir)``.

The steps are written for one device with a named axis (``AXIS``): gradients and
metrics are averaged with ``lax.pmean`` / ``psum``, so the same function runs under
``jax.jit`` + ``jax.shard_map`` (the default) and under ``jax.pmap``
(``config.parallel="pmap"``). With ``config.sync_batch_norm`` (the default)
BatchNorm statistics are those of the global batch and dropout masks are drawn
for the global batch, so a global batch gives the same update on 1 or N devices.
On a CPU the steps are traced with the CPU kernels (``config.cpu_kernels``,
``inception_jax.backends.cpu``); elsewhere they are the plain program.
"""

from __future__ import annotations

import functools
import math
import os
import time
from typing import Any, Dict, Optional, Tuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state
from jax import lax

from inception_jax import config as config_lib
from inception_jax import models
from inception_jax.backends import cpu as cpu_backend
from inception_jax.data import augment
from inception_jax.data import source as data_source

AXIS = "data"


class TrainState(train_state.TrainState):
    batch_stats: Any = None


# ----------------------------------------------------------------------------
# Optimiser and schedule
# ----------------------------------------------------------------------------


def make_schedule(
    config: ml_collections.ConfigDict, steps_per_epoch: int, total_steps: int
) -> optax.Schedule:
    """Learning rate per step. ``step`` is torch's StepLR (decay by ``gamma`` every
    ``step_size_epochs`` epochs), ``exponential`` the same with fractional-epoch
    periods allowed (Inception v3: 0.94 every 2 epochs), ``cosine`` decays to 0 over
    the run; ``warmup_epochs`` prepends a linear warm-up from 0."""
    base = config.learning_rate
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    if config.schedule == "constant":
        main = optax.constant_schedule(base)
    elif config.schedule in ("step", "exponential"):
        period = max(1, int(round(config.step_size_epochs * steps_per_epoch)))
        main = optax.exponential_decay(base, period, config.gamma, staircase=True)
    elif config.schedule == "cosine":
        main = optax.cosine_decay_schedule(base, max(1, total_steps - warmup))
    else:
        raise ValueError(
            f"config.schedule={config.schedule!r}: expected one of {', '.join(config_lib.SCHEDULES)}"
        )
    if warmup > 0:
        return optax.join_schedules([optax.linear_schedule(0.0, base, warmup), main], [warmup])
    return main


def make_optimizer(config: ml_collections.ConfigDict, schedule: optax.Schedule):
    chain = []
    if config.grad_clip_norm > 0:
        chain.append(optax.clip_by_global_norm(config.grad_clip_norm))
    if config.weight_decay > 0 and config.optimizer != "adamw":
        chain.append(optax.add_decayed_weights(config.weight_decay))  # torch-style L2
    if config.optimizer == "sgd":
        chain.append(optax.sgd(schedule, momentum=config.momentum or None, nesterov=config.nesterov))
    elif config.optimizer == "adam":
        chain.append(optax.adam(schedule, eps=config.adam_eps))
    elif config.optimizer == "adamw":
        chain.append(optax.adamw(schedule, eps=config.adam_eps, weight_decay=config.weight_decay))
    elif config.optimizer == "rmsprop":
        chain.append(
            optax.rmsprop(
                schedule, decay=config.rmsprop_decay, eps=config.rmsprop_eps, momentum=config.momentum or None
            )
        )
    else:
        raise ValueError(
            f"config.optimizer={config.optimizer!r}: expected one of {', '.join(config_lib.OPTIMIZERS)}"
        )
    return optax.chain(*chain)


# ----------------------------------------------------------------------------
# Losses and the per-device steps
# ----------------------------------------------------------------------------


def cross_entropy(logits: jax.Array, labels: jax.Array, smoothing: float = 0.0) -> jax.Array:
    """Per-example softmax cross-entropy with optional label smoothing (float32)."""
    onehot = jax.nn.one_hot(labels, logits.shape[-1])
    if smoothing > 0:
        onehot = optax.smooth_labels(onehot, smoothing)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), onehot)


def combined_loss(
    outputs, labels: jax.Array, aux_weight: float, smoothing: float, weights: Optional[jax.Array] = None
):
    """Main loss + ``aux_weight`` x each aux loss; ``outputs`` is logits or (main, aux...).

    A (weighted) mean over examples; ``weights`` (0/1) mask examples out. Returns
    the loss and the main logits.
    """
    outs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    per_example = cross_entropy(outs[0], labels, smoothing)
    for aux in outs[1:]:
        per_example = per_example + aux_weight * cross_entropy(aux, labels, smoothing)
    if weights is None:
        return jnp.mean(per_example), outs[0]
    return jnp.sum(per_example * weights) / jnp.maximum(jnp.sum(weights), 1.0), outs[0]


@flax.struct.dataclass
class StepConfig:
    """The static part of a step (hashable, closed over by the compiled function)."""

    aux_weight: float = 0.3
    label_smoothing: float = 0.0
    crop_padding: int = 0
    random_flip: bool = False
    mean: Tuple[float, ...] = (0.0, 0.0, 0.0)
    std: Tuple[float, ...] = (1.0, 1.0, 1.0)
    resize_to: int = 0  # bilinear resize on the device after augmentation (0: off)
    cpu_kernels: bool = False  # trace the model with inception_jax.backends.cpu's kernels


def prepare_images(images_uint8, indices, key, cfg: StepConfig, dtype, train: bool):
    if train and (cfg.crop_padding > 0 or cfg.random_flip):
        keys = augment.example_keys(key, indices)
        images_uint8 = augment.random_crop_flip(images_uint8, keys, cfg.crop_padding, cfg.random_flip)
    x = augment.normalize(images_uint8, cfg.mean, cfg.std, jnp.float32 if cfg.resize_to else dtype)
    if cfg.resize_to and x.shape[1:3] != (cfg.resize_to, cfg.resize_to):
        x = jax.image.resize(x, (x.shape[0], cfg.resize_to, cfg.resize_to, x.shape[3]), "bilinear")
    return x.astype(dtype)


def train_on_batch(
    state: TrainState,
    images_uint8: jax.Array,
    labels: jax.Array,
    weights: jax.Array,
    example_ids: jax.Array,
    key: jax.Array,
    *,
    model,
    cfg: StepConfig,
    axis_name: Optional[str] = AXIS,
):
    """One optimisation step on this device's examples (uint8 NHWC, before augmentation).

    ``example_ids`` seed the per-example augmentation (dataset indices), so the
    augmented global batch does not depend on the device count; ``weights`` (0 or
    1) mask examples out (skipped records). Returns the new state and summed
    metrics (loss_sum, correct, count).
    """
    step_key = jax.random.fold_in(key, state.step)
    aug_key, dropout_key = jax.random.split(step_key)
    per_device_stats = axis_name is not None and model.axis_name is None
    if per_device_stats:
        # without sync_batch_norm the model's dropout draws per device: give each its own key
        # (with it, every device draws the global batch's mask from this same key)
        dropout_key = jax.random.fold_in(dropout_key, lax.axis_index(axis_name))
    x = prepare_images(images_uint8, example_ids, aug_key, cfg, model.dtype, train=True)
    w = weights.astype(jnp.float32)
    n = jnp.sum(w)

    def loss_fn(params):
        outputs, updates = model.apply(
            {"params": params, "batch_stats": state.batch_stats},
            x,
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": dropout_key},
        )
        loss, logits = combined_loss(outputs, labels, cfg.aux_weight, cfg.label_smoothing, w)
        return loss, (logits, updates["batch_stats"])

    with cpu_backend.cpu_kernels(cfg.cpu_kernels):
        (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    metrics = {"loss_sum": loss * n, "correct": jnp.sum((jnp.argmax(logits, -1) == labels) * w), "count": n}
    if axis_name is not None:
        grads = lax.pmean(grads, axis_name)
        metrics = lax.psum(metrics, axis_name)
        if per_device_stats:  # one replicated state: average the per-device running statistics
            batch_stats = lax.pmean(batch_stats, axis_name)
    new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    return new_state, metrics


def train_step(
    state: TrainState,
    images: jax.Array,
    labels: jax.Array,
    indices: jax.Array,
    key: jax.Array,
    *,
    model,
    cfg: StepConfig,
    axis_name: Optional[str] = AXIS,
):
    """In-memory datasets: ``images``/``labels`` are the whole dataset on the device,
    ``indices`` this device's examples (gathered and augmented on the device)."""
    return train_on_batch(
        state,
        images[indices],
        labels[indices],
        jnp.ones(indices.shape, jnp.float32),
        indices,
        key,
        model=model,
        cfg=cfg,
        axis_name=axis_name,
    )


def train_step_streamed(
    state: TrainState,
    images: jax.Array,
    labels: jax.Array,
    weights: jax.Array,
    key: jax.Array,
    *,
    model,
    cfg: StepConfig,
    axis_name: Optional[str] = AXIS,
):
    """Streaming datasets: this device's batch, already augmented on the host."""
    ids = jnp.arange(labels.shape[0], dtype=jnp.int32)
    return train_on_batch(state, images, labels, weights, ids, key, model=model, cfg=cfg, axis_name=axis_name)


def eval_on_batch(
    state: TrainState, images_uint8, labels, mask, *, model, cfg: StepConfig, axis_name: Optional[str] = AXIS
):
    """Summed correct predictions and loss over this device's (masked) examples."""
    x = prepare_images(images_uint8, None, None, cfg, model.dtype, train=False)
    with cpu_backend.cpu_kernels(cfg.cpu_kernels):
        logits = model.apply({"params": state.params, "batch_stats": state.batch_stats}, x, train=False)
    mask = mask.astype(jnp.float32)
    metrics = {
        "correct": jnp.sum((jnp.argmax(logits, -1) == labels) * mask),
        "loss_sum": jnp.sum(cross_entropy(logits, labels) * mask),
        "count": jnp.sum(mask),
    }
    if axis_name is not None:
        metrics = lax.psum(metrics, axis_name)
    return metrics


def eval_step(
    state: TrainState,
    images,
    labels,
    indices,
    mask,
    *,
    model,
    cfg: StepConfig,
    axis_name: Optional[str] = AXIS,
):
    return eval_on_batch(
        state, images[indices], labels[indices], mask, model=model, cfg=cfg, axis_name=axis_name
    )


# ----------------------------------------------------------------------------
# Running the steps on devices: shard_map (default) or pmap
# ----------------------------------------------------------------------------


class Runner:
    """Compiles the per-device steps for all local devices and moves data/state.

    The canonical state (what is checkpointed) is replicated over the mesh; the
    pmap runner keeps a stacked copy internally.
    """

    def __init__(
        self, model, cfg: StepConfig, parallel: str = "shard_map", devices=None, streaming: bool = False
    ):
        from jax.sharding import Mesh, NamedSharding
        from jax.sharding import PartitionSpec as P

        self.devices = list(devices if devices is not None else jax.devices())
        self.num_devices = len(self.devices)
        self.parallel = parallel
        self.mesh = Mesh(np.array(self.devices), (AXIS,))
        self.replicated = NamedSharding(self.mesh, P())
        self.sharded = NamedSharding(self.mesh, P(AXIS))
        self.streaming = streaming
        step = functools.partial(
            train_step_streamed if streaming else train_step, model=model, cfg=cfg, axis_name=AXIS
        )
        evaluate = functools.partial(
            eval_on_batch if streaming else eval_step, model=model, cfg=cfg, axis_name=AXIS
        )
        # in-memory: (state, dataset images, dataset labels, indices, key)
        # streaming: (state, batch images, batch labels, weights, key)
        data = (P(AXIS), P(AXIS)) if streaming else (P(), P())
        if parallel == "shard_map":
            self._train = jax.jit(
                jax.shard_map(
                    step,
                    mesh=self.mesh,
                    in_specs=(P(), *data, P(AXIS), P()),
                    out_specs=(P(), P()),
                    check_vma=False,
                ),
                donate_argnums=(0,),
            )
            eval_specs = (P(), P(AXIS), P(AXIS), P(AXIS)) if streaming else (P(), P(), P(), P(AXIS), P(AXIS))
            self._eval = jax.jit(
                jax.shard_map(evaluate, mesh=self.mesh, in_specs=eval_specs, out_specs=P(), check_vma=False)
            )
        elif parallel == "pmap":
            self._train = jax.pmap(
                step, axis_name=AXIS, in_axes=(0, 0, 0, 0, None), donate_argnums=(0,), devices=self.devices
            )
            self._eval = jax.pmap(evaluate, axis_name=AXIS, devices=self.devices)
        else:
            raise ValueError(f"parallel={parallel!r}: expected 'shard_map' or 'pmap'")

    # -- placement --
    def put_replicated(self, tree):
        if self.parallel == "pmap":  # one copy per device along a new leading axis
            n = self.num_devices
            return jax.tree_util.tree_map(
                lambda x: jax.device_put(
                    np.broadcast_to(np.asarray(x)[None], (n,) + np.shape(x)), self.sharded
                ),
                tree,
            )
        return jax.device_put(tree, self.replicated)

    def unreplicate(self, tree):
        if self.parallel == "pmap":
            return jax.tree_util.tree_map(lambda x: x[0], tree)
        return tree

    def put_local_batch(self, array: np.ndarray):
        """This process's part of a global batch (streaming: each process reads its own shard)."""
        if self.parallel == "pmap":
            return jax.device_put(array.reshape(self.num_devices, -1, *array.shape[1:]), self.sharded)
        return jax.make_array_from_process_local_data(self.sharded, array)

    def put_batch(self, array: np.ndarray):
        """A global batch (the same on every process): each process feeds its own part."""
        if self.parallel == "shard_map" and jax.process_count() > 1:
            per = array.shape[0] // jax.process_count()
            array = array[jax.process_index() * per : (jax.process_index() + 1) * per]
        return self.put_local_batch(array)

    # -- steps --
    def train(self, state, *args):
        return self._train(state, *args)

    def evaluate(self, state, *args):
        return self._eval(state, *args)

    def metrics(self, m) -> Dict[str, float]:
        m = jax.device_get(m)
        if self.parallel == "pmap":
            m = jax.tree_util.tree_map(lambda x: x[0], m)
        return {k: float(v) for k, v in m.items()}


def create_train_state(model, rng, image_size: int, tx) -> TrainState:
    variables = models.init(model, rng, (1, image_size, image_size, 3))
    return TrainState.create(
        apply_fn=model.apply, params=variables["params"], batch_stats=variables.get("batch_stats", {}), tx=tx
    )


# ----------------------------------------------------------------------------
# The whole run
# ----------------------------------------------------------------------------


def init_from_pretrained(state: TrainState, config) -> Tuple[TrainState, str]:
    """``state`` with the weights of ``config.init_from`` (a torch state_dict or a
    ``save_pretrained`` directory) wherever name and shape agree. Classifier / aux
    heads whose shape differs (another class count) or that the file lacks keep
    their fresh initialisation; any other difference is an error (another model)."""
    from inception_jax import pretrained

    path = os.path.expanduser(config.init_from)
    _, loaded = pretrained.load_pretrained(config.model, path, download=False)
    info = models.get_info(config.model)
    heads = {info.classifier, *info.aux_prefixes}
    fresh, merged = [], {}
    for col, ours in (("params", state.params), ("batch_stats", state.batch_stats)):
        theirs = flax.traverse_util.flatten_dict(flax.core.unfreeze(loaded.get(col, {})))
        out = {}
        for key, value in flax.traverse_util.flatten_dict(flax.core.unfreeze(ours)).items():
            src = theirs.get(key)
            if src is not None and tuple(np.shape(src)) == tuple(value.shape):
                out[key] = jnp.asarray(src, value.dtype)
            elif key[0] in heads:
                out[key] = value
                fresh.append(key[0])
            else:
                got = "missing" if src is None else f"of shape {tuple(np.shape(src))}"
                raise ValueError(
                    f"config.init_from={config.init_from!r}: {'/'.join(key)} is {got}, "
                    f"{config.model} needs {tuple(value.shape)}; use weights of "
                    f"{config.model} or another --config.model"
                )
        merged[col] = flax.traverse_util.unflatten_dict(out)
    n = sum(len(flax.traverse_util.flatten_dict(flax.core.unfreeze(t))) for t in merged.values())
    heads_note = f"; new heads: {', '.join(sorted(set(fresh)))}" if fresh else ""
    note = f"Initialised from {config.init_from}: {n - len(fresh)} of {n} arrays loaded{heads_note}"
    return state.replace(params=merged["params"], batch_stats=merged["batch_stats"]), note


def build_model(config, num_classes: int):
    kwargs = dict(config.model_kwargs)
    dtype = jnp.bfloat16 if config.half_precision else jnp.float32
    # sync_batch_norm: statistics (and dropout masks) of the global batch, the same update
    # on any device count; off: per-device statistics (PyTorch DDP's default), no
    # collective in the forward pass, and an update that depends on the device count
    axis_name = AXIS if config.sync_batch_norm else None
    return models.create(config.model, num_classes=num_classes, dtype=dtype, axis_name=axis_name, **kwargs)


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


def step_config(config, streaming: bool = False) -> StepConfig:
    # streaming pipelines augment on the host (random-resized crop + flip)
    return StepConfig(
        aux_weight=float(config.aux_loss_weight),
        label_smoothing=float(config.label_smoothing),
        crop_padding=0 if streaming else int(config.crop_padding),
        random_flip=False if streaming else bool(config.random_flip),
        mean=tuple(float(v) for v in config.mean),
        std=tuple(float(v) for v in config.std),
        resize_to=0 if streaming else int(config.get("resize_to", 0)),
        cpu_kernels=cpu_backend.resolve(config.cpu_kernels),
    )


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
        self._perm_epoch, self._perm = -1, None

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
        idx = self._perm[offset * b : (offset + 1) * b]
        return self.images, self.labels, self.runner.put_batch(idx)

    def evaluate(self, state) -> Dict[str, float]:
        return evaluate(
            self.runner,
            state,
            self.eval_images,
            self.eval_labels,
            len(self.eval_ds),
            self.config.eval_batch_size,
        )

    def close(self) -> None:
        pass


class StreamingData:
    """A dataset streamed from disk by worker processes (ImageNet)."""

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

    def place(self, runner: Runner, start_step: int) -> None:
        self.runner = runner
        self._batches = self.train_loader.batches(start_step)

    def train_args(self, step: int) -> tuple:
        images, labels, valid = next(self._batches)
        put = self.runner.put_local_batch
        return put(images), put(labels), put(valid.astype(np.float32))

    def evaluate(self, state) -> Dict[str, float]:
        total = None
        put = self.runner.put_local_batch
        for images, labels, valid in self.eval_loader.batches():
            m = self.runner.evaluate(state, put(images), put(labels), put(valid))
            total = m if total is None else jax.tree_util.tree_map(jnp.add, total, m)
        return _summarise_eval(self.runner, total)

    def close(self) -> None:
        self.train_loader.close()
        self.eval_loader.close()


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
        m = runner.evaluate(state, images, labels, runner.put_batch(idx), runner.put_batch(mask))
        total = m if total is None else jax.tree_util.tree_map(jnp.add, total, m)
    return _summarise_eval(runner, total)


def _check_finite(loss: float, where: str, ckpt) -> None:
    if not math.isfinite(loss):
        raise FloatingPointError(
            f"training loss became {loss} {where}; stopped without saving; the last good checkpoint "
            f"(step {ckpt.latest_step()}) is kept. Lower --config.learning_rate or enable "
            "--config.grad_clip_norm"
        )


class StopRequest:
    """Turns SIGTERM / SIGINT into a request to stop after the current step (with a
    checkpoint). A second signal acts as usual (kills / KeyboardInterrupt). Only in
    the main thread of a single-process run: with several processes, JAX's
    preemption service catches SIGTERM and Orbax's sync point picks the step."""

    SIGNALS = ("SIGTERM", "SIGINT")

    def __init__(self):
        self.signal_name: Optional[str] = None
        self._previous = {}

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread() and jax.process_count() == 1:
            for name in self.SIGNALS:
                sig = getattr(signal, name)
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        import signal

        if self.signal_name is not None:  # second signal: the usual behaviour
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
            signal.raise_signal(signum)
            return
        self.signal_name = signal.Signals(signum).name

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def __exit__(self, *exc):
        import signal

        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        return False


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
    """Trains ``config`` in ``workdir`` (resuming from its latest checkpoint) and
    returns the final metrics (and the final state under ``"state"``)."""
    config_lib.validate(config)
    num_devices = jax.device_count()
    if config.batch_size % num_devices or config.eval_batch_size % num_devices:
        raise ValueError(
            f"config.batch_size={config.batch_size} / eval_batch_size="
            f"{config.eval_batch_size}: expected multiples of the {num_devices} "
            "devices; change them or the device count"
        )
    workdir = os.path.abspath(os.path.expanduser(workdir))
    with StopRequest() as stop:
        return _train(config, workdir, stop)


def _train(config, workdir: str, stop: StopRequest) -> Dict[str, Any]:
    from inception_jax import checkpoint as ckpt_lib
    from inception_jax import metrics as metrics_lib

    main_process = jax.process_index() == 0
    say = print if main_process else (lambda text: None)
    ckpt = ckpt_lib.Checkpointer(workdir, config, log=say)  # checks workdir and config early
    data = open_data(config)
    num_classes = data.num_classes
    if data.max_label >= num_classes:
        raise ValueError(
            f"config.num_classes={num_classes}: the data has label {data.max_label}; "
            "raise num_classes or use -1"
        )
    steps_per_epoch = data.steps_per_epoch
    if steps_per_epoch < 1:
        raise ValueError(
            f"config.batch_size={config.batch_size}: larger than the {data.num_train} "
            "training examples; lower it"
        )
    total_steps = (
        config.num_train_steps
        if config.num_train_steps > 0
        else int(math.ceil(config.num_epochs * steps_per_epoch))
    )

    model = build_model(config, num_classes)
    schedule = make_schedule(config, steps_per_epoch, total_steps)
    tx = make_optimizer(config, schedule)
    init_rng, data_key = jax.random.split(jax.random.PRNGKey(config.seed))
    state = create_train_state(model, init_rng, config_lib.input_size(config), tx)
    state, start_step = ckpt.restore_latest(state)
    if start_step == 0 and config.init_from:
        state, note = init_from_pretrained(state, config)
        say(note)
    streaming = isinstance(data, StreamingData)
    runner = Runner(model, step_config(config, streaming), config.parallel, streaming=streaming)
    state = runner.put_replicated(state)
    data.place(runner, start_step)
    data_key = runner.put_replicated(data_key) if config.parallel == "shard_map" else data_key

    logger = metrics_lib.MetricsLogger(
        workdir,
        total_steps,
        config.batch_size,
        resumed=start_step > 0,
        write_files=main_process,
        quiet=not main_process,
    )
    if start_step >= total_steps:
        return _already_complete(config, workdir, state, runner, data, logger, start_step, total_steps)
    if start_step > 0:
        logger.line(f"Resumed from step {start_step}")
    if data.skipped:
        logger.line(f"Skipped {data.skipped} undecodable records")
    stop_at = config.stop_at_step if config.stop_at_step > 0 else total_steps
    last_eval: Dict[str, float] = {}
    epoch_metrics = None
    window = None
    step = start_step
    stopped_by = None
    t_window = time.time()

    def finish_epoch(epoch_index: int, partial: bool):
        nonlocal epoch_metrics, last_eval
        train_m = runner.metrics(epoch_metrics) if epoch_metrics is not None else None
        ev = data.evaluate(state)
        last_eval = ev
        tl = train_m["loss_sum"] / train_m["count"] if train_m else float("nan")
        ta = train_m["correct"] / train_m["count"] if train_m else float("nan")
        if train_m:
            _check_finite(tl, f"in epoch {epoch_index + 1} (step {step})", ckpt)
        logger.epoch(
            epoch_index + 1,
            step,
            tl,
            ta,
            ev["accuracy"],
            ev["loss"],
            float(schedule(step - 1)),
            partial=partial,
        )
        ckpt.save(step, runner.unreplicate(state), eval_accuracy=ev["accuracy"], force=True)
        epoch_metrics = None

    try:
        while step < min(total_steps, stop_at):
            state, m = runner.train(state, *data.train_args(step), data_key)
            step += 1
            # A save started after the previous step commits while this one computes; any
            # reported step after a checkpoint step means that checkpoint is on disk.
            ckpt.wait()
            epoch_metrics = m if epoch_metrics is None else jax.tree_util.tree_map(jnp.add, epoch_metrics, m)
            window = m if window is None else jax.tree_util.tree_map(jnp.add, window, m)
            if step % config.log_every_steps == 0 or step == total_steps:
                w = runner.metrics(window)
                loss = w["loss_sum"] / max(w["count"], 1)
                _check_finite(loss, f"at step {step}", ckpt)
                now = time.time()
                logger.progress(step, loss, w["count"] / max(now - t_window, 1e-9))
                window, t_window = None, now
            if stop.requested or ckpt.reached_preemption(step):
                stopped_by = stop.signal_name or "a preemption notice"
                ckpt.save(step, runner.unreplicate(state), force=True)
                ckpt.wait()
                logger.line(
                    f"Stopped by {stopped_by} after step {step}: checkpoint saved in "
                    f"{os.path.join(workdir, 'checkpoints')}; rerun the same command to resume"
                )
                break
            if (
                config.checkpoint_every_steps > 0
                and step % config.checkpoint_every_steps == 0
                and step % steps_per_epoch != 0
            ):
                ckpt.save(step, runner.unreplicate(state))
            if step % steps_per_epoch == 0:
                finish_epoch(step // steps_per_epoch - 1, partial=False)
                t_window = time.time()
        if stopped_by is None and (epoch_metrics is not None or step == start_step):
            # a run that stops mid-epoch (num_train_steps, stop_at_step) still reports
            finish_epoch(
                step // steps_per_epoch if step % steps_per_epoch else step // steps_per_epoch - 1,
                partial=True,
            )
        ckpt.wait()
    finally:
        data.close()
        try:
            ckpt.wait()
        except ckpt_lib.CheckpointWriteError:
            pass  # already raised, or superseded by the exception in flight
        logger.close()
    return {
        "step": step,
        "eval_accuracy": last_eval.get("accuracy"),
        "eval_loss": last_eval.get("loss"),
        "state": runner.unreplicate(state),
        "stopped_by": stopped_by,
    }


def _already_complete(config, workdir, state, runner, data, logger, step, total_steps):
    """A rerun on a finished workdir: says so and prints the final metrics (the last
    epoch's, or an evaluation of the final state if metrics.jsonl is gone)."""
    try:
        last = logger.history[-1] if logger.history else None
        if last is None:
            ev = data.evaluate(state)
            metrics = f"Test Acc: {100 * ev['accuracy']:.2f}%, Test Loss: {ev['loss']:.4f}"
            accuracy, loss = ev["accuracy"], ev["loss"]
        else:
            metrics = (
                f"Epoch {last['epoch']}: Train Loss: {last['train_loss']:.4f}, Train Acc: "
                f"{100 * last['train_accuracy']:.2f}%, Test Acc: {100 * last['eval_accuracy']:.2f}%"
            )
            accuracy, loss = last["eval_accuracy"], last["eval_loss"]
        logger.line(
            f"Training in {workdir} is already complete (step {step} of {total_steps}); "
            "raise num_epochs or num_train_steps to train further"
        )
        logger.line(f"Final metrics: {metrics}")
    finally:
        data.close()
        logger.close()
    return {
        "step": step,
        "eval_accuracy": accuracy,
        "eval_loss": loss,
        "state": runner.unreplicate(state),
        "stopped_by": None,
    }


def evaluate_workdir(config: ml_collections.ConfigDict, workdir: str, which: str = "best"):
    """Evaluates the best (or latest) checkpoint of ``workdir`` without training."""
    from inception_jax import checkpoint as ckpt_lib

    config_lib.validate(config)
    workdir = os.path.abspath(os.path.expanduser(workdir))
    ckpt = ckpt_lib.Checkpointer(workdir, config, read_only=True)
    data = open_data(config)
    model = build_model(config, data.num_classes)
    tx = make_optimizer(config, optax.constant_schedule(config.learning_rate))
    state = create_train_state(model, jax.random.PRNGKey(0), config_lib.input_size(config), tx)
    state, step = ckpt.restore(state, which)
    streaming = isinstance(data, StreamingData)
    runner = Runner(model, step_config(config, streaming), config.parallel, streaming=streaming)
    data.place(runner, 0)
    try:
        ev = data.evaluate(runner.put_replicated(state))
    finally:
        data.close()
    print(
        f"Checkpoint {which} (step {step}): Test Acc: {100 * ev['accuracy']:.2f}%, "
        f"Test Loss: {ev['loss']:.4f}",
        flush=True,
    )
    return {"step": step, **ev}
