"""The training loop (inception_jax/train/loop.py) under faults that
test_reliability.py does not cover: a SIGKILL when no progress line is ever printed,
an error in training that meets a second error while the run is being closed, a
non-finite loss with ``on_nonfinite='rollback'``; and the rates it prints."""

import os
import random
import signal
import subprocess
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reliability_worker  # noqa: F401  (registers tiny_inception)
from test_reliability import ROOT, flags, steps_in

from inception_jax import config as config_lib
from inception_jax import metrics
from inception_jax import train as training
from inception_jax.checkpoint import manager
from inception_jax.train import inputs, loop, parallel

INTERVAL = 3


def finished_steps(path) -> list:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [int(line) for line in f if line.strip()]


def test_a_kill_loses_at_most_the_checkpoint_interval_when_nothing_is_printed(tmp_path):
    # No progress line in the whole run (log_every_steps far above the interval) and a
    # slow disk (each save sleeps 1 s before writing): the loop must still wait for
    # each save before going on, or a kill loses up to two intervals and more.
    step_log = tmp_path / "finished"
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        RELIABILITY_STEP_LOG=str(step_log),
        RELIABILITY_SLOW_SAVE="1.0",
    )
    rng = random.Random(0)
    work = tmp_path / "run"
    kills = 0
    for _ in range(4):
        proc = subprocess.Popen(
            flags(work, "", 40, log_every_steps=1000, checkpoint_every_steps=INTERVAL),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
            env=env,
        )
        start = len(finished_steps(step_log))
        target = rng.randint(4, 9)  # steps finished in this process before the kill
        deadline = time.time() + 120
        while len(finished_steps(step_log)) - start < target and proc.poll() is None:
            assert time.time() < deadline, "the run made no progress"
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        last = finished_steps(step_log)[-1]
        saved = steps_in(work)
        newest = saved[-1] if saved else 0
        assert last - newest <= INTERVAL, (last, saved)
    assert kills >= 3


class Boom(RuntimeError):
    pass


def test_an_error_in_training_is_not_replaced_by_one_raised_while_closing(tmp_path, monkeypatch):
    c = config_lib.base_config()
    c.model, c.dataset, c.num_classes, c.image_size = "tiny_inception", "synthetic", 4, 8
    c.synthetic_examples, c.batch_size, c.eval_batch_size, c.num_epochs = 128, 16, 16, 1
    c.checkpoint_every_steps, c.log_every_steps, c.compilation_cache_dir = 3, 1000, ""
    # every save's state looks non-finite, so the save of step 3 fails on its thread;
    # an error (an interrupt, say) arrives while that save is in flight, and the run
    # meets the save's FloatingPointError while closing
    monkeypatch.setattr(manager, "_finite", lambda a: False)
    save = manager.Checkpointer.save

    def save_then_fail(self, step, *args, **kwargs):
        save(self, step, *args, **kwargs)
        raise Boom(f"interrupted while the save of step {step} was in flight")

    monkeypatch.setattr(manager.Checkpointer, "save", save_then_fail)
    with pytest.raises(Boom, match="step 3"):
        training.train_and_evaluate(c, str(tmp_path / "w"))
    # the same save failure, with no error in flight, is the error reported
    monkeypatch.setattr(manager.Checkpointer, "save", save)
    with pytest.raises(FloatingPointError, match="not finite"):
        training.train_and_evaluate(c, str(tmp_path / "w2"))


# --- a non-finite loss rolls back instead of ending the run ------------------------------

BAD_STEP = 6


def rollback_config(**overrides):
    c = config_lib.base_config()
    c.model, c.dataset, c.num_classes, c.image_size = "tiny_inception", "synthetic", 4, 8
    c.synthetic_examples, c.batch_size, c.eval_batch_size, c.num_epochs = 128, 16, 16, 2
    c.checkpoint_every_steps, c.log_every_steps, c.compilation_cache_dir = 4, 5, ""
    c.optimizer, c.learning_rate = "sgd", 0.05
    for k, v in overrides.items():
        setattr(c, k, v)
    return c


def with_bad_batch(monkeypatch, bad_from_call: int, every_later_call: bool = False):
    """Runner.train whose batch of the call ``bad_from_call`` (0-based, first pass: step
    ``bad_from_call + 1``) gets NaN example weights whenever it comes again, so its loss
    and gradient are NaN; ``every_later_call``: every call from then on."""
    train = parallel.Runner.train
    seen = {"calls": 0, "bad": None, "poisoned": False}

    def train_with_bad_batch(self, state, images, labels, weights, ids, key):
        if seen["calls"] == bad_from_call:
            seen["bad"] = np.asarray(ids)
            seen["poisoned"] = every_later_call
        seen["calls"] += 1
        if seen["poisoned"] or (seen["bad"] is not None and np.array_equal(np.asarray(ids), seen["bad"])):
            weights = weights * jnp.nan
        return train(self, state, images, labels, weights, ids, key)

    monkeypatch.setattr(parallel.Runner, "train", train_with_bad_batch)
    return seen


