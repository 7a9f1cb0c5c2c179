"""Where the time before the first training step goes: import, data, init, lowering,
XLA compile, and the first step itself; cold and with the persistent compilation cache.

    python benchmarks/first_step.py                       # the four cases below
    python benchmarks/first_step.py --cases googlenet:224:16 --json out.json
    python benchmarks/first_step.py --cases restart:googlenet:224:16,restart:inception_cifar:32:128

Each case runs twice in a fresh Python process with a new, empty compilation cache
directory: "cold" (the cache is empty) and "cached" (the second process finds the
first's entries). Both keep the traced programs on disk as train.py does
(``inception_jax/train/programs.py``; ``--no-programs`` turns that off), so "cached"
is a restart with the same code and config. A case is ``model:image_size:batch``;
``smoke`` is configs/smoke.py through train.py, timed from process start to its first
progress line. ``restart:model:image_size:batch`` is a resumed run through train.py
(synthetic data): the cold process trains one step and saves a checkpoint, the
cached one resumes from it; each is timed from process start to its first progress
line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = ("smoke", "inception_cifar:32:128", "googlenet:224:16", "inception_v3:299:8")


def child(model: str, size: int, batch: int, cache: str, programs: bool) -> dict:
    """Runs in the measured process: the trainer's real setup, phase by phase."""
    t_start = time.perf_counter()
    import jax

    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    import numpy as np

    sys.path.insert(0, ROOT)
    from inception_jax import config as config_lib
    from inception_jax import hostmem
    from inception_jax import train as training

    hostmem.follow("auto", jax_started=True)
    t = {"import": time.perf_counter() - t_start}

    s = time.perf_counter()
    c = config_lib.base_config()
    c.model, c.image_size, c.batch_size, c.optimizer = model, size, batch, "sgd"
    c.compilation_cache_dir, c.cache_traced_programs = cache, programs
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, (batch, size, size, 3)).astype(np.uint8)
    labels = rng.randint(0, 10, batch).astype(np.int32)
    t["data"] = time.perf_counter() - s

    s = time.perf_counter()
    model_ = training.build_model(c, 10)
    tx = training.make_optimizer(c, training.make_schedule(c, 100, 1000))
    # the traced programs on disk, as train.py keeps them
    saved = training.program_cache(c, num_classes=10, steps_per_epoch=100, total_steps=1000)
    state = training.create_train_state(model_, jax.random.PRNGKey(0), size, tx, saved)
    jax.block_until_ready(state)
    t["init"] = time.perf_counter() - s

    runner = training.Runner(model_, training.step_config(c), "shard_map", programs=saved)
    state = runner.put_replicated(state)
    idx = np.arange(batch, dtype=np.int32)
    args = (
        runner.put_batch(images),
        runner.put_batch(labels),
        runner.put_batch(np.ones(batch, np.float32)),
        runner.put_batch(idx),
        runner.put_replicated(jax.random.PRNGKey(1)),
    )
    s = time.perf_counter()
    lowered = runner._train.lower(state, *args)
    t["lower"] = time.perf_counter() - s
    s = time.perf_counter()
    compiled = lowered.compile()
    t["compile"] = time.perf_counter() - s
    s = time.perf_counter()
    state, m = compiled(state, *args)
    jax.block_until_ready(m)
    t["first step"] = time.perf_counter() - s
    t["total"] = time.perf_counter() - t_start
    return t


def train_py(workdir: str, cache: str, programs: bool, step: int = 1, **overrides) -> dict:
    """configs/smoke.py through train.py in ``workdir`` with ``overrides``: seconds from
    process start to the progress line of ``step``."""
    flags = dict(log_every_steps=1, compilation_cache_dir=cache, cache_traced_programs=programs, **overrides)
    start = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            os.path.join(ROOT, "train.py"),
            "--config",
            os.path.join(ROOT, "configs", "smoke.py"),
        ]
        + ["--workdir", workdir]
        + [f"--config.{k}={v}" for k, v in flags.items()],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    first, out = None, []
    for line in proc.stdout:
        out.append(line)
        if first is None and f"step {step}/" in line:
            first = time.perf_counter() - start
    if proc.wait() != 0 or first is None:
        raise SystemExit("".join(out[-30:]))
    return {"first progress line": first}


def smoke(cache: str, workdir: str, programs: bool) -> dict:
    return train_py(workdir, cache, programs)


def restart(model: str, size: int, batch: int, cache: str, workdir: str, programs: bool, step: int) -> dict:
    """train.py on synthetic data up to ``stop_at_step=step`` in ``workdir`` (resuming
    from its checkpoint when there is one): seconds to the first progress line."""
    return train_py(
        workdir,
        cache,
        programs,
        step,
        model=model,
        image_size=size,
        batch_size=batch,
        eval_batch_size=batch,
        synthetic_examples=8 * batch,
        stop_at_step=step,
    )


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--json", default="")
    p.add_argument(
        "--no-programs",
        action="store_true",
        help="without the traced programs kept on disk (config.cache_traced_programs=False)",
    )
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        model, size, batch, programs, cache = args.child.split(":", 4)
        print("RESULT " + json.dumps(child(model, int(size), int(batch), cache, programs == "1")))
        return
    rows = []
    for case in args.cases.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            cache = os.path.join(tmp, "xla")  # traced programs go to xla-programs beside it
            for i, run in enumerate(("cold", "cached")):
                if case.startswith("restart:"):
                    model, size, batch = case.split(":")[1:]
                    workdir = os.path.join(tmp, "workdir")
                    r = restart(model, int(size), int(batch), cache, workdir, not args.no_programs, i + 1)
                elif case == "smoke":
                    with tempfile.TemporaryDirectory() as workdir:
                        r = smoke(cache, workdir, not args.no_programs)
                else:
                    out = subprocess.run(
                        [sys.executable, __file__, "--child", f"{case}:{int(not args.no_programs)}:{cache}"],
                        capture_output=True,
                        text=True,
                        cwd=ROOT,
                    )
                    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
                    if not line:
                        raise SystemExit(out.stdout[-2000:] + out.stderr[-2000:])
                    r = json.loads(line[0][len("RESULT ") :])
                row = {"case": case, "run": run, **{k: round(v, 2) for k, v in r.items()}}
                rows.append(row)
                print("  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
