"""What makes a checkpoint trustworthy: a CRC-32 of every array (Orbax restores
flipped bytes without complaint) and files written atomically."""

from __future__ import annotations

import os
import zlib
from typing import Dict

import jax
import numpy as np


def _host(x) -> np.ndarray:
    """One local copy of a (replicated) array, also for arrays spanning processes."""
    if isinstance(x, jax.Array):
        return np.asarray(x.addressable_data(0))
    return np.asarray(x)


def checksums(tree) -> Dict[str, int]:
    """CRC-32 of every leaf's bytes, keyed by its path (what the integrity check compares)."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        a = _host(leaf)
        if a.ndim == 0 and a.dtype.kind in "iu":  # the step: int32 or int64 depending on its origin
            a = a.astype(np.int64)
        a = np.ascontiguousarray(a)
        out[jax.tree_util.keystr(path)] = zlib.crc32(a.view(np.uint8).reshape(-1)) if a.size else 0
    return out


def write_atomic(path: str, text: str) -> None:
    """Writes ``text`` to ``path`` whole or not at all (a temporary file renamed); one
    line naming the path on failure."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise ValueError(
            f"could not write {path} ({e.strerror or e}); free disk space or pick another "
            "--workdir (the previous copy, if any, is unchanged)"
        ) from None
