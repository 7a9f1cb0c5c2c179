"""The training loop's own cost per step, with a tiny model whose step is almost free.

    python benchmarks/loop_overhead.py [--steps 400] [--json out.json]

Measures steps/s of, on the same model, data and devices:

* ``bare step``: the jitted train step (``Runner.train``) on a batch already on the
  device, called in a tight loop;
* ``bare gather + step``: the in-memory data path's two calls per step (gather the
  batch from the dataset on the device, then train), in a tight loop;
* ``train.py loop``: ``train_and_evaluate`` (the loop train.py runs: index upload,
  metrics accumulation, progress lines, stop checks), timed over its steps after the
  first window (compilation excluded), for ``steps_per_call`` 1 and more.

The loop's TensorBoard writer imports tensorboardX (and with it PyTorch, when
installed: 1.5-4 s) on a thread started by the first progress line, once per run. In a
run of a few hundred tiny steps that import fell inside the timed windows and competed
with the loop for the GIL (130 steps/s against about 400 without it), so it is imported
here before any timing: what is measured is the cost of every step.

The model is ``tiny_inception`` (tests/reliability_worker.py: one Inception module at
8x8), batch 32, synthetic data. Each configuration runs in this one process, one after
the other, so they share the machine state.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))


def config(steps, steps_per_call=1):
    from configs.smoke import get_config

    c = get_config()
    c.model, c.image_size, c.batch_size = "tiny_inception", 8, 32
    # one epoch longer than the run: no evaluation, end-of-epoch save or plot in the timing
    c.synthetic_examples, c.num_epochs, c.num_train_steps = 32 * (steps + 64), -1, steps
    c.log_every_steps, c.steps_per_call, c.checkpoint_every_steps = 50, steps_per_call, 0
    c.scan_on_cpu = True  # measure the scanned calls, which the CPU otherwise runs one by one
    c.eval_batch_size = 32
    return c


def bare(steps: int, gather: bool) -> float:
    import jax

    from inception_jax import train as training
    from inception_jax.train import inputs

    c = config(steps)
    data = inputs.InMemoryData(c, *inputs.load_datasets(c))
    model = training.build_model(c, data.num_classes)
    tx = training.make_optimizer(c, training.make_schedule(c, data.steps_per_epoch, steps))
    state = training.create_train_state(model, jax.random.PRNGKey(0), 8, tx)
    runner = training.Runner(model, training.step_config(c), "shard_map")
    state = runner.put_replicated(state)
    data.place(runner, 0)
    key = runner.put_replicated(jax.random.PRNGKey(1))
    args = data.train_args(0)
    for _ in range(5):  # compile and warm up
        state, m = runner.train(state, *args, key)
    jax.block_until_ready(state)
    t = time.perf_counter()
    for _ in range(steps):
        if gather:
            images, labels = runner.gather(data.images, data.labels, args[3])
            state, m = runner.train(state, images, labels, args[2], args[3], key)
        else:
            state, m = runner.train(state, *args, key)
    jax.block_until_ready(state)
    return steps / (time.perf_counter() - t)


def loop(steps: int, steps_per_call: int) -> float:
    from inception_jax import train as training

    with tempfile.TemporaryDirectory() as workdir:
        training.train_and_evaluate(config(steps, steps_per_call), workdir)
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            rows = [json.loads(line) for line in f]
    windows = [r for r in rows if r.get("kind") == "train"][1:]  # the first holds the compile
    if len(windows) < 2:
        raise SystemExit("too few steps to time the loop; raise --steps")
    span = windows[-1]["step"] - windows[0]["step"]
    return span / (windows[-1]["time"] - windows[0]["time"])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--steps-per-call", default="1,10,25")
    p.add_argument("--json", default="")
    args = p.parse_args()
    import reliability_worker  # noqa: F401  (registers tiny_inception)

    from inception_jax import hostmem

    hostmem.follow("auto", jax_started=False)
    import tensorboardX  # noqa: F401  (the writer's one-off import, out of the timed windows)

    rows = [
        {"what": "bare step", "steps_per_s": bare(args.steps, gather=False)},
        {"what": "bare gather + step", "steps_per_s": bare(args.steps, gather=True)},
    ]
    for k in [int(x) for x in args.steps_per_call.split(",")]:
        rows.append({"what": f"train.py loop, steps_per_call={k}", "steps_per_s": loop(args.steps, k)})
    base = rows[0]["steps_per_s"]
    for r in rows:
        r["steps_per_s"] = round(r["steps_per_s"], 1)
        print(
            f"{r['what']:<36} {r['steps_per_s']:>8,.1f} steps/s  ({r['steps_per_s'] / base:.2f} x bare step)"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
