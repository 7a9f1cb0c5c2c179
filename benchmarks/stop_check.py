"""What the per-step stop check costs with several processes: ``StopRequest.should_stop``
(JAX's preemption sync point, no communication until a notice arrives) against the
alternative of agreeing on a stop flag with a collective every step
(``multihost_utils.process_allgather``).

    python benchmarks/stop_check.py                 # 2 CPU processes on localhost
    python benchmarks/stop_check.py --calls 5000

Starts itself as the processes of one ``jax.distributed`` job and prints, per process,
the mean time of one call of each.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time


def worker(calls: int) -> None:
    import jax
    import numpy as np

    jax.distributed.initialize(
        os.environ["STOP_CHECK_COORDINATOR"],
        int(os.environ["STOP_CHECK_PROCESSES"]),
        int(os.environ["STOP_CHECK_ID"]),
    )
    from jax.experimental import multihost_utils

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from inception_jax.train.signals import StopRequest

    with StopRequest() as stop:
        t = time.perf_counter()
        for step in range(1, calls + 1):
            stop.should_stop(step)
        check = (time.perf_counter() - t) / calls
    flag = np.int32(0)
    multihost_utils.process_allgather(flag)  # compiles
    n = max(calls // 10, 10)
    t = time.perf_counter()
    for _ in range(n):
        bool(np.any(multihost_utils.process_allgather(flag)))
    gather = (time.perf_counter() - t) / n
    print(
        f"process {jax.process_index()}: should_stop {check * 1e6:.2f} us/call, "
        f"process_allgather of a flag {gather * 1e3:.3f} ms/call",
        flush=True,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.calls)
        return
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    procs = [
        subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", "--calls", str(args.calls)],
            env=dict(
                os.environ,
                JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"),
                STOP_CHECK_COORDINATOR=f"localhost:{port}",
                STOP_CHECK_PROCESSES=str(args.processes),
                STOP_CHECK_ID=str(i),
            ),
        )
        for i in range(args.processes)
    ]
    try:
        codes = [proc.wait(timeout=300) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    sys.exit(max(codes))


if __name__ == "__main__":
    main()
