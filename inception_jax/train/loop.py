"""``train_and_evaluate(config, workdir)``: the whole run, resumable, and
``evaluate_workdir``."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from typing import Any, Dict, Tuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from inception_jax import config as config_lib
from inception_jax import models
from inception_jax.errors import first_line
from inception_jax.train.inputs import StreamingData, open_data
from inception_jax.train.optim import make_optimizer, make_schedule
from inception_jax.train.parallel import Runner
from inception_jax.train.programs import program_cache, use_cpu_kernels
from inception_jax.train.signals import StopRequest
from inception_jax.train.steps import (
    AXIS,
    StepConfig,
    TrainState,
    abstract_train_state,
    create_train_state,
)


def build_model(config, num_classes: int):
    kwargs = dict(config.model_kwargs)
    dtype = jnp.bfloat16 if config.half_precision else jnp.float32
    # sync_batch_norm: statistics (and dropout masks) of the global batch, the same update
    # on any device count; off: per-device statistics (PyTorch DDP's default), no
    # collective in the forward pass, and an update that depends on the device count
    axis_name = AXIS if config.sync_batch_norm else None
    return models.create(config.model, num_classes=num_classes, dtype=dtype, axis_name=axis_name, **kwargs)


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
        cpu_kernels=use_cpu_kernels(config.cpu_kernels),
    )


def init_from_pretrained(state: TrainState, config) -> Tuple[TrainState, str]:
    """``state`` with the weights of ``config.init_from`` (a torch state_dict or a
    ``save_pretrained`` directory) wherever name and shape agree. Classifier / aux
    heads whose shape differs (another class count) or that the file lacks keep
    their fresh initialisation; any other difference is an error (another model)."""
    from inception_jax.weights import load_pretrained, merge_params

    path = os.path.expanduser(config.init_from)
    _, loaded = load_pretrained(config.model, path, download=False)
    info = models.get_info(config.model)
    heads = {info.classifier, *info.aux_prefixes}

    def mismatch(key, src, ours):
        got = "missing" if src is None else f"of shape {tuple(np.shape(src))}"
        return ValueError(
            f"config.init_from={config.init_from!r}: {'/'.join(key[1:])} is {got}, "
            f"{config.model} needs {tuple(ours.shape)}; use weights of "
            f"{config.model} or another --config.model"
        )

    merged, fresh = merge_params(
        {"params": state.params, "batch_stats": state.batch_stats},
        loaded,
        may_differ=lambda key: key[1] in heads,
        mismatch=mismatch,
    )
    n = sum(len(flax.traverse_util.flatten_dict(t)) for t in merged.values())
    new_heads = sorted({key[1] for key in fresh})
    heads_note = f"; new heads: {', '.join(new_heads)}" if new_heads else ""
    note = f"Initialised from {config.init_from}: {n - len(fresh)} of {n} arrays loaded{heads_note}"
    return state.replace(params=merged["params"], batch_stats=merged["batch_stats"]), note


def _check_finite(loss: float, where: str, ckpt) -> None:
    if not math.isfinite(loss):
        raise FloatingPointError(
            f"training loss became {loss} {where}; stopped without saving; the last good checkpoint "
            f"(step {ckpt.latest_step()}) is kept. Lower --config.learning_rate or enable "
            "--config.grad_clip_norm"
        )


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


@dataclasses.dataclass(frozen=True)
class _Run:
    """What stays fixed while a run trains: the config, the places it reads and writes,
    and the sizes of the run. The training state is kept in the loop's locals."""

    config: ml_collections.ConfigDict
    workdir: str
    ckpt: Any
    data: Any
    runner: Runner
    logger: Any
    schedule: Any
    skips: "_SkippedSteps"
    data_key: Any
    steps_per_epoch: int
    total_steps: int


