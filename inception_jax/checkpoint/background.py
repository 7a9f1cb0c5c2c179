"""The checkpoint thread: a save's host copy, checksums and the start of Orbax's write
run beside the training loop, one save at a time, on a copy of the state made on its
devices (the next step donates the originals)."""

from __future__ import annotations

import concurrent.futures
import functools
from typing import Optional

import jax
import jax.numpy as jnp


class FrozenState:
    """An iterator's state read at save time, for grain's checkpoint handler (which calls
    ``get_state()`` when it writes)."""

    def __init__(self, state: bytes):
        self._state = state

    def get_state(self) -> bytes:
        return self._state


@functools.lru_cache(maxsize=None)
def _copier():
    return jax.jit(lambda tree: jax.tree_util.tree_map(jnp.copy, tree))


def device_copy(tree):
    """A copy of the state's arrays made on their devices (one compiled program): the
    background save reads it while the next step donates the originals."""
    return _copier()(tree)


class SaveThread:
    """Runs one save function at a time on a thread of its own, started on first use."""

    def __init__(self):
        self._worker: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._future: Optional[concurrent.futures.Future] = None

    def start(self, fn, *args) -> None:
        if self._worker is None:
            self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="checkpoint")
        self._future = self._worker.submit(fn, *args)

    def join(self) -> None:
        """Waits for the save started last, raising its error if it failed."""
        future, self._future = self._future, None
        if future is not None:
            future.result()

    def close(self) -> None:
        if self._worker is not None:
            self._worker.shutdown(wait=True)
