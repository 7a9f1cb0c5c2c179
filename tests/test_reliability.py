"""Reliability: real training processes are killed (SIGKILL), preempted
(SIGTERM / SIGINT), fed corrupt checkpoints, a full disk and bad records; the
checks are against an uninterrupted run of the same config, never against the
faulty run's own output. docs/reliability.md describes each fault."""

import json
import os
import random
import re
import shutil
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
    cfg = dict(
        model="tiny_inception",
        image_size=8,
        num_epochs=-1,
        num_train_steps=steps,
        synthetic_examples=256,
        batch_size=32,
        checkpoint_every_steps=INTERVAL,
        log_every_steps=1,
        keep_checkpoints=2,
        compilation_cache_dir=cache,
    )
    cfg.update(overrides)
    return [
        sys.executable,
        WORKER,
        "--config",
        os.path.join(ROOT, "configs", "smoke.py"),
        "--workdir",
        str(workdir),
    ] + [f"--config.{k}={v}" for k, v in cfg.items()]


def run(args, env=None, timeout=300):
    return subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=dict(os.environ, JAX_PLATFORMS="cpu", **(env or {})),
    )


def resumed_step(stdout: str) -> int:
    m = re.search(r"Resumed from step (\d+)", stdout)
    return int(m.group(1)) if m else 0


def read_checkpoint(path):
    """The arrays of one saved step, read with Orbax alone (no model code), onto one device
    whatever devices wrote them."""
    import jax
    import orbax.checkpoint as ocp

    ckptr = ocp.StandardCheckpointer()
    meta = ckptr.metadata(os.path.join(path, "state"))
    meta = getattr(meta, "item_metadata", meta)
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree_util.tree_map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one), meta)
    tree = ckptr.restore(os.path.join(path, "state"), target)
    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def steps_in(workdir):
    d = os.path.join(workdir, "checkpoints")
    return sorted(int(s) for s in os.listdir(d) if s.isdigit()) if os.path.isdir(d) else []


def tmp_dirs(workdir):
    d = os.path.join(workdir, "checkpoints")
    return [s for s in os.listdir(d) if "tmp" in s] if os.path.isdir(d) else []


# --- crash anywhere, preemption -----------------------------------------------------

TOTAL = 60  # enough steps that the plan of 10 kills + 3 stops never runs out of them


def test_killed_and_preempted_run_finishes_equal_to_an_uninterrupted_one(tmp_path, xla_cache):
    ref = run(flags(tmp_path / "ref", xla_cache, TOTAL))
    assert ref.returncode == 0, ref.stderr[-2000:]
    # the interrupted runs below call the init and step programs this run saved
    # (inception_jax/train/programs.py), so their equal result covers those too
    saved = {name.split("-")[0] for name in os.listdir(os.path.normpath(xla_cache) + "-programs")}
    assert {"eval_step", "init", "train_step"} <= saved, saved

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
        proc = subprocess.Popen(
            flags(work, xla_cache, TOTAL),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
            env=dict(os.environ, JAX_PLATFORMS="cpu"),
        )
        out = []
        n = kills + len(signals_seen)
        finishing = kills >= 10 and len(signals_seen) == len(polite)
        mode = (
            "finish"
            if finishing
            else ("polite" if n in polite else rng.choice(["startup", "step", "step", "save", "save"]))
        )
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
                # the save of `last` starts now (host copy and checksums on a background
                # thread first): kill once Orbax's temporary directory exists, mid-write
                deadline = time.time() + 3.0
                while not tmp_dirs(work) and time.time() < deadline:
                    time.sleep(0.002)
                time.sleep(rng.uniform(0.0, 0.02))
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


# --- streaming: grain's iterator state resumes to the example -----------------------
# (records: the synthetic cifar10 of synthetic_data.py, fixture synthetic_cifar)


def _example_log(path):
    """{step: record indices}, the last time each step was drawn (a killed run's steps
    after its last checkpoint are drawn again by the resumed one)."""
    steps = {}
    for line in open(path):
        step, ids = line.split(":")
        steps[int(step)] = ids.split()
    return steps