def _train(config, workdir: str, stop: StopRequest) -> Dict[str, Any]:
    from inception_jax import checkpoint as ckpt_lib
    from inception_jax import metrics as metrics_lib

    main_process = jax.process_index() == 0
    say = print if main_process else (lambda text: None)
    ckpt = ckpt_lib.Checkpointer(workdir, config, log=say)  # checks workdir and config early
    data = open_data(config)
    steps_per_epoch, total_steps = _run_length(config, data)
    model = build_model(config, data.num_classes)
    schedule = make_schedule(config, steps_per_epoch, total_steps)
    tx = make_optimizer(config, schedule)
    init_rng, data_key = jax.random.split(jax.random.PRNGKey(config.seed))
    programs = program_cache(
        config,
        num_classes=data.num_classes,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        log=say,
    )
    runner = Runner(
        model, step_config(config, isinstance(data, StreamingData)), config.parallel, programs=programs
    )
    restore_or_init = functools.partial(
        _restore_or_init, config, ckpt, runner, data, model, tx, init_rng, programs, say
    )

    state, start_step = restore_or_init()
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
    run = _Run(
        config=config,
        workdir=workdir,
        ckpt=ckpt,
        data=data,
        runner=runner,
        logger=logger,
        schedule=schedule,
        skips=_SkippedSteps(workdir, write=main_process),
        data_key=data_key,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
    )
    try:
        state, step, last_eval, stopped_by = _train_steps(run, state, start_step, stop, restore_or_init)
    except BaseException:
        # the error in flight is the one the user sees: one raised while closing (a
        # pending save's, say) never replaces it
        _close_quietly(data.close, ckpt.wait, logger.close)
        raise
    data.close()
    logger.close()
    return {
        "step": step,
        "eval_accuracy": last_eval.get("accuracy"),
        "eval_loss": last_eval.get("loss"),
        "state": runner.unreplicate(state),
        "stopped_by": stopped_by,
    }


def _run_length(config, data) -> Tuple[int, int]:
    """(steps per epoch, total steps), after checking that the data fits the config."""
    if data.max_label >= data.num_classes:
        raise ValueError(
            f"config.num_classes={data.num_classes}: the data has label {data.max_label}; "
            "raise num_classes or use -1"
        )
    steps_per_epoch = data.steps_per_epoch
    if steps_per_epoch < 1:
        raise ValueError(
            f"config.batch_size={config.batch_size}: larger than the {data.num_train} "
            "training examples; lower it"
        )
    if config.num_train_steps > 0:
        return steps_per_epoch, config.num_train_steps
    return steps_per_epoch, int(math.ceil(config.num_epochs * steps_per_epoch))


def _restore_or_init(config, ckpt, runner, data, model, tx, init_rng, programs, say):
    """(state on the devices, its step): the newest readable checkpoint, else the
    initial state (the same one on every call)."""
    size = config_lib.input_size(config)
    state, step = None, 0
    if ckpt.has_checkpoints():  # restore into the shapes, skip the init program
        target = abstract_train_state(model, init_rng, size, tx, programs)
        state, step = ckpt.restore_latest(target, data=data.checkpoint_item)
    if step == 0:  # a new run, or no readable checkpoint left
        state = create_train_state(model, init_rng, size, tx, programs)
        if config.init_from:
            state, note = init_from_pretrained(state, config)
            say(note)
    return runner.put_replicated(state), step


