"""Reliability: real training processes are killed (SIGKILL), preempted
(SIGTERM / SIGINT), fed corrupt checkpoints, a full disk and bad records; the
checks are against an uninterrupted run of the same config, never against the
faulty run's own output. docs/reliability.md describes each fault."""

import os
import random
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "reliability_worker.py")
INTERVAL = 3  # checkpoint_every_steps


@pytest.fixture(scope="module")
def xla_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("xla"))


def flags(workdir, cache, steps, **overrides):
    cfg = dict(model="tiny_inception", image_size=8, num_epochs=-1, num_train_steps=steps,
               synthetic_examples=256, batch_size=32, checkpoint_every_steps=INTERVAL,
               log_every_steps=1, keep_checkpoints=2, compilation_cache_dir=cache)
    cfg.update(overrides)
    return ([sys.executable, WORKER, "--config", os.path.join(ROOT, "configs", "smoke.py"),
             "--workdir", str(workdir)] + [f"--config.{k}={v}" for k, v in cfg.items()])


def run(args, env=None, timeout=300):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env=dict(os.environ, JAX_PLATFORMS="cpu", **(env or {})))


def resumed_step(stdout: str) -> int:
    m = re.search(r"Resumed from step (\d+)", stdout)
    return int(m.group(1)) if m else 0


def read_checkpoint(path):
    """The arrays of one saved step, read with Orbax alone (no model code)."""
    import orbax.checkpoint as ocp

    tree = ocp.StandardCheckpointer().restore(os.path.join(path, "state"))
    import jax
    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def steps_in(workdir):
    d = os.path.join(workdir, "checkpoints")
    return sorted(int(s) for s in os.listdir(d) if s.isdigit()) if os.path.isdir(d) else []


def tmp_dirs(workdir):
    d = os.path.join(workdir, "checkpoints")
    return [s for s in os.listdir(d) if "tmp" in s] if os.path.isdir(d) else []


# --- crash anywhere, preemption -----------------------------------------------------

TOTAL = 40


def test_killed_and_preempted_run_finishes_equal_to_an_uninterrupted_one(tmp_path, xla_cache):
    ref = run(flags(tmp_path / "ref", xla_cache, TOTAL))
    assert ref.returncode == 0, ref.stderr[-2000:]

    rng = random.Random(0)
    work = tmp_path / "crash"
    kills, mid_write, signals_seen, starts = 0, 0, [], 0
    # interruption plan: SIGKILLs at random moments (startup, any step, right after a
    # checkpoint step while its save is being written) and three polite stops
    polite = {3: signal.SIGTERM, 7: signal.SIGINT, 11: signal.SIGTERM}
    while True:
        starts += 1
        assert starts < 30, "the run never finished"
        before = steps_in(work)
        proc = subprocess.Popen(flags(work, xla_cache, TOTAL), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                                env=dict(os.environ, JAX_PLATFORMS="cpu"))
        out = []
        n = kills + len(signals_seen)
        finishing = kills >= 10 and len(signals_seen) == len(polite)
        mode = "finish" if finishing else (
            "polite" if n in polite else rng.choice(["startup", "step", "step", "save", "save"]))
        start_time = time.time()
        t_kill = start_time + rng.uniform(0.5, 5.0)
        target, last = None, None
        resumed = None
        for line in proc.stdout:
            out.append(line)
            if resumed is None and ("step" in line):
                resumed = resumed_step("".join(out))
            m = re.search(r"step (\d+)/", line)
            if not m:
                continue
            last = int(m.group(1))
            if target is None:
                target = last + rng.randint(0, 5)
            if mode == "startup" and time.time() > t_kill:
                break
            if mode in ("step", "polite") and last >= target:
                break
            if mode == "save" and last >= target and last % INTERVAL == 0:
                time.sleep(rng.uniform(0.0, 0.15))  # the save of `last` is being written now
                break
        if mode == "finish":
            proc.wait(timeout=120)
            assert proc.returncode == 0, "".join(out)[-2000:]
            assert resumed_step("".join(out)) == (before[-1] if before else 0)
            break
        if mode == "polite":
            sig = polite[n]
            proc.send_signal(sig)
            rest, _ = proc.communicate(timeout=120)
            text = "".join(out) + rest
            assert proc.returncode == 0, text[-2000:]
            m = re.search(rf"Stopped by {sig.name} after step (\d+): checkpoint saved", text)
            assert m, text[-2000:]
            stopped = int(m.group(1))
            assert stopped >= last and steps_in(work)[-1] == stopped  # nothing lost
            signals_seen.append(sig.name)
            continue
        if proc.poll() is not None:  # finished before the kill: the plan ran out of steps
            proc.wait()
            assert proc.returncode == 0
            break
        proc.kill()
        proc.wait()
        kills += 1
        mid_write += bool(tmp_dirs(work))
        # the next start resumes no further back than one checkpoint interval
        if last is not None:
            nxt = steps_in(work)
            assert nxt and nxt[-1] >= last - INTERVAL, (last, nxt)
    assert kills >= 10 and mid_write >= 1, (kills, mid_write)

    final_ref = read_checkpoint(tmp_path / "ref" / "checkpoints" / str(TOTAL))
    final = read_checkpoint(work / "checkpoints" / str(TOTAL))
    assert final_ref.keys() == final.keys()
    for k in final_ref:
        np.testing.assert_array_equal(final[k], final_ref[k], err_msg=k)
