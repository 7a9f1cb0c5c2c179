"""The optimiser and the learning-rate schedule a config asks for."""

from __future__ import annotations

import ml_collections
import optax

from inception_jax import config as config_lib


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