def _train_steps(run: _Run, state, step: int, stop: StopRequest, restore_or_init):
    """Trains from ``step`` to the end (or a stop request): (state, step, the last
    evaluation, what stopped the run or None)."""
    config, ckpt, start_step = run.config, run.ckpt, step
    end = min(run.total_steps, config.stop_at_step if config.stop_at_step > 0 else run.total_steps)
    steps_per_call = _steps_per_call(config, run.logger.line)
    last_eval: Dict[str, float] = {}
    epoch_metrics = window = stopped_by = None
    rollbacks = 0
    check_each_step_until = 0  # after a rollback: each step's loss is checked until here
    t_window = time.time()
    while step < end:
        try:
            # A save has committed before the next step runs: a kill loses at most
            # checkpoint_every_steps steps, whatever log_every_steps is. (The host copy,
            # checksums and Orbax's write run on the checkpoint thread.)
            ckpt.wait()
            state, m, n = _next_call(run, state, step, end, steps_per_call, step < check_each_step_until)
            step += n
            if m is not None:
                epoch_metrics, window = _add(epoch_metrics, m), _add(window, m)
            if (step % config.log_every_steps == 0 or step == run.total_steps) and window is not None:
                t_window, window = _log_progress(run, step, window, t_window), None
            if stop.should_stop(step):
                stopped_by = stop.reason
                _save_and_stop(run, state, step, stopped_by)
                break
            if (
                config.checkpoint_every_steps > 0
                and step % config.checkpoint_every_steps == 0
                and step % run.steps_per_epoch != 0
            ):
                ckpt.save(step, run.runner.unreplicate(state), data=run.data.checkpoint_item)
            if step % run.steps_per_epoch == 0:
                # the interval of the next progress line leaves out the evaluation: its
                # rate covers exactly its steps and the time they took
                jax.block_until_ready(state)
                paused = time.time()
                last_eval = run.data.evaluate(state)
                _finish_epoch(run, state, step, step // run.steps_per_epoch - 1, epoch_metrics, last_eval)
                epoch_metrics = None
                t_window += time.time() - paused
        except FloatingPointError as error:
            if config.on_nonfinite != "rollback":
                raise
            rollbacks += 1
            _check_rollbacks(run, rollbacks, step)
            _close_quietly(ckpt.wait)  # a save of the non-finite state is dropped
            check_each_step_until = max(step, check_each_step_until)
            state, step = restore_or_init()
            epoch_metrics = window = None
            t_window = time.time()
            run.logger.line(
                f"Rolled back to step {step} ({first_line(error)}); replaying to step "
                f"{check_each_step_until} with each step's loss checked "
                f"(rollback {rollbacks} of {config.max_rollbacks})"
            )
    if stopped_by is None and (epoch_metrics is not None or step == start_step):
        # a run that stops mid-epoch (num_train_steps, stop_at_step) still reports
        epoch_index = step // run.steps_per_epoch - (0 if step % run.steps_per_epoch else 1)
        last_eval = run.data.evaluate(state)
        _finish_epoch(run, state, step, epoch_index, epoch_metrics, last_eval, partial=True)
    ckpt.wait()
    return state, step, last_eval, stopped_by


def _next_call(run: _Run, state, step: int, end: int, steps_per_call: int, checking: bool):
    """One call of the train program: (state, its summed metrics or None, the steps it
    covered). A batch that made the loss non-finite before is skipped; while
    ``checking``, a step whose loss is not finite is undone and its batch skipped."""
    if step + 1 in run.skips:  # a batch that made the loss non-finite before
        return state, None, 1
    n = (
        1
        if checking
        else _steps_this_call(run.config, steps_per_call, step, end, run.steps_per_epoch, run.skips)
    )
    before = jax.tree_util.tree_map(jnp.copy, state) if checking else None
    if n > 1:
        state, m = run.runner.train_many(state, *run.data.train_steps_args(step, n), run.data_key)
    else:
        state, m = run.runner.train(state, *run.data.train_args(step), run.data_key)
    if checking and not _finite_loss(run.runner.metrics(m)):
        run.skips.add(step + 1)
        run.logger.line(
            f"Skipped the batch of step {step + 1}: its loss was not finite (config.on_nonfinite='rollback')"
        )
        return before, None, n
    return state, m, n


def _add(total, metrics):
    return metrics if total is None else jax.tree_util.tree_map(jnp.add, total, metrics)


def _log_progress(run: _Run, step: int, window, since: float) -> float:
    """Logs the loss and rate of the steps summed in ``window`` since ``since``; returns now."""
    w = run.runner.metrics(window)
    loss = w["loss_sum"] / max(w["count"], 1)
    _check_finite(loss, f"at step {step}", run.ckpt)
    now = time.time()
    run.logger.progress(step, loss, w["count"] / max(now - since, 1e-9))
    return now


def _save_and_stop(run: _Run, state, step: int, reason: str) -> None:
    run.ckpt.save(step, run.runner.unreplicate(state), force=True, data=run.data.checkpoint_item)
    run.ckpt.wait()
    run.logger.line(
        f"Stopped by {reason} after step {step}: checkpoint saved in "
        f"{os.path.join(run.workdir, 'checkpoints')}; rerun the same command to resume"
    )


def _finish_epoch(run: _Run, state, step: int, epoch_index: int, epoch_metrics, ev, partial: bool = False):
    """Logs the epoch's train metrics and its evaluation ``ev``, and saves a checkpoint
    (the best one too when ``ev`` is the best accuracy so far)."""
    train_m = run.runner.metrics(epoch_metrics) if epoch_metrics is not None else None
    tl = train_m["loss_sum"] / train_m["count"] if train_m else float("nan")
    ta = train_m["correct"] / train_m["count"] if train_m else float("nan")
    if train_m:
        _check_finite(tl, f"in epoch {epoch_index + 1} (step {step})", run.ckpt)
    run.logger.epoch(
        epoch_index + 1,
        step,
        tl,
        ta,
        ev["accuracy"],
        ev["loss"],
        float(run.schedule(step - 1)),
        partial=partial,
    )
    run.ckpt.save(
        step,
        run.runner.unreplicate(state),
        eval_accuracy=ev["accuracy"],
        force=True,
        data=run.data.checkpoint_item,
    )


def _check_rollbacks(run: _Run, rollbacks: int, step: int) -> None:
    if rollbacks > run.config.max_rollbacks:
        raise FloatingPointError(
            f"training loss stayed non-finite after {run.config.max_rollbacks} rollbacks "
            f"(config.max_rollbacks); stopped at step {step}; the last good checkpoint "
            f"(step {run.ckpt.latest_step()}) is kept. Lower --config.learning_rate or enable "
            "--config.grad_clip_norm"
        ) from None


def _finite_loss(metrics: Dict[str, float]) -> bool:
    return math.isfinite(metrics["loss_sum"])


class _SkippedSteps:
    """The steps whose batches made the loss non-finite and are skipped
    (``on_nonfinite='rollback'``), kept in ``<workdir>/skipped_steps.json`` so that a
    resumed run skips them too."""

    def __init__(self, workdir: str, write: bool = True):
        from inception_jax.checkpoint.integrity import write_atomic

        self.path = os.path.join(workdir, "skipped_steps.json")
        self._write = write_atomic if write else (lambda path, text: None)
        self.steps = set()
        if os.path.exists(self.path):
            with open(self.path) as f:
                self.steps = set(json.load(f)["steps"])

    def __contains__(self, step: int) -> bool:
        return step in self.steps

    def add(self, step: int) -> None:
        self.steps.add(step)
        self._write(self.path, json.dumps({"steps": sorted(self.steps)}))


def _close_quietly(*closers) -> None:
    for close in closers:
        try:
            close()
        except Exception:
            pass


def _steps_per_call(config, say) -> int:
    """``config.steps_per_call``, except on the CPU (unless ``config.scan_on_cpu``),
    where k steps in one ``lax.scan`` call measured slower than k calls on real models
    (inception_cifar at batch 128: 116 against 200 img/s for k = 10; docs/benchmarks.md):
    there the loop makes single-step calls."""
    k = config.steps_per_call
    if k > 1 and jax.default_backend() == "cpu" and not config.scan_on_cpu:
        say(
            f"steps_per_call={k} runs as 1 on the CPU, where one call of several steps "
            "measured slower than single steps; --config.scan_on_cpu=True to scan anyway"
        )
        return 1
    return k


def _steps_this_call(config, k: int, step: int, end: int, steps_per_epoch: int, skips=()) -> int:
    """How many steps the next call runs: ``k`` when they all come before the next step
    at which the loop logs, checkpoints, evaluates or stops, and none of them is a
    skipped batch, else 1 (two compiled programs, whatever the boundaries)."""
    if k <= 1 or any(s in skips for s in range(step + 1, step + k + 1)):
        return 1
    stops = [end, (step // steps_per_epoch + 1) * steps_per_epoch]
    for every in (config.log_every_steps, config.checkpoint_every_steps):
        if every > 0:
            stops.append((step // every + 1) * every)
    return k if step + k <= min(stops) else 1


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
    # restored into the state's shapes: the init program's values would all be replaced
    target = abstract_train_state(model, jax.random.PRNGKey(0), config_lib.input_size(config), tx)
    state, step = ckpt.restore(target, which)
    streaming = isinstance(data, StreamingData)
    runner = Runner(model, step_config(config, streaming), config.parallel)
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