def test_a_bad_batch_is_rolled_back_skipped_and_logged(tmp_path, monkeypatch, capsys):
    seen = with_bad_batch(monkeypatch, BAD_STEP - 1)
    rolled = training.train_and_evaluate(rollback_config(on_nonfinite="rollback"), str(tmp_path / "r"))
    out = capsys.readouterr().out
    assert f"Skipped the batch of step {BAD_STEP}" in out
    assert "Rolled back to step 4" in out  # the newest checkpoint before the bad step
    with open(tmp_path / "r" / "skipped_steps.json") as f:
        assert f.read() == '{"steps": [6]}'
    bad_ids = seen["bad"]

    # the reference: the same run given the same data without that batch (the call is
    # left out; nothing non-finite ever happens)
    monkeypatch.undo()
    train = parallel.Runner.train
    last = {}

    def without_the_batch(self, state, *args):
        if np.array_equal(np.asarray(args[3]), bad_ids):
            return state, jax.tree_util.tree_map(jnp.zeros_like, last["m"])
        state, last["m"] = train(self, state, *args)
        return state, last["m"]

    monkeypatch.setattr(parallel.Runner, "train", without_the_batch)
    reference = training.train_and_evaluate(rollback_config(), str(tmp_path / "ref"))
    assert rolled["step"] == reference["step"] == 16
    chex.assert_trees_all_equal(rolled["state"].params, reference["state"].params)
    chex.assert_trees_all_equal(rolled["state"].batch_stats, reference["state"].batch_stats)
    chex.assert_trees_all_equal(rolled["state"].opt_state, reference["state"].opt_state)


def test_rollbacks_stop_after_max_rollbacks_with_one_line(tmp_path, monkeypatch):
    with_bad_batch(monkeypatch, BAD_STEP - 1, every_later_call=True)
    c = rollback_config(on_nonfinite="rollback", max_rollbacks=1)
    with pytest.raises(FloatingPointError) as error:
        training.train_and_evaluate(c, str(tmp_path / "w"))
    message = str(error.value)
    assert "\n" not in message and "after 1 rollbacks" in message and "max_rollbacks" in message
    assert steps_in(tmp_path / "w")  # the good checkpoints are kept


def test_rollback_with_streaming_data_is_refused_before_anything_runs():
    c = rollback_config(on_nonfinite="rollback", dataset="imagenet2012")
    with pytest.raises(ValueError, match="on_nonfinite="):
        config_lib.validate(c)


# --- what the run prints is true ----------------------------------------------------------


def test_each_progress_rate_covers_exactly_its_steps_and_their_time(tmp_path, monkeypatch):
    # a clock that only the steps (1 s each) and the evaluations (100 s each) move:
    # every progress line must read batch_size images per second, the first line after
    # an evaluation included
    now = [1000.0]

    class Clock:
        @staticmethod
        def time():
            return now[0]

    monkeypatch.setattr(loop, "time", Clock)
    train, evaluate = parallel.Runner.train, inputs.InMemoryData.evaluate

    def one_second_step(self, *args):
        now[0] += 1.0
        return train(self, *args)

    def slow_evaluation(self, state):
        now[0] += 100.0
        return evaluate(self, state)

    rates = []
    progress = metrics.MetricsLogger.progress

    def record(self, step, loss, images_per_s):
        rates.append((step, images_per_s))
        return progress(self, step, loss, images_per_s)

    monkeypatch.setattr(parallel.Runner, "train", one_second_step)
    monkeypatch.setattr(inputs.InMemoryData, "evaluate", slow_evaluation)
    monkeypatch.setattr(metrics.MetricsLogger, "progress", record)
    c = rollback_config(log_every_steps=3, checkpoint_every_steps=0)  # 8 steps an epoch
    training.train_and_evaluate(c, str(tmp_path / "w"))
    assert [s for s, _ in rates] == [3, 6, 9, 12, 15, 16]  # 9 and 16 follow an evaluation
    for step, rate in rates:
        assert rate == pytest.approx(16.0), (step, rate)


def test_several_steps_per_call_run_as_single_calls_on_the_cpu(tmp_path, monkeypatch, capsys):
    # XLA:CPU's scan measured slower than single calls on real models: the CPU loop
    # says so once and never calls the scanned program (unless scan_on_cpu)
    assert jax.default_backend() == "cpu"
    calls = {"one": 0, "many": 0}
    one, many = parallel.Runner.train, parallel.Runner.train_many

    def count(name, method):
        def counted(self, *args):
            calls[name] += 1
            return method(self, *args)

        return counted

    monkeypatch.setattr(parallel.Runner, "train", count("one", one))
    monkeypatch.setattr(parallel.Runner, "train_many", count("many", many))
    c = rollback_config(num_epochs=1, steps_per_call=4, log_every_steps=8)
    training.train_and_evaluate(c, str(tmp_path / "cpu"))
    assert calls == {"one": 8, "many": 0}
    assert "steps_per_call=4 runs as 1 on the CPU" in capsys.readouterr().out
    c.scan_on_cpu = True
    training.train_and_evaluate(c, str(tmp_path / "scan"))
    assert calls == {"one": 8, "many": 2}
