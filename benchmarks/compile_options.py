"""XLA compiler options for the train step, compared in one process: compile time,
step time, and whether the numbers stay the same.

    python benchmarks/compile_options.py --model googlenet --batch-size 16 \\
        --options '{}' '{"xla_backend_optimization_level": 1}'
    XLA_FLAGS=--xla_cpu_enable_fast_min_max=false python benchmarks/compile_options.py ...

The trainer's train step (throughput.py's case: ``Runner``, shard_map, SGD with
momentum, here with weight decay 1e-4, the config's own ``cpu_kernels``) is traced
and lowered once; then each option set (a JSON object of XLA debug options, the
first is the reference) is compiled from that same lowered program, in turn,
``--repeats`` times, and runs ``--steps`` steps from the same state and batch.
Measuring in one process leaves out what makes process-to-process timings of a cold
start noisy on a small machine (start-up, import, tracing, page faults): on the
2-core CPU, googlenet's cold "compile s" in ``throughput.py`` varied from 14.8 to
22.6 s between runs of the same code, the XLA compile measured here by about +-1 s.

JAX caches a compiled program per (program, options), so every compile here also
carries a harmless, different ``xla_dump_max_hlo_modules``. Options XLA reads only
from the ``XLA_FLAGS`` environment variable (``xla_backend_extra_options`` and
others) need two runs of this script: ``--save`` in one, ``--against`` in the other.

Printed per option set: the compile times (wall, and the process's CPU time during
it), the first run of each compiled program, the median of the steps after it, and,
against the first option set, how many of the state's arrays (params, BatchNorm
statistics, momentum) differ after the steps.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _compare(reference: dict, other: dict) -> str:
    differ = [k for k in reference if reference[k].tobytes() != other[k].tobytes()]
    if not differ:
        return "bitwise equal"
    worst = max(float(np.max(np.abs(reference[k].astype(np.float64) - other[k]))) for k in differ)
    return f"{len(differ)}/{len(reference)} arrays differ (max {worst:.2g})"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="googlenet")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--image-size", type=int, default=0, help="0: the model's own")
    p.add_argument("--options", nargs="+", default=["{}"], help="JSON objects; the first is the reference")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--steps", type=int, default=3, help="steps run with each compiled program")
    p.add_argument("--save", help="write the reference's state after the steps to this .npz")
    p.add_argument(
        "--against", help="a --save file (another run, other XLA_FLAGS) to compare the reference with"
    )
    a = p.parse_args()
    if a.against and not os.path.isfile(a.against):
        sys.exit(f"--against {a.against}: no such file; write it with --save in a first run")
    example = "'{\"xla_backend_optimization_level\": 1}'"
    try:
        option_sets = [json.loads(o) for o in a.options]
    except json.JSONDecodeError as e:
        sys.exit(f"--options: each must be a JSON object such as {example} ({e})")
    for o in option_sets:
        if not isinstance(o, dict):
            sys.exit(f"--options: {json.dumps(o)} is not a JSON object; expected one such as {example}")

    from inception_jax import hostmem

    hostmem.reuse_freed_memory()  # as train.py sets the process up
    import jax
    from throughput import jax_train_case  # the same case throughput.py measures

    from inception_jax import models
    from inception_jax.errors import first_line

    size = a.image_size or models.get_info(a.model).default_input_size
    runner, state, batch = jax_train_case(a.model, a.batch_size, size, weight_decay=1e-4)
    state0 = jax.device_get(state)
    t = time.perf_counter()
    lowered = runner._train.lower(runner.put_replicated(state0), *batch)  # as first_step.py
    print(f"{a.model} {size}px batch {a.batch_size}: traced and lowered in {time.perf_counter() - t:.2f} s")

    compiles = [[] for _ in option_sets]
    cpu = [[] for _ in option_sets]
    steps = [[] for _ in option_sets]
    first_runs = [[] for _ in option_sets]
    finals = [None for _ in option_sets]
    n = 0
    for _ in range(a.repeats):
        for i, options in enumerate(option_sets):
            n += 1
            c0, t0 = _cpu_seconds(), time.perf_counter()
            try:
                compiled = lowered.compile(compiler_options={**options, "xla_dump_max_hlo_modules": 1000 + n})
            except Exception as e:  # an option this XLA does not take
                sys.exit(f"--options {json.dumps(options)}: XLA refused it ({first_line(e, limit=None)})")
            compiles[i].append(time.perf_counter() - t0)
            cpu[i].append(_cpu_seconds() - c0)
            state = runner.put_replicated(state0)
            for k in range(a.steps):
                t0 = time.perf_counter()
                state, m = compiled(state, *batch)
                jax.block_until_ready(m)
                # the first run of a program also loads it (and sets up its library calls)
                (steps[i] if k else first_runs[i]).append(time.perf_counter() - t0)
            if finals[i] is None:
                leaves = jax.tree_util.tree_leaves_with_path(jax.device_get(state))
                finals[i] = {jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves}
            print(f"  {json.dumps(options)}: compile {compiles[i][-1]:.2f} s", flush=True)

    reference = finals[0]
    if a.save:
        np.savez(a.save, **reference)
    if a.against:
        saved = dict(np.load(a.against))
        if sorted(saved) != sorted(reference):
            sys.exit(f"--against {a.against}: not a state of {a.model} (other arrays); save one with --save")
        print(f"against {a.against}: {_compare(reference, saved)}")
    print()
    for i, options in enumerate(option_sets):
        same = _compare(reference, finals[i])
        step_ms = 1e3 * statistics.median(steps[i]) if steps[i] else float("nan")
        print(
            f"{json.dumps(options):<48} compile {', '.join(f'{x:.2f}' for x in compiles[i])} s "
            f"(CPU {', '.join(f'{x:.1f}' for x in cpu[i])} s)  first run "
            f"{', '.join(f'{1e3 * x:.0f}' for x in first_runs[i])} ms  step {step_ms:.0f} ms  {same}"
        )


if __name__ == "__main__":
    main()
