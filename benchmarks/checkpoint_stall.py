"""Does saving checkpoints slow the training step? inception_cifar at batch 128 (CPU by
default), synthetic data, the median step time of train.py's loop with
``checkpoint_every_steps=50`` against the same run without checkpoints.

    python benchmarks/checkpoint_stall.py [--steps 150] [--json out.json]

Progress is logged every 10 steps (a save has committed before the loop runs the next
step, so a window holding a save pays for it); the step time of each 10-step window is its wall time / 10, the
first window (compilation) left out, and the epoch is longer than the run (no
evaluation or end-of-epoch save inside the timing). The machine's speed drifts, so the
two settings run alternately (``--repeats`` times each, 3 by default) and the medians
pool the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def run(steps: int, every: int) -> dict:
    from configs.smoke import get_config
    from inception_jax import train as training

    c = get_config()
    c.model, c.image_size, c.batch_size, c.eval_batch_size = "inception_cifar", 32, 128, 128
    c.synthetic_examples, c.num_epochs, c.num_train_steps = 128 * (steps + 8), -1, steps
    c.log_every_steps, c.checkpoint_every_steps = 10, every
    with tempfile.TemporaryDirectory() as workdir:
        training.train_and_evaluate(c, workdir)
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            rows = [r for r in map(json.loads, f) if r.get("kind") == "train"]
        saved = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
    gaps = [(a["step"], (b["time"] - a["time"]) / (b["step"] - a["step"])) for a, b in zip(rows, rows[1:])]
    times = [t for _, t in gaps]
    around = [t for step, t in gaps if every and step // every != (step + 10) // every]  # a save inside
    return {"checkpoint_every_steps": every, "times": times, "around": around, "checkpoints": saved}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=110)
    p.add_argument("--repeats", type=int, default=3, help="runs of each setting, alternating")
    p.add_argument("--json", default="")
    args = p.parse_args()
    from inception_jax import hostmem

    hostmem.follow("auto", jax_started=False)
    runs = [run(args.steps, every) for _ in range(args.repeats) for every in (0, 50)]
    rows = []
    for every in (0, 50):
        mine = [r for r in runs if r["checkpoint_every_steps"] == every]
        rows.append(
            {
                "checkpoint_every_steps": every,
                "median_step_s": statistics.median(t for r in mine for t in r["times"]),
                "mean_step_s": statistics.mean(t for r in mine for t in r["times"]),
                "step_after_a_save_s": statistics.mean(t for r in mine for t in r["around"])
                if every
                else None,
                "checkpoints": mine[0]["checkpoints"],
            }
        )
    base = rows[0]["median_step_s"]
    for r in rows:
        after = (r["step_after_a_save_s"] or 0) * 1e3
        median, mean = r["median_step_s"] * 1e3, r["mean_step_s"] * 1e3
        print(
            f"checkpoint_every_steps={r['checkpoint_every_steps']:<3} median step {median:7.1f} ms "
            f"({100 * (r['median_step_s'] / base - 1):+.1f}%), mean {mean:7.1f} ms, "
            f"windows holding a save {after:7.1f} ms a step; saved {r['checkpoints']}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
