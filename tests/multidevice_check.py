"""Run in a subprocess with 8 fake CPU devices (see test_parallel.py). Prints JSON."""

import json
import os
import sys

assert "xla_force_host_platform_device_count=8" in os.environ.get("XLA_FLAGS", "")
import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import reliability_worker  # noqa: E402,F401  (registers tiny_inception: compiles in seconds)
from numerics import tree_rel_l2  # noqa: E402

from inception_jax import config as config_lib  # noqa: E402
from inception_jax import train as training  # noqa: E402
from inception_jax.data import source  # noqa: E402
from inception_jax.train.programs import ProgramCache  # noqa: E402


def main():
    c = config_lib.base_config()
    c.model, c.image_size, c.optimizer, c.learning_rate = "tiny_inception", 16, "sgd", 0.05
    model = training.build_model(c, 4)
    ds = source.synthetic(64, 16, 4)
    tx = training.make_optimizer(c, optax.constant_schedule(c.learning_rate))
    state0 = jax.tree_util.tree_map(
        np.asarray, training.create_train_state(model, jax.random.PRNGKey(0), 16, tx)
    )
    data_key = jax.random.PRNGKey(1)

    def run(devices, parallel, programs=None):
        r = training.Runner(model, training.step_config(c), parallel, devices=devices, programs=programs)
        st = r.put_replicated(state0)
        imgs, lbls = r.put_replicated(ds.images), r.put_replicated(ds.labels)
        key = r.put_replicated(data_key) if parallel == "shard_map" else data_key
        losses = []
        for step in range(2):
            ids = r.put_batch(np.arange(16 * step, 16 * step + 16, dtype=np.int32))
            ones = r.put_batch(np.ones(16, np.float32))
            st, m = r.train(st, *r.gather(imgs, lbls, ids), ones, ids, key)
            m = r.metrics(m)
            losses.append(m["loss_sum"] / m["count"])
        st = jax.device_get(r.unreplicate(st))
        return losses, st

    results = {
        "one": run(jax.devices()[:1], "shard_map"),
        "eight": run(jax.devices(), "shard_map"),
        "pmap": run(jax.devices(), "pmap"),
    }
    # the traced program saved by one Runner and read back by another (train/programs.py)
    programs_dir = os.path.join(sys.argv[1], "programs")
    for name in ("eight_saved", "eight_loaded"):
        cache = ProgramCache(programs_dir, "multidevice")
        results[name] = run(jax.devices(), "shard_map", cache)
        out_counts = (cache.writes, cache.hits)
    # a Runner on a subset of the devices never calls the program saved for all of them
    cache = ProgramCache(programs_dir, "multidevice")
    results["two_cached"] = run(jax.devices()[:2], "shard_map", cache)
    subset_counts = (cache.writes, cache.hits)
    results["two"] = run(jax.devices()[:2], "shard_map")
    out = {"devices": jax.device_count(), "losses": {k: v[0] for k, v in results.items()}}
    out["programs_loaded_counts"] = out_counts  # (writes, hits) of the second Runner
    out["programs_subset_counts"] = subset_counts
    leaves = jax.tree_util.tree_leaves
    out["programs_equal"] = all(
        bool(np.array_equal(a, b))
        for name in ("eight_saved", "eight_loaded")
        for a, b in zip(leaves(results[name][1]), leaves(results["eight"][1]))
    )
    out["programs_subset_equal"] = all(
        bool(np.array_equal(a, b))
        for a, b in zip(leaves(results["two_cached"][1]), leaves(results["two"][1]))
    )

    max_rel = tree_rel_l2  # near-zero leaves don't amplify rounding

    for other in ("eight", "pmap"):
        out[f"params_{other}"] = max_rel(results[other][1].params, results["one"][1].params)
        out[f"stats_{other}"] = max_rel(results[other][1].batch_stats, results["one"][1].batch_stats)
    moved = max_rel(results["one"][1].params, state0.params)
    out["params_moved"] = moved
    # batch size not divisible by the device count: one clear line before compiling
    c2 = config_lib.base_config()
    c2.dataset, c2.batch_size, c2.image_size, c2.model = "synthetic", 12, 16, "tiny_inception"
    try:
        training.train_and_evaluate(c2, sys.argv[1])
        out["divisibility_error"] = None
    except ValueError as e:
        out["divisibility_error"] = str(e)
    # a run on 8 devices leaves a checkpoint that the test resumes on 1 device
    c3 = config_lib.base_config()
    c3.dataset, c3.image_size, c3.batch_size, c3.eval_batch_size = "synthetic", 16, 16, 16
    c3.model = "tiny_inception"
    c3.synthetic_examples, c3.num_classes, c3.num_epochs, c3.num_train_steps = 64, 4, -1, 2
    c3.compilation_cache_dir = ""
    training.train_and_evaluate(c3, os.path.join(sys.argv[1], "eight"))
    out["eight_device_workdir"] = os.path.join(sys.argv[1], "eight")
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
