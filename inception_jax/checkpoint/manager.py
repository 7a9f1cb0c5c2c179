"""Orbax checkpoints under ``<workdir>/checkpoints`` (latest k) and
``<workdir>/best`` (best eval accuracy), plus the run's config for resume checks.

What is saved: ``step``, ``params``, ``batch_stats``, ``opt_state`` of a single
(unreplicated) train state, and beside it (in the same atomically committed step
directory) a CRC-32 of every array. The data order is a function of (seed, epoch),
so ``step`` alone puts a resumed run at the exact example where it stopped.

Faults handled here (docs/reliability.md):

* a newest checkpoint that is truncated, garbled (Orbax restores flipped bytes
  without complaint, hence the checksums) or half-written is reported in one
  line, moved aside to ``<workdir>/corrupt/`` (never deleted) and the next older
  one is tried; with none left the run starts fresh;
* a save that fails (disk full, permissions) raises :class:`CheckpointWriteError`
  (one line); Orbax deletes old checkpoints only after a new one has committed,
  so the earlier ones stay intact;
* a workdir holding a run with another model / shapes is refused before anything
  is written.

The :class:`Checkpointer` ties together the Orbax managers (``stores``), the checkpoint
thread (``background``), the checks (``integrity``) and the quieted Orbax noise
(``quiet``).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional, Tuple

import jax
import ml_collections
import numpy as np

from inception_jax import config as config_lib
from inception_jax.checkpoint import stores
from inception_jax.checkpoint.background import FrozenState, SaveThread, device_copy
from inception_jax.checkpoint.integrity import (
    check_config,
    check_same_model,
    checksums,
    host_copy,
    quarantine,
    verify_checksums,
)
from inception_jax.checkpoint.quiet import quiet_orbax_teardown
from inception_jax.errors import first_line


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (the earlier ones are intact)."""


def check_writable(workdir: str) -> None:
    """Makes ``workdir`` and writes a probe file there, or fails in one line: before
    anything is computed, not at the first save."""
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, f".write_test_{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise ValueError(
            f"workdir {workdir!r} is not writable ({e.strerror}); pick another "
            "--workdir or fix its permissions"
        ) from None


