"""Run in a subprocess with 8 fake CPU devices (see test_device_count.py).

Trains a few steps of inception_cifar and googlenet (aux heads, dropout on) through
the trainer's Runner on 1, 4 and 8 devices from the same state, seed and global
batches, and prints ``RESULT {json}``: for each case the largest relative difference
(L2 over the whole tree) of the params and BatchNorm statistics from the one-device run.
"""

import json
import os
import sys

assert "xla_force_host_platform_device_count=8" in os.environ.get("XLA_FLAGS", "")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import reliability_worker  # noqa: E402,F401  (registers tiny_inception)
from numerics import tree_rel_l2 as rel_l2  # noqa: E402

from inception_jax import config as config_lib  # noqa: E402
from inception_jax import train as training  # noqa: E402

STEPS = 3
BATCH = 16


def run_case(model_name, image_size, device_counts, learning_rate, steps=STEPS, float64=False, **overrides):
    c = config_lib.base_config()
    c.model, c.image_size, c.optimizer, c.learning_rate = model_name, image_size, "sgd", learning_rate
    # Images without exact ties in max-pool windows: where a window holds equal values
    # (zero-padded crop borders, saturated pixels), float32 rounding that differs between
    # programs (batch 16 vs 2 per device) picks which tied position gets the gradient, in
    # any framework; seen as 0.5% of googlenet's update on this synthetic data
    c.crop_padding = 0
    for k, v in overrides.items():
        c[k] = v
    model = training.build_model(c, 10)
    if float64:  # x64 mode: the exact program, rounding ~1e-16 instead of ~1e-7
        model = model.clone(dtype=jnp.float64)
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, (BATCH * steps, image_size, image_size, 3)).astype(np.uint8)
    labels = rng.randint(0, 10, BATCH * steps).astype(np.int32)
    tx = training.make_optimizer(c, optax.constant_schedule(c.learning_rate))
    state0 = jax.tree_util.tree_map(
        np.asarray, training.create_train_state(model, jax.random.PRNGKey(0), image_size, tx)
    )
    if float64:
        state0 = jax.tree_util.tree_map(
            lambda a: a.astype(np.float64) if np.issubdtype(a.dtype, np.floating) else a, state0
        )
    data_key = jax.random.PRNGKey(1)
    finals, losses = {}, {}
    for n in device_counts:
        r = training.Runner(model, training.step_config(c), "shard_map", devices=jax.devices()[:n])
        st = r.put_replicated(state0)
        imgs, lbls = r.put_replicated(images), r.put_replicated(labels)
        key = r.put_replicated(data_key)
        for step in range(steps):
            idx = np.arange(BATCH * step, BATCH * (step + 1), dtype=np.int32)
            ids = r.put_batch(idx)
            st, m = r.train(st, *r.gather(imgs, lbls, ids), r.put_batch(np.ones(BATCH, np.float32)), ids, key)
        m = r.metrics(m)
        losses[n] = m["loss_sum"] / m["count"]
        finals[n] = jax.device_get(r.unreplicate(st))
    one = finals[device_counts[0]]
    return {
        "losses": losses,
        "moved": rel_l2(one.params, state0.params),
        "params": {n: rel_l2(finals[n].params, one.params) for n in device_counts[1:]},
        "stats": {n: rel_l2(finals[n].batch_stats, one.batch_stats) for n in device_counts[1:]},
    }


def googlenet_float64():
    with jax.enable_x64(True):
        return run_case("googlenet", 32, (1, 4, 8), 1e-2, float64=True, model_kwargs={"aux_logits": True})


def main():
    """``python device_count_check.py``: inception_cifar and tiny_inception;
    ``python device_count_check.py googlenet``: googlenet in float64 (slow)."""
    assert jax.device_count() == 8
    if sys.argv[1:] == ["googlenet"]:
        # googlenet with aux heads and dropout, in float64: in float32 its own rounding
        # is amplified past the bound (3 steps at lr 1e-4: 4.5e-5 between 1 and 4
        # devices; summing a batch in another order on ONE device moves it as much), so
        # float32 cannot show that two programs compute the same update; float64 can
        out = {"googlenet_aux": googlenet_float64()}
    else:
        out = {
            # the trainer's default on a CPU: the CPU kernels. A learning rate small
            # enough that float32 rounding stays far below the bound
            "inception_cifar": run_case("inception_cifar", 32, (1, 4, 8), 1e-3),
            # the program GPUs and TPUs run: plain JAX autodiff through the collectives
            # (tiny_inception: BatchNorm, max pool and an Inception module, compiled in seconds)
            "tiny_plain": run_case("tiny_inception", 16, (1, 8), 1e-2, cpu_kernels=False),
            # per-device statistics: no longer the same update (documented)
            "tiny_unsynced": run_case("tiny_inception", 16, (1, 8), 1e-2, sync_batch_norm=False),
        }
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
