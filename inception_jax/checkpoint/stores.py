"""The two Orbax checkpoint managers of a workdir, ``checkpoints/`` (the latest k) and
``best/`` (the best eval accuracy), and what each checkpoint step holds: the train
state (``state``), its checksums (``integrity``) and, for a streaming run, the input
iterator's state (``data``). Orbax is imported on first use: that takes 1.5 s."""

from __future__ import annotations

import os
import shutil
import time
from typing import Optional, Tuple

import jax


def _ocp():
    import orbax.checkpoint as ocp

    return ocp


def state_tree(state) -> dict:
    """The arrays of a train state that a checkpoint holds."""
    return {
        "step": state.step,
        "params": state.params,
        "batch_stats": state.batch_stats,
        "opt_state": state.opt_state,
    }


def _barriers(prefix: str):
    return _ocp().options.MultiprocessingOptions(barrier_sync_key_prefix=prefix)


def _handlers(streaming: bool = False) -> dict:
    ocp = _ocp()
    handlers = {"state": ocp.StandardCheckpointHandler(), "integrity": ocp.JsonCheckpointHandler()}
    if streaming:
        from grain.checkpoint import CheckpointHandler

        handlers["data"] = CheckpointHandler()  # one JSON file per process
    return handlers


def open_managers(workdir: str, keep: int, streaming: bool, read_only: bool) -> Tuple[object, object, float]:
    """``(latest, best, best accuracy so far)``: the managers of ``<workdir>/checkpoints``
    (``keep`` steps) and ``<workdir>/best`` (one step); -1 when no best is known."""
    ocp = _ocp()
    writable = not read_only
    # cleanup: half-written saves of a killed run
    common = dict(create=writable, read_only=read_only, cleanup_tmp_directories=writable)
    # each manager's cross-process barriers get names of their own: an epoch's end
    # saves to both, and with several processes same-named barriers clashed
    # ("Barrier ... is already ongoing")
    latest = ocp.CheckpointManager(
        os.path.join(workdir, "checkpoints"),
        item_handlers=_handlers(streaming),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, multiprocessing_options=_barriers("checkpoints"), **common
        ),
    )
    best = ocp.CheckpointManager(
        os.path.join(workdir, "best"),
        item_handlers=_handlers(streaming),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1,
            best_fn=lambda m: m["accuracy"],
            best_mode="max",
            multiprocessing_options=_barriers("best"),
            **common,
        ),
    )
    best_accuracy = -1.0
    best_step = best.best_step()
    if best_step is not None:
        try:
            best_accuracy = float((best.metrics(best_step) or {}).get("accuracy", -1.0))
        except Exception:  # unreadable metrics: the best checkpoint is replaced by the next eval
            best_accuracy = -1.0
    return latest, best, best_accuracy


def save_args(tree, sums, data=None):
    """One checkpoint step's items: the state ``tree``, its checksums ``sums`` and the
    input iterator ``data`` (streaming) if given."""
    ocp = _ocp()
    items = dict(state=ocp.args.StandardSave(tree), integrity=ocp.args.JsonSave(sums))
    if data is not None:
        from grain.checkpoint import CheckpointSave

        items["data"] = CheckpointSave(data)  # its state now, before the next step is drawn
    return ocp.args.Composite(**items)


def restore_items(manager, step: int, state, data=None):
    """``(state tree, saved checksums or None)`` of ``step``, read into the shapes and
    dtypes of ``state``; the iterator ``data`` takes the state saved with it, if any."""
    ocp = _ocp()
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state_tree(state))
    items = dict(state=ocp.args.StandardRestore(abstract), integrity=ocp.args.JsonRestore())
    if data is not None and os.path.isdir(os.path.join(str(manager.directory), str(step), "data")):
        from grain.checkpoint import CheckpointRestore

        items["data"] = CheckpointRestore(data)  # sets the iterator's state in place
    out = manager.restore(step, args=ocp.args.Composite(**items))
    return out["state"], out["integrity"]


def saved_state_metadata(manager, step: int):
    """The shapes tree Orbax recorded for ``step``'s state, or None if unreadable."""
    try:
        return manager.item_metadata(step)["state"]
    except Exception:
        return None  # unreadable metadata: restoring will tell


def remove_unfinished(managers) -> None:
    """Frees the space of a failed save: the managers' temporary directories. Orbax's
    writer threads may still be creating files for a moment, so this repeats until
    nothing reappears for 0.3 s (at most ~6 s)."""
    for _ in range(20):
        left = [
            os.path.join(str(m.directory), name)
            for m in managers
            if os.path.isdir(str(m.directory))
            for name in os.listdir(str(m.directory))
            if ".orbax-checkpoint-tmp" in name
        ]
        if not left:
            break
        for path in left:
            shutil.rmtree(path, ignore_errors=True)
        time.sleep(0.3)


def newest_step(manager) -> Optional[int]:
    """The newest finished step in the manager's directory, read from the disk."""
    directory = str(manager.directory)
    steps = [int(d) for d in os.listdir(directory) if d.isdigit()] if os.path.isdir(directory) else []
    return max(steps) if steps else None
