"""The training loop: smoke training, real CIFAR data, resume equality, bad config,
metrics files (no torch needed; the schedules, optimisers and losses against torch
are in test_optim.py)."""

import io
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from inception_jax import config as config_lib
from inception_jax import metrics as metrics_lib
from inception_jax import train as training
from inception_jax.data import source

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True, scope="module")
def compilation_cache(tmp_path_factory):
    # the loop is compiled once per run; a persistent cache shares it between runs
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    yield
    jax.config.update("jax_compilation_cache_dir", None)


def smoke_config(**overrides):
    sys.path.insert(0, ROOT)
    from configs.smoke import get_config

    c = get_config()
    c.log_every_steps = 4
    for k, v in overrides.items():
        c[k] = v
    return c


TINY = {"model": "tiny_inception", "image_size": 8}  # tests/reliability_worker.py: compiles in seconds


# --- bad config / data -------------------------------------------------------------


@pytest.mark.parametrize(
    "key,value,pattern",
    [
        ("model", "inception_v9", "unknown model 'inception_v9'; expected one of"),
        ("optimizer", "adagrad", r"config.optimizer='adagrad': expected one of sgd, adam"),
        ("schedule", "poly", r"config.schedule='poly': expected one of"),
        ("image_size", 4, r"config.image_size=4: expected >= 8 for inception_cifar"),
    ],
)
def test_bad_config_values_fail_with_one_line(key, value, pattern):
    c = smoke_config()
    c[key] = value
    with pytest.raises(ValueError, match=pattern) as e:
        config_lib.validate(c)
    assert "\n" not in str(e.value)


def test_missing_dataset_names_dataset_dir_and_prepare_command(tmp_path):
    with pytest.raises(source.DatasetMissingError) as e:
        source.load_in_memory("cifar10", "train", str(tmp_path))
    msg = str(e.value)
    assert "cifar10" in msg and str(tmp_path) in msg and "python -m inception_jax.data.prepare" in msg


def test_cifar10_without_prepared_data_prints_the_command_to_prepare_it(tmp_path):
    r = _train_py(tmp_path / "w", f"--config.data_dir={tmp_path}", config="configs/cifar10.py")
    assert r.returncode != 0
    lines = [line for line in r.stderr.strip().splitlines() if "OpenCV" not in line]
    assert lines == [
        f"error: dataset 'cifar10' is not prepared: {tmp_path}/cifar10 does not exist; prepare it with: "
        f"pip install -e '.[prepare]' && python -m inception_jax.data.prepare --dataset cifar10 "
        f"--data_dir {tmp_path}"
    ]
    assert not list((tmp_path / "w").glob("checkpoints/*"))


def _train_py(workdir, *overrides, config="configs/smoke.py"):
    return subprocess.run(
        [sys.executable, "train.py", "--config", config, "--workdir", str(workdir), *overrides],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_unknown_config_key_on_the_command_line(tmp_path):
    r = _train_py(tmp_path / "w", "--config.no_such_key=1")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "error: --config.no_such_key: no such config key; configs/smoke.py lists the keys"
    ]
    assert not (tmp_path / "w").exists()
    r = _train_py(tmp_path / "w", "--config.batch_sze=1")
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "error: --config.batch_sze: no such config key; did you mean batch_size or eval_batch_size?"
    )


# --- runs --------------------------------------------------------------------------


def _read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_smoke_training_lowers_the_loss_and_writes_metrics(tmp_path, capsys):
    out = training.train_and_evaluate(smoke_config(num_epochs=2), str(tmp_path))
    printed = capsys.readouterr().out
    assert "Epoch 2: Train Loss: " in printed and "Test Acc: " in printed
    records = _read_jsonl(tmp_path / "metrics.jsonl")
    train_losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert train_losses[-1] < 0.5 * train_losses[0]
    assert out["eval_accuracy"] > 0.5  # 4 classes: chance is 0.25
    assert (tmp_path / "curves.png").stat().st_size > 1000
    events = os.listdir(tmp_path / "tensorboard")
    assert events and events[0].startswith("events.out.tfevents.")
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["16", "32"]
    # a rerun of the finished run: says it is complete and prints the last epoch's metrics
    again = training.train_and_evaluate(smoke_config(num_epochs=2), str(tmp_path))
    lines = capsys.readouterr().out.strip().splitlines()
    last = [r for r in records if r["kind"] == "epoch"][-1]
    assert lines == [
        f"Training in {tmp_path} is already complete (step 32 of 32); raise num_epochs "
        "or num_train_steps to train further",
        f"Final metrics: Epoch 2: Train Loss: {last['train_loss']:.4f}, Train Acc: "
        f"{100 * last['train_accuracy']:.2f}%, Test Acc: {100 * last['eval_accuracy']:.2f}%",
    ]
    assert again["step"] == 32 and again["eval_accuracy"] == last["eval_accuracy"]
    assert _read_jsonl(tmp_path / "metrics.jsonl") == records  # nothing appended
    # evaluation of the best checkpoint without training
    ev = training.evaluate_workdir(smoke_config(num_epochs=2), str(tmp_path))
    assert ev["accuracy"] == pytest.approx(
        max(r["eval_accuracy"] for r in records if r["kind"] == "epoch"), abs=1e-6
    )


