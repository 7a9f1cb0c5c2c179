"""Wall time until a config reaches a target eval accuracy, everything included
(imports, data loading and decoding, compilation, training, evaluation).

    python benchmarks/time_to_accuracy.py --config configs/cifar10_fast.py \
        --data_dir ~/tensorflow_datasets --target 0.94 [--json out.json]

The clock starts when this script starts. The run trains in a fresh temporary
workdir on a held-out split of the training data (default: train[:45000], eval
on train[45000:], for a copy without the test split), evaluates after every
epoch, and reports the first epoch whose eval accuracy reaches ``--target``.
The persistent compilation cache is off unless ``--warm-cache DIR`` is given
(then run it twice: the second run shows the cached start). ``--set key=value``
overrides config keys (``--set num_epochs=10``).
"""

from __future__ import annotations

import time

T0 = time.time()

import argparse  # noqa: E402
import ast  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _load_config(path: str):
    spec = importlib.util.spec_from_file_location("bench_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def _parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=os.path.join(ROOT, "configs", "cifar10_fast.py"))
    p.add_argument("--data_dir", default=None)
    p.add_argument("--train_split", default="train[:45000]")
    p.add_argument("--eval_split", default="train[45000:]")
    p.add_argument("--target", type=float, default=0.94)
    p.add_argument("--workdir", default=None, help="default: a fresh temporary directory")
    p.add_argument("--warm-cache", default="", help="persistent compilation cache directory")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", default=None)
    return p


def _cache_entries(path: str) -> int:
    path = os.path.expanduser(path)
    return len(os.listdir(path)) if path and os.path.isdir(path) else 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cached_at_start = _cache_entries(args.warm_cache)

    import jax

    from inception_jax import train as training

    config = _load_config(args.config)
    config.data_dir = args.data_dir
    config.train_split, config.eval_split = args.train_split, args.eval_split
    config.compilation_cache_dir = args.warm_cache
    if args.warm_cache:
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(args.warm_cache))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in config:
            print(f"error: --set {item!r}: unknown config key {key!r}", file=sys.stderr)
            return 2
        config[key] = _parse_value(value)
    workdir = args.workdir or tempfile.mkdtemp(prefix="tta_")
    if os.path.isdir(os.path.join(workdir, "checkpoints")):
        print(
            f"error: --workdir {workdir!r} already holds a run; the clock must start from scratch",
            file=sys.stderr,
        )
        return 2
    try:
        out = training.train_and_evaluate(config, workdir)
    except (ValueError, FloatingPointError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # gpu_suite.sh's time budget: report the epochs that finished
        interrupted, out = True, None
        print("interrupted: reporting the epochs that finished", file=sys.stderr)
    else:
        # the trainer turns a first SIGINT into "stop after this step and save"
        interrupted = out.get("stopped_by") is not None
    t_end = time.time()
    epochs = []
    metrics = os.path.join(workdir, "metrics.jsonl")
    with open(metrics) if os.path.exists(metrics) else open(os.devnull) as f:
        for line in f:
            rec = json.loads(line)
            if rec.get("kind") == "epoch":
                epochs.append(
                    {
                        "epoch": rec["epoch"],
                        "wall_s": rec["time"] - T0,
                        "eval_accuracy": rec["eval_accuracy"],
                        "train_loss": rec["train_loss"],
                    }
                )
    print(f"\n{'epoch':>5} {'wall s':>8} {'eval acc':>9}")
    for e in epochs:
        print(f"{e['epoch']:>5} {e['wall_s']:>8.1f} {100 * e['eval_accuracy']:>8.2f}%")
    hit = next((e for e in epochs if e["eval_accuracy"] >= args.target), None)
    dev = jax.devices()[0]
    result = {
        "config": os.path.relpath(args.config, ROOT),
        "target": args.target,
        "reached": hit is not None,
        "time_to_target_s": hit["wall_s"] if hit else None,
        "epoch_reached": hit["epoch"] if hit else None,
        "final_eval_accuracy": out["eval_accuracy"] if out else None,
        "interrupted": interrupted,
        "total_wall_s": t_end - T0,
        "device": f"{dev.platform}:{getattr(dev, 'device_kind', '')}",
        "warm_cache": bool(args.warm_cache),
        "cache_entries_at_start": cached_at_start,
        "epochs": epochs,
        "date": time.strftime("%Y-%m-%d"),
        "jax": jax.__version__,
    }
    if hit:
        print(
            f"reached {100 * args.target:.2f}% at epoch {hit['epoch']} after {hit['wall_s']:.1f} s "
            f"(from script start; data loading and compilation included) on {result['device']}"
        )
    else:
        last = f"{100 * epochs[-1]['eval_accuracy']:.2f}%" if epochs else "no epoch finished"
        print(
            f"did not reach {100 * args.target:.2f}%{' (interrupted)' if interrupted else ''}: "
            f"last eval {last} after {t_end - T0:.1f} s on {result['device']}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