@pytest.mark.slow  # 70 s: three train.py runs
def test_streaming_run_killed_after_a_checkpoint_resumes_to_the_same_examples(
    synthetic_cifar, tmp_path, xla_cache
):
    streaming = dict(
        dataset="cifar10",
        data_dir=synthetic_cifar,
        train_split="train[:320]",  # 10 steps an epoch: the run crosses two reshuffles
        eval_split="train[448:485]",
        pipeline="streaming",
        pipeline_workers=2,
        num_classes=10,
    )
    total = 24
    logs = {k: tmp_path / f"{k}.log" for k in ("ref", "crash")}
    ref = run(
        flags(tmp_path / "ref", xla_cache, total, **streaming), {"RELIABILITY_EXAMPLE_LOG": str(logs["ref"])}
    )
    assert ref.returncode == 0, ref.stderr[-2000:]

    env = dict(os.environ, JAX_PLATFORMS="cpu", RELIABILITY_EXAMPLE_LOG=str(logs["crash"]))
    proc = subprocess.Popen(
        flags(tmp_path / "crash", xla_cache, total, **streaming),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env=env,
    )
    for line in proc.stdout:  # step 14 reported: the checkpoint of step 12 has committed
        if re.search(r"step 14/", line):
            break
    import psutil

    workers = psutil.Process(proc.pid).children(recursive=True)
    assert workers, "no grain worker processes"
    proc.kill()
    proc.wait()
    # the killed run's decoding workers die with it (they would hold memory and the pipe)
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, [p.pid for p in alive]
    assert steps_in(tmp_path / "crash")[-1] == 12
    again = run(
        flags(tmp_path / "crash", xla_cache, total, **streaming),
        {"RELIABILITY_EXAMPLE_LOG": str(logs["crash"])},
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert "Resumed from step 12" in again.stdout
    assert "holds no input-pipeline state" not in again.stdout  # grain's state was restored

    want, got = _example_log(logs["ref"]), _example_log(logs["crash"])
    assert sorted(want) == list(range(total)) and sorted(got) == list(range(total))
    for step in range(total):
        assert got[step] == want[step], f"step {step}"
    # every epoch is a permutation of the 320 records, reshuffled
    epochs = [sum((want[s] for s in range(e * 10, e * 10 + 10)), []) for e in range(2)]
    assert sorted(map(int, epochs[0])) == list(range(320)) == sorted(map(int, epochs[1]))
    assert epochs[0] != epochs[1]
    a = read_checkpoint(tmp_path / "ref" / "checkpoints" / str(total))
    b = read_checkpoint(tmp_path / "crash" / "checkpoints" / str(total))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(b[k], a[k], err_msg=k)


# --- bad checkpoints ----------------------------------------------------------------


def _toy_state(value: float, shape=(4, 3)):
    """A TrainState without a model: checkpoints of it are written/read by the real code."""
    import jax.numpy as jnp
    import optax

    from inception_jax.train import TrainState

    params = {"dense": {"kernel": jnp.full(shape, value), "bias": jnp.arange(shape[-1], dtype=jnp.float32)}}
    stats = {"bn": {"mean": jnp.full((shape[-1],), value / 2)}}
    return TrainState.create(apply_fn=None, params=params, batch_stats=stats, tx=optax.sgd(0.1, momentum=0.9))


def _toy_config():
    from inception_jax import config as config_lib

    return config_lib.base_config()


def _saved_run(workdir, steps=(1, 2, 3)):
    from inception_jax import checkpoint as ckpt_lib

    ckpt = ckpt_lib.Checkpointer(str(workdir), _toy_config(), keep=5)
    for s in steps:
        ckpt.save(s, _toy_state(float(s)).replace(step=s))
    ckpt.wait()
    ckpt.close()


def _files(step_dir):
    out = [os.path.join(r, f) for r, _, fs in os.walk(step_dir) for f in fs]
    return sorted(out, key=os.path.getsize, reverse=True)


def _garble(step_dir):  # flip bytes in the middle of every array data file
    for path in _files(os.path.join(step_dir, "state")):
        if "/d/" in path:
            data = bytearray(open(path, "rb").read())
            for i in range(len(data) // 2, min(len(data), len(data) // 2 + 16)):
                data[i] ^= 0xFF
            open(path, "wb").write(bytes(data))


def _truncate(step_dir):
    for path in _files(os.path.join(step_dir, "state")):
        if "/d/" in path:
            data = open(path, "rb").read()
            open(path, "wb").write(data[: len(data) // 3])


def _half_written(step_dir):  # the second half of its files never made it to disk
    for p in _files(step_dir)[::2]:
        os.remove(p)


def _swapped_data(step_dir):
    """Well-formed array files holding other bytes (a mixed-up copy, bit rot that keeps the
    format): Orbax restores it without complaint; only the saved checksums catch it."""
    parent = os.path.dirname(step_dir)
    oldest = min((d for d in os.listdir(parent) if d.isdigit()), key=int)
    src = os.path.join(parent, oldest, "state")
    for name in ("ocdbt.process_0", "d", "manifest.ocdbt"):
        dest = os.path.join(step_dir, "state", name)
        if os.path.isdir(dest):
            shutil.rmtree(dest)
            shutil.copytree(os.path.join(src, name), dest)
        elif os.path.exists(dest):
            shutil.copy(os.path.join(src, name), dest)


def _metadata_garbage(step_dir):
    for p in _files(step_dir):
        if p.endswith("_METADATA") or p.endswith("manifest.ocdbt"):
            open(p, "wb").write(b"\x00garbage")


@pytest.mark.parametrize(
    "damage",
    [_garble, _truncate, _half_written, _metadata_garbage, _swapped_data],
    ids=["garbled", "truncated", "half-written", "metadata", "swapped-data"],
)
def test_a_bad_newest_checkpoint_falls_back_to_the_previous_good_one(tmp_path, damage):
    from inception_jax import checkpoint as ckpt_lib

    _saved_run(tmp_path)
    damage(str(tmp_path / "checkpoints" / "3"))
    lines = []
    ckpt = ckpt_lib.Checkpointer(str(tmp_path), _toy_config(), log=lines.append)
    state, step = ckpt.restore_latest(_toy_state(0.0))
    assert step == 2
    np.testing.assert_array_equal(np.asarray(state.params["dense"]["kernel"]), np.full((4, 3), 2.0))
    np.testing.assert_array_equal(np.asarray(state.batch_stats["bn"]["mean"]), np.full((3,), 1.0))
    assert len(lines) == 1 and "\n" not in lines[0]
    assert re.match(
        r"latest checkpoint step 3 is unreadable \(.+\); moved it to .*corrupt.*; trying step 2", lines[0]
    ), lines[0]
    # moved aside, not deleted; the step can be written again
    assert sorted(os.listdir(tmp_path / "corrupt"))[0].startswith("checkpoints-3-")
    ckpt.save(3, _toy_state(9.0).replace(step=3))
    ckpt.wait()
    assert steps_in(tmp_path) == [1, 2, 3]


def test_all_checkpoints_bad_starts_fresh_and_says_so(tmp_path):
    from inception_jax import checkpoint as ckpt_lib

    _saved_run(tmp_path, steps=(1, 2))
    _garble(str(tmp_path / "checkpoints" / "2"))
    _truncate(str(tmp_path / "checkpoints" / "1"))
    lines = []
    ckpt = ckpt_lib.Checkpointer(str(tmp_path), _toy_config(), log=lines.append)
    state, step = ckpt.restore_latest(_toy_state(7.0))
    assert step == 0 and float(state.params["dense"]["kernel"][0, 0]) == 7.0
    assert "trying step 1" in lines[0] and "none left" in lines[1]
    assert lines[2] == "No readable checkpoint left: starting from scratch"
    assert len(os.listdir(tmp_path / "corrupt")) == 2


def test_a_checkpoint_of_other_shapes_is_refused_not_moved(tmp_path):
    from inception_jax import checkpoint as ckpt_lib

    _saved_run(tmp_path, steps=(1,))
    os.remove(tmp_path / "config.json")  # the config guard cannot help: the shapes must
    ckpt = ckpt_lib.Checkpointer(str(tmp_path), _toy_config())
    with pytest.raises(
        ValueError,
        match=r"checkpoint step 1 has \['params'\]\['dense'\]\['kernel'\] of "
        r"shape \(4, 3\), this config builds \(5, 3\)",
    ):
        ckpt.restore_latest(_toy_state(0.0, shape=(5, 3)))
    assert steps_in(tmp_path) == [1] and not (tmp_path / "corrupt").exists()


def test_a_corrupt_checkpoint_through_train_py_is_one_line_and_the_run_resumes(tmp_path, xla_cache):
    first = run(flags(tmp_path, xla_cache, 7, keep_checkpoints=3))
    assert first.returncode == 0, first.stderr[-2000:]
    assert steps_in(tmp_path) == [3, 6, 7]
    _swapped_data(str(tmp_path / "checkpoints" / "7"))  # step 6's arrays under step 7's name
    again = run(flags(tmp_path, xla_cache, 9, keep_checkpoints=3))
    assert again.returncode == 0, again.stderr[-2000:]
    assert re.search(
        r"^latest checkpoint step 7 is unreadable \(ValueError: checksum mismatch.*\); moved "
        r"it to .*; trying step 6$",
        again.stdout,
        re.M,
    ), again.stdout
    assert "Resumed from step 6" in again.stdout and "Traceback" not in again.stderr
    assert steps_in(tmp_path) == [6, 8, 9]


# --- disk trouble -------------------------------------------------------------------


def test_a_failing_disk_during_a_save_is_one_line_and_keeps_earlier_checkpoints(tmp_path, xla_cache):
    first = run(flags(tmp_path, xla_cache, 4))
    assert first.returncode == 0, first.stderr[-2000:]
    assert steps_in(tmp_path) == [3, 4]
    saved = read_checkpoint(tmp_path / "checkpoints" / "4")
    # every file this process writes is capped at 4 KB (RLIMIT_FSIZE: writes past it fail with
    # EFBIG like a full disk): the config and metrics fit, the checkpoint at step 6 cannot
    full = run(flags(tmp_path, xla_cache, 9), env={"RELIABILITY_FSIZE_LIMIT": "4096"})
    assert full.returncode == 2, (full.stdout[-1500:], full.stderr[-1500:])
    last = full.stderr.strip().splitlines()[-1]
    assert re.match(
        r"error: could not write checkpoint step 6 in .* \(.*File too large.*\); earlier "
        r"checkpoints are intact \(newest: step 4\); free disk space",
        last,
    ), last
    assert "Traceback" not in full.stderr
    assert steps_in(tmp_path) == [3, 4]
    # the failed save's files are gone (a late Orbax thread may leave empty directories,
    # which the next start removes)
    partial = [
        f for d in tmp_dirs(tmp_path) for _, _, fs in os.walk(tmp_path / "checkpoints" / d) for f in fs
    ]
    assert partial == []
    after = read_checkpoint(tmp_path / "checkpoints" / "4")
    for k in saved:
        np.testing.assert_array_equal(after[k], saved[k])
    resumed = run(flags(tmp_path, xla_cache, 9))
    assert resumed.returncode == 0 and "Resumed from step 4" in resumed.stdout
    assert not tmp_dirs(tmp_path)


def test_an_unwritable_workdir_fails_before_training(tmp_path):
    from inception_jax import train as training

    sys.path.insert(0, ROOT)
    from configs.smoke import get_config

    (tmp_path / "a_file").write_text("x")
    with pytest.raises(
        ValueError,
        match=r"workdir '.*a_file/run' is not writable \(.*\); pick another "
        r"--workdir",
    ):
        training.train_and_evaluate(get_config(), str(tmp_path / "a_file" / "run"))


# --- several processes --------------------------------------------------------------


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def start_two_processes(args, outdir=None, env=None):
    """Starts ``args`` as the 2 processes of one jax.distributed job on localhost; their
    output piped (text), or written to ``outdir/p<i>.log``."""
    port = _free_port()
    procs = []
    for i in range(2):
        out = open(os.path.join(outdir, f"p{i}.log"), "w") if outdir else subprocess.PIPE
        try:
            procs.append(
                subprocess.Popen(
                    args,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    text=True,
                    cwd=ROOT,
                    env=dict(
                        os.environ,
                        JAX_PLATFORMS="cpu",
                        JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
                        JAX_NUM_PROCESSES="2",
                        JAX_PROCESS_ID=str(i),
                        **(env or {}),
                    ),
                )
            )
        finally:
            if outdir:
                out.close()
    return procs


def _two_processes(args, timeout):
    """Runs ``args`` as the 2 processes of one jax.distributed job on localhost; returns
    their outputs, after both exited 0 (a hang is killed after ``timeout`` and fails)."""
    procs = start_two_processes(args)
    try:
        outs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()  # processes waiting on each other would otherwise stay
    assert [p.returncode for p in procs] == [0, 0], outs[0][-1500:] + outs[1][-1500:]
    return outs


def test_two_processes_train_like_one_and_their_checkpoint_resumes_in_one(tmp_path, xla_cache):
    outs = _two_processes(flags(tmp_path / "two", xla_cache, 6), timeout=300)
    one = run(flags(tmp_path / "one", xla_cache, 6))
    assert one.returncode == 0, one.stderr[-1500:]
    # each process fed half of every global batch of 32 (its own shard of the batch)
    losses = lambda text: re.findall(r"step \d+/6 loss (\d+\.\d+)", text)  # noqa: E731
    assert len(losses(outs[0])) == 6 and losses(outs[0]) == losses(one.stdout)
    assert losses(outs[1]) == []  # only process 0 reports
    a = read_checkpoint(tmp_path / "two" / "checkpoints" / "6")
    b = read_checkpoint(tmp_path / "one" / "checkpoints" / "6")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=2e-5, atol=1e-6, err_msg=k)
    # the checkpoint the two processes wrote resumes in one
    more = run(flags(tmp_path / "two", xla_cache, 8))
    assert more.returncode == 0, more.stderr[-1500:]
    assert "Resumed from step 6" in more.stdout and steps_in(tmp_path / "two")[-1] == 8


@pytest.mark.slow  # 30 s: two train.py processes and an evaluation
def test_two_streaming_processes_evaluate_every_example_once_over_uneven_shards(
    synthetic_cifar, tmp_path, xla_cache
):
    """Two jax.distributed processes stream their own shards; the eval split has 33
    examples: shards of 17 and 16, batches of 8 per process, so one shard needs a third
    batch and the other does not. The run finishes (no
    process waits on a batch the other never runs) and its evaluation equals one
    process's evaluation of the same checkpoint, which covers the 33 once by itself."""
    cfg = dict(
        dataset="cifar10",
        data_dir=synthetic_cifar,
        train_split="train[:256]",
        eval_split="train[448:481]",
        pipeline="streaming",
        pipeline_workers=1,
        num_classes=10,
        eval_batch_size=16,
    )
    _two_processes(flags(tmp_path / "two", xla_cache, 4, **cfg), timeout=180)
    with open(tmp_path / "two" / "metrics.jsonl") as f:
        last = [json.loads(line) for line in f][-1]

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import reliability_worker  # noqa: F401  (registers tiny_inception)

    from configs.smoke import get_config
    from inception_jax import train as training

    c = get_config()
    for k, v in dict(
        cfg, model="tiny_inception", image_size=8, batch_size=32, num_epochs=-1, num_train_steps=4
    ).items():
        c[k] = v
    one = training.evaluate_workdir(c, str(tmp_path / "two"), which="latest")
    assert one["step"] == 4
    assert last["eval_accuracy"] == pytest.approx(one["accuracy"], abs=1e-9)
    assert last["eval_loss"] == pytest.approx(one["loss"], rel=1e-5)


# --- bad data -----------------------------------------------------------------------
BAD = (5, 17, 40)


@pytest.fixture(scope="module")
def bad_cifar(tmp_path_factory, synthetic_cifar):
    """The first 64 records of the synthetic cifar10 (synthetic_data.py; JPEGs in ArrayRecord
    files, as the real copy), written as a new tfds dataset in which records 5, 17 and 40
    hold a JPEG whose header is destroyed (the record stays well-formed)."""
    src_dir = os.path.join(synthetic_cifar, "cifar10", "3.0.2")
    from array_record.python import array_record_module as ar

    root = tmp_path_factory.mktemp("tfds")
    dest = root / "cifar10" / "3.0.2"
    dest.mkdir(parents=True)
    reader = ar.ArrayRecordReader(os.path.join(src_dir, "cifar10-train.array_record-00000-of-00001"))
    records = reader.read(list(range(64)))
    reader.close()
    writer = ar.ArrayRecordWriter(str(dest / "cifar10-train.array_record-00000-of-00001"), "group_size:1")
    for i, rec in enumerate(records):
        if i in BAD:
            at = rec.index(b"\xff\xd8\xff")
            rec = rec[:at] + b"\x00" * 64 + rec[at + 64 :]
        writer.write(rec)
    writer.close()
    for name in ("features.json", "label.labels.txt"):
        shutil.copy(os.path.join(src_dir, name), dest / name)
    with open(os.path.join(src_dir, "dataset_info.json")) as f:
        info = json.load(f)
    info["splits"] = [
        dict(info["splits"][0], shardLengths=["64"], numBytes=str(sum(len(r) for r in records)))
    ]
    (dest / "dataset_info.json").write_text(json.dumps(info))
    return str(root)


def _originals(data_dir):
    import tensorflow_datasets as tfds

    src = tfds.data_source("cifar10", split="train[:64]", data_dir=data_dir)
    return [(np.asarray(src[i]["image"]), int(src[i]["label"])) for i in range(64)]


def test_bad_records_stop_the_run_with_one_line_by_default(bad_cifar):
    from inception_jax.data import source

    with pytest.raises(
        ValueError,
        match=r"^record 5 could not be decoded \(.+\); set "
        r"--config.bad_records=skip",
    ):
        source.load_in_memory("cifar10", "train", bad_cifar, bad_records="error", threads=1, chunk=8)


def test_skipped_bad_records_are_counted_and_labels_stay_with_their_images(bad_cifar, synthetic_cifar):
    from inception_jax.data import source, streaming

    good = [i for i in range(64) if i not in BAD]
    orig = _originals(synthetic_cifar)
    ds = source.load_in_memory("cifar10", "train", bad_cifar, bad_records="skip", threads=3, chunk=8)
    assert ds.skipped == 3 and len(ds) == 61
    np.testing.assert_array_equal(ds.labels, [orig[i][1] for i in good])
    np.testing.assert_array_equal(ds.images, np.stack([orig[i][0] for i in good]))
    # the streaming pipeline (grain, one worker process) masks them out instead: the batch
    # keeps its shape
    from inception_jax.data import transforms

    loader = streaming.StreamingLoader(
        "cifar10", "train", bad_cifar, 32, 64, train=False, workers=1, bad_records="skip"
    )
    (batch,) = list(loader.batches())
    valid = np.asarray(batch["valid"])
    assert np.flatnonzero(~valid).tolist() == list(BAD)
    np.testing.assert_array_equal(np.asarray(batch["label"])[valid], [orig[i][1] for i in good])
    np.testing.assert_array_equal(np.asarray(batch["image"])[0], transforms.eval_transform(orig[0][0], 32))
    with pytest.raises(ValueError, match=r"^record 5 could not be decoded"):
        next(
            streaming.StreamingLoader("cifar10", "train", bad_cifar, 32, 64, train=False, workers=1).batches()
        )
