"""The train state and the two steps: one optimisation step and one eval step on a
device's batch of uint8 images.

They are written for one device with a named axis (``AXIS``): gradients and metrics
are averaged with ``lax.pmean`` / ``psum``, so the same function runs under
``jax.jit`` + ``jax.shard_map`` (the default) and under ``jax.pmap``. With
``config.sync_batch_norm`` (the default) BatchNorm statistics are those of the global
batch and dropout masks are drawn for the global batch, so a global batch gives the
same update on 1 or N devices. On a CPU the steps are traced with the CPU kernels
(``config.cpu_kernels``, chosen in ``programs``); elsewhere they are the plain
program."""

from __future__ import annotations

from typing import Any, Optional, Tuple

import flax
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state
from jax import lax

from inception_jax.data import augment
from inception_jax.train.programs import cpu_kernels, run_once

AXIS = "data"


class TrainState(train_state.TrainState):
    batch_stats: Any = None


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
    cpu_kernels: bool = False  # trace the model with the CPU backend's kernels (programs.cpu_kernels)


def prepare_images(images_uint8, indices, key, cfg: StepConfig, dtype, train: bool):
    if train and (cfg.crop_padding > 0 or cfg.random_flip):
        keys = augment.example_keys(key, indices)
        images_uint8 = augment.random_crop_flip(images_uint8, keys, cfg.crop_padding, cfg.random_flip)
    x = augment.normalize(images_uint8, cfg.mean, cfg.std, jnp.float32 if cfg.resize_to else dtype)
    if cfg.resize_to and x.shape[1:3] != (cfg.resize_to, cfg.resize_to):
        x = jax.image.resize(x, (x.shape[0], cfg.resize_to, cfg.resize_to, x.shape[3]), "bilinear")
    return x.astype(dtype)


def train_step(
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

    with cpu_kernels(cfg.cpu_kernels):
        (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    metrics = {"loss_sum": loss * n, "correct": jnp.sum((jnp.argmax(logits, -1) == labels) * w), "count": n}
    if axis_name is not None:
        grads = lax.pmean(grads, axis_name)
        metrics = lax.psum(metrics, axis_name)
        if per_device_stats:  # one replicated state: average the per-device running statistics
            batch_stats = lax.pmean(batch_stats, axis_name)
    new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    return new_state, metrics


def eval_step(
    state: TrainState, images_uint8, labels, mask, *, model, cfg: StepConfig, axis_name: Optional[str] = AXIS
):
    """Summed correct predictions and loss over this device's (masked) examples."""
    x = prepare_images(images_uint8, None, None, cfg, model.dtype, train=False)
    with cpu_kernels(cfg.cpu_kernels):
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


def _init_program(model, image_size: int, tx):
    """The init program (rng, image) -> TrainState, its image argument, and the state
    carrying its static fields (apply_fn, tx) that a saved program's output is rebuilt
    around."""

    def make(rng, x):
        variables = model.init(rng, x, train=False)
        return TrainState.create(
            apply_fn=model.apply,
            params=variables["params"],
            batch_stats=variables.get("batch_stats", {}),
            tx=tx,
        )

    x = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
    template = TrainState(step=0, apply_fn=model.apply, params={}, tx=tx, opt_state=None, batch_stats={})
    return make, x, template


def create_train_state(model, rng, image_size: int, tx, programs=None) -> TrainState:
    """The model's variables (``model.init`` on one ``image_size`` image) and ``tx``'s
    state, made by one compiled program: the optimizer state of each parameter would
    otherwise be a separately compiled operation (40 of them for the smallest model).
    ``programs`` (a ``programs.ProgramCache``) keeps that program traced on disk."""
    make, x, template = _init_program(model, image_size, tx)
    if programs is not None:
        return programs.run_once("init", make, (rng, x), templates=(template,))
    return run_once(make, rng, x)


def abstract_train_state(model, rng, image_size: int, tx, programs=None) -> TrainState:
    """``create_train_state``'s shapes and dtypes, without compiling or running it: the
    target a resumed run restores into. Leaves are ``jax.ShapeDtypeStruct`` on this
    process's first device, where ``create_train_state`` puts its arrays. With
    ``programs`` holding the init program, nothing is traced either."""
    make, x, template = _init_program(model, image_size, tx)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    program = programs.program("init", make, (rng, x), templates=(template,)) if programs else None
    if program is not None:
        exported, out_tree = program
        shapes = jax.tree_util.tree_unflatten(out_tree, list(exported.out_avals))
    else:
        shapes = jax.eval_shape(make, rng, x)
    return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), shapes)
