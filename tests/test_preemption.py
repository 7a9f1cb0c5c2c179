"""Preemption of a run of several processes: 2 ``jax.distributed`` CPU processes on
localhost run ``train.py`` with the tiny model of reliability_worker.py; SIGTERM goes to
every process (as a cluster manager sends it) or to one of them. Every process must stop
after the same step, save it and exit 0 (a hang fails the test after a timeout), and the
rerun of the same command must end with the params of an uninterrupted run, exactly.
docs/reliability.md describes the mechanism."""

import os
import re
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
from test_reliability import flags, read_checkpoint, start_two_processes, steps_in, tmp_dirs

TOTAL = 40  # steps of every run here
STEP_SECONDS = 0.1  # the interrupted runs sleep this long before each step
AFTER = 4  # the signal goes out once process 0 has printed this step
TIMEOUT = 120  # a run that has not exited by then has hung: killed, the test fails


@pytest.fixture(scope="module")
def xla_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("xla"))


def _flags(workdir, cache, **overrides):
    # one epoch of TOTAL steps: its evaluation, and the save to best/ beside the one to
    # checkpoints/, come only at the end (those two saves at once, by 2 processes, can
    # fail in Orbax: a barrier of the same name for both managers)
    # checkpoint_every_steps=0: the save at the stop is the only one before the end
    cfg = dict(synthetic_examples=32 * TOTAL, checkpoint_every_steps=0)
    return flags(workdir, cache, TOTAL, **{**cfg, **overrides})


def _outputs(outdir):
    return [open(os.path.join(outdir, f"p{i}.log")).read() for i in range(2)]


def _wait(procs, outdir, deadline):
    """Both exit codes; processes still running at ``deadline`` are killed (a hang)."""
    try:
        for p in procs:
            p.wait(timeout=max(deadline - time.time(), 0.1))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    outs = _outputs(outdir)
    hung = [p.returncode for p in procs if p.returncode in (-signal.SIGKILL,)]
    assert not hung, "hung, killed after the timeout:\n" + outs[0][-1500:] + "\n" + outs[1][-1500:]
    return [p.returncode for p in procs], outs


def _interrupt(workdir, cache, sig, targets, **overrides):
    """Starts the 2 processes (each step slowed by STEP_SECONDS), sends ``sig`` to the
    processes ``targets`` once process 0 printed step AFTER, and waits for both to exit.
    Returns what happened: exit codes, outputs, the step after which each process was
    told to stop (RELIABILITY_STOP_LOG), the step printed when the signal went out."""
    work, logs = os.path.join(workdir, "run"), os.path.join(workdir, "logs")
    os.makedirs(logs)
    stop_log = os.path.join(workdir, "stops.txt")
    env = {"RELIABILITY_STEP_SECONDS": str(STEP_SECONDS), "RELIABILITY_STOP_LOG": stop_log}
    procs = start_two_processes(_flags(work, cache, **overrides), logs, env)
    deadline = time.time() + TIMEOUT
    printed = None
    while printed is None and time.time() < deadline and all(p.poll() is None for p in procs):
        steps = re.findall(r"step (\d+)/", _outputs(logs)[0])
        if steps and int(steps[-1]) >= AFTER:
            printed = int(steps[-1])
        else:
            time.sleep(0.02)
    if printed is not None:
        for i in targets:
            procs[i].send_signal(sig)
    codes, outs = _wait(procs, logs, deadline)
    stops = {}
    if os.path.exists(stop_log):
        for line in open(stop_log).read().split("\n"):
            if line:
                process, step = map(int, line.split())
                stops[process] = step
    return dict(work=work, codes=codes, outs=outs, stops=stops, printed=printed)


