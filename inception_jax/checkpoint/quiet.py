"""Orbax's noise, dropped: its writer threads log each failure with tracebacks, and a
failed read leaves asyncio callbacks that Python prints as 'Exception ignored ... Event
loop is closed'. The Checkpointer reports every failure that matters in one line."""

from __future__ import annotations

import contextlib
import gc
import logging
import sys
import warnings
from typing import Iterator


def _is_teardown_noise(info) -> bool:
    return isinstance(info.exc_value, RuntimeError) and "Event loop is closed" in str(info.exc_value)


def _without_teardown_noise(previous):
    """A ``sys.unraisablehook`` that drops the asyncio teardown noise and hands
    everything else to ``previous``."""

    def hook(info):
        if not _is_teardown_noise(info):
            previous(info)

    return hook


def quiet_orbax_logs() -> None:
    """For the command line: drops Orbax's log records below CRITICAL, the 'coroutine
    was never awaited' warnings and the asyncio teardown noise, for the whole process."""

    class DropOrbax(logging.Filter):
        def filter(self, record):
            return "orbax" not in record.pathname or record.levelno >= logging.CRITICAL

    for handler in logging.getLogger().handlers + logging.getLogger("absl").handlers:
        handler.addFilter(DropOrbax())
    warnings.filterwarnings("ignore", message=r"coroutine .* was never awaited")
    sys.unraisablehook = _without_teardown_noise(sys.unraisablehook)


@contextlib.contextmanager
def quiet_orbax_teardown() -> Iterator[None]:
    """Drops the teardown noise of the Orbax reads inside the block (they are already
    reported in one line)."""
    previous = sys.unraisablehook
    sys.unraisablehook = _without_teardown_noise(previous)
    try:
        yield
    finally:
        gc.collect()  # let those callbacks be dropped while the hook is in place
        sys.unraisablehook = previous
