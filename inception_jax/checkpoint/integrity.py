"""What makes a checkpoint trustworthy: a CRC-32 of every array (Orbax restores
flipped bytes without complaint) and files written atomically."""

from __future__ import annotations

import os
import zlib
from typing import BinaryIO, Callable, Dict, Union

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