def _stopped_together(run):
    """Asserts both processes exited 0 after stopping at the same step, after the step
    printed when the signal went out and before the end, and that this step is the
    newest checkpoint, whole. Returns (that step, what process 0 says stopped it)."""
    outs, stops, printed, work = run["outs"], run["stops"], run["printed"], run["work"]
    both = outs[0][-1500:] + "\n" + outs[1][-1500:]
    assert printed is not None, "no step printed:\n" + both
    assert run["codes"] == [0, 0], both
    m = re.search(r"Stopped by (.+) after step (\d+): checkpoint saved", outs[0])
    assert m and set(stops) == {0, 1}, (stops, both)
    assert stops[0] == stops[1] == int(m.group(2)), (stops, m.group(0))
    stopped = stops[0]
    assert printed <= stopped < TOTAL, (printed, stopped)
    assert steps_in(work)[-1] == stopped and not tmp_dirs(work), (steps_in(work), tmp_dirs(work))
    return stopped, m.group(1)


@pytest.fixture(scope="module")
def sigterm_to_every_process(tmp_path_factory, xla_cache):
    return _interrupt(str(tmp_path_factory.mktemp("sigterm_all")), xla_cache, signal.SIGTERM, [0, 1])


def test_sigterm_to_every_process_stops_them_after_one_step_with_a_checkpoint(sigterm_to_every_process):
    """As a cluster manager preempts a job: SIGTERM to every process at once."""
    stopped, by = _stopped_together(sigterm_to_every_process)
    assert by.startswith("a preemption notice"), by


@pytest.mark.parametrize("target", [0, 1])
def test_sigterm_to_one_process_stops_every_process_after_one_step(tmp_path, xla_cache, target):
    """Only one process is told (process 0 runs the coordination service; process 1 does
    not): the other learns of it through the coordination service."""
    stopped, by = _stopped_together(_interrupt(str(tmp_path), xla_cache, signal.SIGTERM, [target]))
    assert by.startswith("a preemption notice"), by


def test_a_run_of_several_steps_per_call_stops_too(tmp_path, xla_cache):
    """4 steps per compiled call: the loop asks after steps 4, 8, 12, ...; the stop
    comes after the same call in every process (JAX's sync point, given step numbers,
    would be "largest + 1", a step no call ends on, and the run would not stop)."""
    run = _interrupt(
        str(tmp_path),
        xla_cache,
        signal.SIGTERM,
        [0, 1],
        steps_per_call=4,
        scan_on_cpu=True,  # else the CPU runs them as single calls
        log_every_steps=4,
    )
    stopped, _ = _stopped_together(run)
    assert stopped % 4 == 0, stopped


def test_sigint_to_every_process_stops_them_like_sigterm(tmp_path, xla_cache):
    """Ctrl-C in the terminal that started both: the SIGINT handler hands it on to
    JAX's preemption service as a SIGTERM."""
    stopped, by = _stopped_together(_interrupt(str(tmp_path), xla_cache, signal.SIGINT, [0, 1]))
    assert by == "SIGINT", by


def _finished(args, outdir):
    """Runs the 2 processes to the end; their outputs. The end of a run saves to
    checkpoints/ and best/ at once, which with several processes needs each manager's
    barriers named apart (they clashed in Orbax before: "Barrier ... is already
    ongoing")."""
    os.makedirs(outdir, exist_ok=True)
    codes, outs = _wait(start_two_processes(args, outdir), outdir, time.time() + TIMEOUT)
    assert codes == [0, 0], outs[0][-1500:] + "\n" + outs[1][-1500:]
    return outs


@pytest.mark.slow  # 2 runs of 2 processes: the resumed one and an uninterrupted one
def test_the_same_command_resumes_a_preempted_run_to_the_uninterrupted_params(
    tmp_path, xla_cache, sigterm_to_every_process
):
    stopped, _ = _stopped_together(sigterm_to_every_process)
    work = tmp_path / "preempted"
    shutil.copytree(sigterm_to_every_process["work"], work)
    rerun = _finished(_flags(work, xla_cache), str(tmp_path / "rerun"))
    assert f"Resumed from step {stopped}" in rerun[0], rerun[0][-1500:]
    reference = tmp_path / "uninterrupted"
    _finished(_flags(reference / "run", xla_cache), str(reference))
    final = read_checkpoint(work / "checkpoints" / str(TOTAL))
    expected = read_checkpoint(reference / "run" / "checkpoints" / str(TOTAL))
    assert final.keys() == expected.keys()
    for k in final:
        np.testing.assert_array_equal(final[k], expected[k], err_msg=k)