def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path, capsys):
    import reliability_worker  # noqa: F401  (registers tiny_inception)

    cfg = dict(
        num_epochs=-1,
        num_train_steps=10,
        synthetic_examples=128,
        batch_size=32,
        checkpoint_every_steps=2,
        **TINY,
    )
    full = training.train_and_evaluate(smoke_config(**cfg), str(tmp_path / "full"))
    first = training.train_and_evaluate(smoke_config(stop_at_step=6, **cfg), str(tmp_path / "split"))
    assert first["step"] == 6
    capsys.readouterr()
    resumed = training.train_and_evaluate(smoke_config(**cfg), str(tmp_path / "split"))
    assert "Resumed from step 6" in capsys.readouterr().out
    assert resumed["step"] == full["step"] == 10
    for a, b in zip(
        jax.tree_util.tree_leaves(full["state"].params), jax.tree_util.tree_leaves(resumed["state"].params)
    ):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    for a, b in zip(
        jax.tree_util.tree_leaves(full["state"].batch_stats),
        jax.tree_util.tree_leaves(resumed["state"].batch_stats),
    ):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_several_steps_per_call_give_the_params_of_one_step_per_call(tmp_path):
    """The loop with steps_per_call=3, log_every_steps=4 and 8 steps an epoch runs calls of
    3 and 1 steps (scanned and plain) across an epoch boundary: the same params as 12 calls
    of one step, up to float32 rounding (XLA:CPU may fuse the scanned body differently:
    on an AMD EPYC it moved 7 of 8 elements of a tensor by up to 1e-8). Exactness is
    checked in float64 by the next test."""
    import reliability_worker  # noqa: F401  (registers tiny_inception)

    cfg = dict(num_epochs=-1, num_train_steps=12, synthetic_examples=256, batch_size=32, **TINY)
    one = training.train_and_evaluate(smoke_config(**cfg), str(tmp_path / "one"))
    three = training.train_and_evaluate(
        smoke_config(steps_per_call=3, scan_on_cpu=True, **cfg), str(tmp_path / "three")
    )
    assert one["step"] == three["step"] == 12
    for tree in ("params", "batch_stats", "opt_state"):
        a = jax.tree_util.tree_leaves(getattr(one["state"], tree))
        b = jax.tree_util.tree_leaves(getattr(three["state"], tree))
        assert len(a) == len(b) > 0
        for x, y in zip(a, b):
            np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-4, atol=1e-7)


@pytest.mark.slow  # 75 s: a float64 googlenet_cifar
def test_one_call_of_four_steps_equals_four_calls_in_float64():
    """googlenet_cifar with aux heads, dropout and on-device crop/flip, in float64 (where
    rounding cannot hide a different update): Runner.train_many of 4 steps against 4
    Runner.train calls from the same state and batches."""
    import jax.numpy as jnp
    import optax
    from numerics import tree_rel_l2

    with jax.enable_x64(True):
        c = smoke_config(model="googlenet_cifar", image_size=16, optimizer="sgd", learning_rate=0.05)
        model = training.build_model(c, 10).clone(dtype=jnp.float64)
        tx = training.make_optimizer(c, optax.constant_schedule(c.learning_rate))
        state0 = jax.tree_util.tree_map(
            lambda a: a.astype(np.float64) if np.issubdtype(a.dtype, np.floating) else a,
            jax.tree_util.tree_map(
                np.asarray, training.create_train_state(model, jax.random.PRNGKey(0), 16, tx)
            ),
        )
        rng = np.random.RandomState(0)
        images = rng.randint(0, 256, (64, 16, 16, 3)).astype(np.uint8)
        labels = rng.randint(0, 10, 64).astype(np.int32)
        order = rng.permutation(64).astype(np.int32).reshape(4, 16)
        r = training.Runner(model, training.step_config(c), "shard_map")
        imgs, lbls, key = (
            r.put_replicated(images),
            r.put_replicated(labels),
            r.put_replicated(jax.random.PRNGKey(1)),
        )
        ones = r.put_batch(np.ones(16, np.float64))
        st, total = r.put_replicated(state0), None
        for idx in order:
            ids = r.put_batch(idx)
            st, m = r.train(st, *r.gather(imgs, lbls, ids), ones, ids, key)
            total = m if total is None else jax.tree_util.tree_map(jnp.add, total, m)
        many, m4 = r.train_many(r.put_replicated(state0), imgs, lbls, r.put_steps(order), ones, key)
        assert tree_rel_l2(many.params, st.params) < 1e-10
        assert tree_rel_l2(many.batch_stats, st.batch_stats) < 1e-10
        assert tree_rel_l2(st.params, state0.params) > 1e-3  # the steps moved the params
        assert r.metrics(m4)["loss_sum"] == pytest.approx(r.metrics(total)["loss_sum"], rel=1e-10)


