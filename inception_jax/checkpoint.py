"""Orbax checkpoints under ``<workdir>/checkpoints`` (latest k) and
``<workdir>/best`` (best eval accuracy), plus the run's config for resume checks.

What is saved: ``step``, ``params``, ``batch_stats``, ``opt_state`` of a single
(unreplicated) train state. The data order is a function of (seed, epoch), so
``step`` alone puts a resumed run at the exact example where it stopped.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional, Tuple

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

# Keys that change the saved arrays' shapes or meaning: resuming with another value
# would overwrite a different run.
COMPATIBILITY_KEYS = ("model", "model_kwargs", "num_classes", "dataset", "image_size",
                      "optimizer", "half_precision")


def _state_tree(state) -> dict:
    return {"step": state.step, "params": state.params, "batch_stats": state.batch_stats,
            "opt_state": state.opt_state}


class Checkpointer:
    def __init__(self, workdir: str, config: ml_collections.ConfigDict, keep: Optional[int] = None,
                 read_only: bool = False):
        self.workdir = workdir
        self.config = config
        if not read_only:
            try:
                os.makedirs(workdir, exist_ok=True)
                probe = os.path.join(workdir, f".write_test_{os.getpid()}")
                with open(probe, "w") as f:
                    f.write("ok")
                os.remove(probe)
            except OSError as e:
                raise ValueError(f"workdir {workdir!r} is not writable ({e.strerror}); pick another "
                                 "--workdir or fix its permissions") from None
            self._check_config()
        elif not os.path.isdir(os.path.join(workdir, "checkpoints")):
            raise ValueError(f"workdir {workdir!r} has no checkpoints to evaluate; train first")
        keep = keep or config.get("keep_checkpoints", 3)
        self.latest = ocp.CheckpointManager(
            os.path.join(workdir, "checkpoints"),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only,
                                                 read_only=read_only))
        self.best = ocp.CheckpointManager(
            os.path.join(workdir, "best"),
            options=ocp.CheckpointManagerOptions(max_to_keep=1, best_fn=lambda m: m["accuracy"],
                                                 best_mode="max", create=not read_only,
                                                 read_only=read_only))
        best_step = self.best.best_step()
        self.best_accuracy = -1.0
        if best_step is not None:
            metrics = self.best.metrics(best_step) or {}
            self.best_accuracy = float(metrics.get("accuracy", -1.0))

    # -- config compatibility --
    def _check_config(self) -> None:
        path = os.path.join(self.workdir, "config.json")
        current = {k: _plain(self.config.get(k)) for k in COMPATIBILITY_KEYS}
        if os.path.exists(path):
            with open(path) as f:
                saved = json.load(f)
            ckpts = os.path.join(self.workdir, "checkpoints")
            if os.path.isdir(ckpts) and any(d.isdigit() for d in os.listdir(ckpts)):
                diff = {k: (saved.get(k), current[k]) for k in current if saved.get(k) != current[k]}
                if diff:
                    k, (old, new) = next(iter(diff.items()))
                    raise ValueError(
                        f"workdir {self.workdir!r} holds a run with {k}={old!r}, this config has "
                        f"{k}={new!r} ({len(diff)} incompatible key(s): {', '.join(diff)}); use another "
                        "--workdir, or the same config to resume it")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(current, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
        with open(os.path.join(self.workdir, "config_full.json.tmp"), "w") as f:
            f.write(self.config.to_json_best_effort(indent=1, sort_keys=True))
        os.replace(os.path.join(self.workdir, "config_full.json.tmp"),
                   os.path.join(self.workdir, "config_full.json"))

    # -- save / restore --
    def latest_step(self) -> Optional[int]:
        return self.latest.latest_step()

    def save(self, step: int, state, eval_accuracy: Optional[float] = None, force: bool = False):
        tree = _state_tree(state)
        if step not in self.latest.all_steps():
            self.latest.save(step, args=ocp.args.StandardSave(tree), force=force)
        if eval_accuracy is not None and eval_accuracy > self.best_accuracy:
            self.best_accuracy = eval_accuracy
            self.best.wait_until_finished()
            self.best.save(step, args=ocp.args.StandardSave(tree),
                           metrics={"accuracy": float(eval_accuracy)}, force=True)

    def _restore(self, manager, step, state):
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, _state_tree(state))
        tree = manager.restore(step, args=ocp.args.StandardRestore(abstract))
        return state.replace(step=tree["step"], params=tree["params"],
                             batch_stats=tree["batch_stats"], opt_state=tree["opt_state"])

    def restore_latest(self, state) -> Tuple[Any, int]:
        step = self.latest.latest_step()
        if step is None:
            return state, 0
        state = self._restore(self.latest, step, state)
        return state, int(step)

    def restore(self, state, which: str = "best") -> Tuple[Any, int]:
        manager = self.best if which == "best" else self.latest
        step = manager.best_step() if which == "best" else manager.latest_step()
        if step is None:
            manager, step = self.latest, self.latest.latest_step()
        if step is None:
            raise ValueError(f"workdir {self.workdir!r} has no checkpoint; train first")
        return self._restore(manager, step, state), int(step)

    def wait(self) -> None:
        self.latest.wait_until_finished()
        self.best.wait_until_finished()


def _plain(value):
    if isinstance(value, ml_collections.ConfigDict):
        return {k: _plain(v) for k, v in sorted(value.items())}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
