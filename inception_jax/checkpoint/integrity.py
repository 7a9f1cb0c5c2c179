"""What makes a checkpoint trustworthy: a CRC-32 of every array (Orbax restores
flipped bytes without complaint), files written atomically, a workdir that holds only
one run (the config keys and array shapes that must match to resume it), and
unreadable checkpoints set aside in ``<workdir>/corrupt/`` instead of deleted."""

from __future__ import annotations

import json
import os
import shutil
import time
import zlib
from typing import BinaryIO, Callable, Dict, Union

import jax
import ml_collections
import numpy as np

# Keys that change the saved arrays' shapes or meaning: resuming with another value
# would overwrite a different run.
COMPATIBILITY_KEYS = (
    "model",
    "model_kwargs",
    "num_classes",
    "dataset",
    "image_size",
    "optimizer",
    "half_precision",
)


def host_copy(x) -> np.ndarray:
    """One local copy of a (replicated) array, also for arrays spanning processes."""
    if isinstance(x, jax.Array):
        return np.asarray(x.addressable_data(0))
    return np.asarray(x)


def checksums(tree) -> Dict[str, int]:
    """CRC-32 of every leaf's bytes, keyed by its path (what the integrity check compares)."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        a = host_copy(leaf)
        if a.ndim == 0 and a.dtype.kind in "iu":  # the step: int32 or int64 depending on its origin
            a = a.astype(np.int64)
        a = np.ascontiguousarray(a)
        out[jax.tree_util.keystr(path)] = zlib.crc32(a.view(np.uint8).reshape(-1)) if a.size else 0
    return out


def verify_checksums(tree, expected: Dict[str, int]) -> None:
    """Raises ValueError unless ``tree``'s arrays have the ``expected`` checksums."""
    actual = checksums(tree)
    bad = [k for k in expected if actual.get(k) != expected[k]]
    if bad or set(actual) != set(expected):
        raise ValueError(
            f"checksum mismatch in {len(bad) or 'the set of'} array(s)" + (f", e.g. {bad[0]}" if bad else "")
        )


def write_atomic(
    path: str,
    content: Union[str, bytes, Callable[[BinaryIO], None]],
    remedy: str = "free disk space or pick another --workdir",
) -> None:
    """Writes ``content`` to ``path`` whole or not at all (a temporary file renamed).

    ``content``: text, bytes, or a function that writes to the binary file it is given
    (for output too large to hold in memory). A failure to create, write or rename the
    file becomes one ValueError line naming the path and ``remedy``; whatever the
    function raises is raised as it is. On any failure ``path`` keeps its previous copy, if any.
    """
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w" if isinstance(content, str) else "wb") as f:
            if callable(content):
                try:
                    content(f)
                except OSError as e:
                    raise _WriterError from e  # the function's own error (a download's, say)
            else:
                f.write(content)
        os.replace(tmp, path)
    except _WriterError as e:
        _remove(tmp)
        raise e.__cause__ from None
    except OSError as e:
        _remove(tmp)
        raise ValueError(
            f"could not write {path} ({e.strerror or e}); {remedy} (the previous copy, if any, is unchanged)"
        ) from None
    except BaseException:
        _remove(tmp)
        raise


class _WriterError(Exception):
    pass


def _remove(path: str) -> None:
    if os.path.exists(path):
        os.remove(path)


# -- one run per workdir --


def _plain(value):
    if isinstance(value, ml_collections.ConfigDict):
        return {k: _plain(v) for k, v in sorted(value.items())}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def check_config(workdir: str, config: ml_collections.ConfigDict, has_checkpoints: bool) -> None:
    """Refuses (ValueError) a config whose ``COMPATIBILITY_KEYS`` differ from those of
    the run whose checkpoints ``workdir`` holds, then records this config there
    (``config.json``: those keys; ``config_full.json``: all of it)."""
    path = os.path.join(workdir, "config.json")
    current = {k: _plain(config.get(k)) for k in COMPATIBILITY_KEYS}
    if os.path.exists(path):
        try:
            with open(path) as f:
                saved = json.load(f)
        except (OSError, ValueError):
            saved = None  # unreadable: checkpoints' shapes are still checked when restoring
        if saved is not None and has_checkpoints:
            diff = {k: (saved.get(k), current[k]) for k in current if saved.get(k) != current[k]}
            if diff:
                k, (old, new) = next(iter(diff.items()))
                raise ValueError(
                    f"workdir {workdir!r} holds a run with {k}={old!r}, this config has "
                    f"{k}={new!r} ({len(diff)} incompatible key(s): {', '.join(diff)}); use another "
                    "--workdir, or the same config to resume it"
                )
    if jax.process_index() == 0:
        write_atomic(path, json.dumps(current, indent=1, sort_keys=True))
        write_atomic(
            os.path.join(workdir, "config_full.json"),
            config.to_json_best_effort(indent=1, sort_keys=True),
        )


def check_same_model(workdir: str, step: int, saved, state) -> None:
    """A readable checkpoint of another model is an incompatible run, not a corrupt one:
    ValueError when the ``params`` and ``batch_stats`` of ``saved`` (the checkpoint's
    metadata tree) differ in names or shapes from those of ``state``."""

    def shapes(tree):  # params and batch_stats: nested dicts on both sides
        return {
            jax.tree_util.keystr(p): tuple(getattr(x, "shape", np.shape(x)))
            for p, x in jax.tree_util.tree_flatten_with_path(
                {"params": tree["params"], "batch_stats": tree["batch_stats"]}
            )[0]
        }

    expected = shapes(state)
    try:
        saved = shapes(saved)
    except Exception:
        return
    if saved and saved.keys() != expected.keys():
        missing = sorted(expected.keys() - saved.keys())[:1] or sorted(saved.keys() - expected.keys())[:1]
        raise ValueError(
            f"workdir {workdir!r}: checkpoint step {step} holds another model "
            f"(differs at {missing[0]}); use another --workdir or the config that "
            "wrote it"
        )
    for k, shape in saved.items():
        if expected.get(k) != shape:
            raise ValueError(
                f"workdir {workdir!r}: checkpoint step {step} has {k} of shape "
                f"{shape}, this config builds {expected.get(k)}; use another "
                "--workdir or the config that wrote it"
            )


# -- unreadable checkpoints --


def quarantine(workdir: str, directory: str, step: int) -> str:
    """Moves step ``step`` of the checkpoint ``directory`` to ``<workdir>/corrupt/``
    (never deleted: it may hold what a user wants back) and returns where it went."""
    src = os.path.join(directory, str(step))
    dest = os.path.join(workdir, "corrupt", f"{os.path.basename(directory)}-{step}-{int(time.time())}")
    if jax.process_index() == 0 and os.path.exists(src):
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.move(src, dest)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"quarantine-{step}")
    return dest