def test_nan_loss_stops_with_a_clear_error_keeping_the_last_checkpoint(tmp_path):
    import reliability_worker  # noqa: F401  (registers tiny_inception)

    cfg = dict(
        num_epochs=-1,
        num_train_steps=8,
        synthetic_examples=64,
        batch_size=16,
        checkpoint_every_steps=2,
        log_every_steps=2,
        optimizer="sgd",
        **TINY,
    )
    training.train_and_evaluate(smoke_config(**dict(cfg, num_train_steps=2)), str(tmp_path))
    with pytest.raises(FloatingPointError, match=r"training loss became nan at step 4.*step 2\) is kept"):
        training.train_and_evaluate(smoke_config(learning_rate=1e30, **cfg), str(tmp_path))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]
    # a checkpoint step that is no logging step: the save itself refuses the state
    rare_logs = dict(cfg, log_every_steps=100, synthetic_examples=256)  # step 4 ends no epoch
    with pytest.raises(
        FloatingPointError, match=r"the state at step 4 is not finite .*not saved.*step 2\) is kept"
    ):
        training.train_and_evaluate(smoke_config(learning_rate=1e30, **rare_logs), str(tmp_path))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]


def test_resuming_with_another_model_is_refused(tmp_path):
    import reliability_worker  # noqa: F401  (registers tiny_inception)

    training.train_and_evaluate(
        smoke_config(num_epochs=-1, num_train_steps=2, synthetic_examples=64, **TINY), str(tmp_path)
    )
    before = sorted(os.listdir(tmp_path / "checkpoints"))
    with pytest.raises(ValueError, match="holds a run with model='tiny_inception'"):
        training.train_and_evaluate(smoke_config(model="googlenet_cifar"), str(tmp_path))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == before


@pytest.mark.slow
@pytest.mark.needs_cifar
def test_short_cpu_run_on_real_cifar10_beats_chance(shared_tfds, tmp_path):
    sys.path.insert(0, ROOT)
    from configs.cifar10 import get_config

    c = get_config()
    c.data_dir = shared_tfds
    c.train_split, c.eval_split = "train[:2048]", "train[45000:46000]"
    c.batch_size, c.num_epochs, c.log_every_steps = 64, 2, 16
    c.cache_dir = str(tmp_path / "cache")
    c.compilation_cache_dir = ""
    out = training.train_and_evaluate(c, str(tmp_path / "run"))
    # 10 classes, 1000 held-out images: chance is 10% (std ~1%)
    assert out["eval_accuracy"] > 0.2, out


def test_event_files_and_curves_read_back_with_tensorboard_and_matplotlib(tmp_path):
    from matplotlib.image import imread
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = metrics_lib.MetricsLogger(str(tmp_path), total_steps=20, batch_size=8, stream=io.StringIO())
    logger.progress(10, 1.25, 100.0)
    for epoch, (loss, acc) in enumerate([(2.0, 0.25), (1.0, 0.5)], start=1):
        logger.epoch(epoch, 10 * epoch, loss, acc, acc - 0.05, loss + 0.5, 0.1 / epoch)
    logger.close()
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [(10, 1.25)]
    assert [(e.step, round(e.value, 6)) for e in acc.Scalars("epoch/eval_accuracy")] == [
        (10, 0.2),
        (20, 0.45),
    ]
    assert [e.step for e in acc.Scalars("epoch/learning_rate")] == [10, 20]
    image = imread(tmp_path / "curves.png")
    assert image.shape[0] > 200 and image.shape[1] > 600  # three panels side by side
    assert image[..., :3].std() > 0.05  # not a blank canvas
