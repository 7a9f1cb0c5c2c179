"""One rule for putting loaded weights into a model's variables."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import flax
import numpy as np

COLLECTIONS = ("params", "batch_stats")
Key = tuple  # (collection, *path)


def _flat(variables: Mapping[str, Any]) -> dict[Key, Any]:
    out = {}
    for col in COLLECTIONS:
        for path, leaf in flax.traverse_util.flatten_dict(flax.core.unfreeze(variables.get(col, {}))).items():
            out[(col, *path)] = leaf
    return out


def merge_params(
    target: Mapping[str, Any],
    source: Mapping[str, Any],
    *,
    may_differ: Callable[[Key], bool] = lambda key: True,
    mismatch: Callable[[Key, Any, Any], Exception] | None = None,
) -> tuple[dict[str, Any], list[Key]]:
    """``target``'s variables (``params``, ``batch_stats``) with every leaf that
    ``source`` has under the same path and shape taken from ``source`` (in the target
    leaf's dtype; the target's leaves may be arrays or ``jax.ShapeDtypeStruct``).

    Returns ``(merged, kept)``: ``kept`` lists the ``(collection, *path)`` keys whose
    leaf stayed the target's (missing in ``source`` or of another shape). A kept key
    for which ``may_differ(key)`` is False raises ``mismatch(key, source_leaf or None,
    target_leaf)`` (a ValueError naming the path by default).
    """
    theirs = _flat(source)
    merged: dict[str, dict] = {col: {} for col in COLLECTIONS}
    kept = []
    for key, ours in _flat(target).items():
        src = theirs.get(key)
        if src is not None and tuple(np.shape(src)) == tuple(ours.shape):
            merged[key[0]][key[1:]] = np.asarray(src, ours.dtype)
            continue
        if not may_differ(key):
            if mismatch is not None:
                raise mismatch(key, src, ours)
            got = "missing" if src is None else f"of shape {tuple(np.shape(src))}"
            raise ValueError(f"{'/'.join(key)} is {got}, expected shape {tuple(ours.shape)}")
        merged[key[0]][key[1:]] = ours
        kept.append(key)
    return {col: flax.traverse_util.unflatten_dict(leaves) for col, leaves in merged.items()}, kept
