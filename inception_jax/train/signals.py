"""SIGTERM / SIGINT as a request to stop after the current step and save."""

from __future__ import annotations

from typing import Optional

import jax


class StopRequest:
    """Turns SIGTERM / SIGINT into a request to stop after the current step (with a
    checkpoint). A second signal acts as usual (kills / KeyboardInterrupt). Only in
    the main thread of a single-process run: with several processes, JAX's
    preemption service catches SIGTERM and Orbax's sync point picks the step."""

    SIGNALS = ("SIGTERM", "SIGINT")

    def __init__(self):
        self.signal_name: Optional[str] = None
        self._previous = {}

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread() and jax.process_count() == 1:
            for name in self.SIGNALS:
                sig = getattr(signal, name)
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        import signal

        if self.signal_name is not None:  # second signal: the usual behaviour
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
            signal.raise_signal(signum)
            return
        self.signal_name = signal.Signals(signum).name

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def __exit__(self, *exc):
        import signal

        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        return False
