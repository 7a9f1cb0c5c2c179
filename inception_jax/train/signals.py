"""SIGTERM / SIGINT as a request to stop after a step and save: in a single process, and
in every process of a ``jax.distributed`` run, all after the same step."""

from __future__ import annotations

from typing import Optional

import jax


class StopRequest:
    """Turns SIGTERM / SIGINT into a request to stop after a step (with a checkpoint).
    The training loop asks ``should_stop(step)`` after every call of one or more steps.

    One process: a Python handler records the signal; a second signal acts as usual
    (kills / KeyboardInterrupt).

    Several processes (``jax.distributed``): a signal may reach every process or only
    some of them, at different steps, and they must all save the same step. JAX's
    preemption service does the agreement: ``jax.distributed.initialize`` installs its
    own SIGTERM handler in every process; the process that gets SIGTERM tells the
    coordination service, every process then reports the last sync-point call it made,
    and all of them stop at the call after the largest
    (``multihost_utils.reached_preemption_sync_point``). Until a notice arrives a call
    costs a mutex, no communication (benchmarks/stop_check.py). The calls are counted
    here, not passed as step numbers (which a rollback also repeats): the
    service's sync point is "largest reported + 1", which a resumed run's step numbers
    (notice before the first step) or a ``steps_per_call`` > 1 stride would skip, and
    the run would never stop. SIGINT, which the service ignores, is turned into a
    SIGTERM to this process; a second SIGINT acts as usual."""

    SIGNALS = ("SIGTERM", "SIGINT")

    def __init__(self):
        self.signal_name: Optional[str] = None
        self._previous = {}
        self._calls = 0
        self._several = False

    def __enter__(self):
        import signal
        import threading

        self._several = jax.process_count() > 1
        if self._several and not _preemption_service():
            return self  # SIGTERM kills as usual; SIGINT too (no forwarding without the service)
        if threading.current_thread() is threading.main_thread():
            # several processes: SIGTERM stays with JAX's preemption service
            for name in ("SIGINT",) if self._several else self.SIGNALS:
                sig = getattr(signal, name)
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        import os
        import signal

        if self.signal_name is not None:  # second signal: the usual behaviour
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
            signal.raise_signal(signum)
            return
        self.signal_name = signal.Signals(signum).name
        if self._several:
            os.kill(os.getpid(), signal.SIGTERM)  # to JAX's preemption notifier

    @property
    def requested(self) -> bool:
        """Whether this process got a signal it handles itself (SIGTERM with several
        processes goes to JAX and is not seen here)."""
        return self.signal_name is not None

    def should_stop(self, step: int) -> bool:
        """Called after every call of one or more steps (``step``: the steps done), by
        every process the same number of times: whether to save and stop now. With
        several processes, every process gets True at the same call."""
        self._calls += 1
        if not self._several:
            return self.requested
        from jax.experimental import multihost_utils

        try:
            return bool(multihost_utils.reached_preemption_sync_point(self._calls))
        except RuntimeError:  # the service is off: signals kill as usual
            return False

    @property
    def reason(self) -> str:
        """What asked for the stop, for the loop's "Stopped by ..." line."""
        if self.signal_name is not None:
            return self.signal_name
        return "a preemption notice (SIGTERM to a process of the run)"

    def __exit__(self, *exc):
        import signal

        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        return False


def _preemption_service() -> bool:
    """Whether ``jax.distributed.initialize`` started JAX's preemption service (on unless
    ``jax_enable_preemption_service`` is off)."""
    from jax._src import distributed

    return getattr(distributed.global_state, "preemption_sync_manager", None) is not None