class Checkpointer:
    def __init__(
        self,
        workdir: str,
        config: ml_collections.ConfigDict,
        keep: Optional[int] = None,
        read_only: bool = False,
        log: Callable[[str], None] = print,
    ):
        self.workdir = workdir
        self.config = config
        self.log = log
        self.read_only = read_only
        self._pending: Optional[int] = None  # the step of the save in flight
        self._thread = SaveThread()
        if not read_only:
            check_writable(workdir)
            check_config(workdir, config, self.has_checkpoints())
        elif not os.path.isdir(os.path.join(workdir, "checkpoints")):
            raise ValueError(f"workdir {workdir!r} has no checkpoints to evaluate; train first")
        self._keep = keep or config.get("keep_checkpoints", 3)
        # a streaming run also saves its grain iterator's state (the item "data")
        self.streaming = config_lib.uses_streaming(config)
        self._managers = None  # Orbax's, made on first use: importing Orbax takes 1.5 s

    def _open(self):
        if self._managers is None:
            latest, best, self._best_accuracy = stores.open_managers(
                self.workdir, self._keep, self.streaming, self.read_only
            )
            self._managers = latest, best
        return self._managers

    @property
    def latest(self):
        return self._open()[0]

    @property
    def best(self):
        return self._open()[1]

    @property
    def best_accuracy(self) -> float:
        self._open()
        return self._best_accuracy

    @best_accuracy.setter
    def best_accuracy(self, value: float) -> None:
        self._open()
        self._best_accuracy = value

    def has_checkpoints(self) -> bool:
        """Whether the workdir holds a finished save (readable or not), without opening
        Orbax: a resumed run restores into the state's shapes instead of initialising."""
        d = os.path.join(self.workdir, "checkpoints")
        return os.path.isdir(d) and any(name.isdigit() for name in os.listdir(d))

    # -- save --
    def latest_step(self) -> Optional[int]:
        return self.latest.latest_step()

    def save(self, step: int, state, eval_accuracy: Optional[float] = None, force: bool = False, data=None):
        """Starts a save of ``state`` at ``step`` and returns (see :meth:`wait`).

        The training thread only queues an on-device copy of the state (the next step
        donates its buffers) and reads the input pipeline's iterator ``data`` (streaming;
        saved in the same checkpoint). The host copy, the checksums, the finiteness
        check (a non-finite state is never written: FloatingPointError) and the start of
        Orbax's write run on a background thread. With several processes they run on
        this thread: Orbax's cross-process collectives must not interleave with a step's."""
        self.wait()  # one save in flight at a time; surfaces the previous one's error
        frozen = FrozenState(data.get_state()) if data is not None else None
        accuracy = eval_accuracy if eval_accuracy is not None and eval_accuracy > self.best_accuracy else None
        self._pending = step
        if jax.process_count() > 1:
            self._write(step, stores.state_tree(state), accuracy, force, frozen)
            return
        self._thread.start(self._write, step, device_copy(stores.state_tree(state)), accuracy, force, frozen)

    def _write(self, step: int, tree, eval_accuracy: Optional[float], force: bool, data) -> None:
        host = jax.tree_util.tree_map(host_copy, tree)  # one host copy: checksums and finiteness
        sums = checksums(host)
        bad = [k for k, a in jax.tree_util.tree_flatten_with_path(host)[0] if not _finite(a)]
        if bad:
            raise FloatingPointError(
                f"the state at step {step} is not finite ({len(bad)} array(s), e.g. "
                f"{jax.tree_util.keystr(bad[0])}); not saved; the last good checkpoint (step "
                f"{self.latest.latest_step()}) is kept. Lower --config.learning_rate or enable "
                "--config.grad_clip_norm"
            )
        try:
            if step not in self.latest.all_steps():
                self.latest.save(step, args=stores.save_args(tree, sums, data), force=force)
            if eval_accuracy is not None:
                self.best.save(
                    step,
                    args=stores.save_args(tree, sums),
                    metrics={"accuracy": float(eval_accuracy)},
                    force=True,
                )
                self.best_accuracy = eval_accuracy
        except Exception as e:
            self._failed(step, e)

    def wait(self) -> None:
        """Blocks until the save in flight has committed; raises CheckpointWriteError if it
        failed, FloatingPointError if its state was not finite (nothing was written)."""
        if self._pending is None:
            return
        step, self._pending = self._pending, None
        self._thread.join()  # the background part: its error, if any, is raised here
        try:
            self.latest.wait_until_finished()
            self.best.wait_until_finished()
        except Exception as e:
            self._failed(step, e)

    def _failed(self, step, error: Exception) -> None:
        for manager in (self.latest, self.best):
            try:
                manager.close()  # joins Orbax's writer threads before their files are removed
            except Exception:
                pass
        stores.remove_unfinished((self.latest, self.best))  # free the space the failed save took
        newest = stores.newest_step(self.latest)
        cause = first_line(error, with_type=True)
        raise CheckpointWriteError(
            f"could not write checkpoint step {step} in {self.workdir!r} ({cause}); earlier checkpoints "
            f"are intact (newest: {'step ' + str(newest) if newest is not None else 'none'}); free disk "
            "space or fix the workdir, then rerun the same command to resume"
        ) from None

    # -- restore --
    def _restore(self, manager, step: int, state, data=None):
        tree, expected = stores.restore_items(manager, step, state, data)
        if expected is None:
            raise ValueError("its checksums are missing")
        verify_checksums(tree, expected)
        return state.replace(
            step=tree["step"],
            params=tree["params"],
            batch_stats=tree["batch_stats"],
            opt_state=tree["opt_state"],
        )

    def _check_shapes(self, manager, step: int, state) -> None:
        meta = stores.saved_state_metadata(manager, step)
        if meta is not None:
            check_same_model(self.workdir, step, meta, stores.state_tree(state))

    def _newest_good(self, manager, state, what: str, data=None) -> Tuple[Any, Optional[int]]:
        with quiet_orbax_teardown():
            return self._newest_good_inner(manager, state, what, data)

    def _newest_good_inner(self, manager, state, what: str, data=None) -> Tuple[Any, Optional[int]]:
        steps = sorted(manager.all_steps(), reverse=True)
        if steps and jax.process_count() == 1:
            self._check_shapes(manager, steps[0], state)
        for i, step in enumerate(steps):
            try:
                restored = self._restore(manager, step, state, data)
                if i and not self.read_only:
                    manager.reload()
                return restored, int(step)
            except Exception as e:
                moved = self._quarantine(manager, step)
                older = f"trying step {steps[i + 1]}" if i + 1 < len(steps) else "none left"
                cause = first_line(e, with_type=True)
                self.log(
                    f"{what} checkpoint step {step} is unreadable ({cause}); moved it to {moved}; {older}"
                )
        if steps and not self.read_only:
            manager.reload()
        return state, None

    def _quarantine(self, manager, step: int) -> str:
        if self.read_only:
            return "nowhere (read-only: left in place)"
        return quarantine(self.workdir, str(manager.directory), step)

    def restore_latest(self, state, data=None) -> Tuple[Any, int]:
        """The newest good checkpoint (corrupt newer ones are moved aside), or ``state`` at 0;
        the iterator ``data`` (streaming) takes the state saved with it."""
        if self._managers is None and not self.has_checkpoints():
            return state, 0  # a new run: Orbax is opened at the first save
        had_any = bool(self.latest.all_steps())
        restored, step = self._newest_good(self.latest, state, "latest", data)
        if step is None:
            if had_any:
                self.log("No readable checkpoint left: starting from scratch")
            return state, 0
        return restored, step

    def restore(self, state, which: str = "best") -> Tuple[Any, int]:
        order = (self.best, self.latest) if which == "best" else (self.latest,)
        for manager in order:
            restored, step = self._newest_good(manager, state, "best" if manager is self.best else "latest")
            if step is not None:
                return restored, step
        raise ValueError(f"workdir {self.workdir!r} has no readable checkpoint; train first")

    def close(self) -> None:
        self._thread.close()
        if self._managers is None:
            return
        self.latest.close()
        self.best.close()


def _finite(a: np.ndarray) -> bool:
    return a.dtype.kind not in "fc" or bool(np.isfinite(a).all())
