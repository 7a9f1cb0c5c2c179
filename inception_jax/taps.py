"""Named feature taps: intermediate activations of any model under the reference's names.

    feats = inception_jax.intermediate_features(model, variables, x, layers=["inception4e", "inception5b"])
    feats["inception4e"]          # (N, H, W, C), NHWC

Names are the reference implementation's module names, as torchvision's
``create_feature_extractor`` and timm's ``features_only`` use them: ``inception4e``
(googlenet), ``Mixed_6e`` / ``Conv2d_4a_3x3`` (inception_v3), ``features.9``
(timm inception_v4), ``repeat_1`` / ``conv2d_7b`` (timm inception_resnet_v2),
``Mixed_6e.branch_pool`` for a module inside a block. A name of an ``nn.Sequential``
(timm's ``repeat``) is the output of its last child. The value is the module's
output in eval mode, NHWC. Works inside ``jax.jit`` (``layers`` is static).
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import jax

Path = Tuple[str, ...]


def _parts(name: str) -> Tuple[Path, bool]:
    """'Mixed_6e.branch_pool' -> (('Mixed_6e', 'branch_pool'), False); 'features.9' ->
    (('features_9',), True): an nn.Sequential index joins its container's name with '_'."""
    path: list = []
    indexed = False
    for part in name.split("."):
        if part.isdigit() and path:
            path[-1] = f"{path[-1]}_{part}"
            indexed = True
        else:
            path.append(part)
            indexed = False
    return tuple(path), indexed


def _resolve(name: str, seen: Sequence[Path]) -> Optional[Path]:
    path, indexed = _parts(name)
    if not indexed:  # a container: its indexed children are '<name>_<k>'
        pattern = re.compile(re.escape(path[-1]) + r"_(\d+)$")
        children = [
            (int(m.group(1)), p)
            for p in seen
            if len(p) == len(path) and p[:-1] == path[:-1] and (m := pattern.match(p[-1]))
        ]
        if children:
            return max(children)[1]
    return path if path in seen else None


def intermediate_features(
    model: nn.Module,
    variables: Mapping[str, Any],
    x: jax.Array,
    layers: Sequence[str],
) -> Dict[str, jax.Array]:
    """``{name: activation}`` for each name of ``layers`` (eval mode, NHWC). An unknown
    name raises ValueError with the closest names the model has."""
    if isinstance(layers, str):
        layers = [layers]
    outputs: Dict[Path, Any] = {}

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and context.module.scope is not None:
            path = tuple(context.module.scope.path)
            if path and path not in outputs:
                outputs[path] = out
        return out

    with nn.intercept_methods(interceptor):
        model.apply(variables, x, train=False)
    result = {}
    seen = list(outputs)
    for name in layers:
        path = _resolve(name, seen)
        if path is None:
            dotted = sorted({".".join(p) for p in seen})
            close = difflib.get_close_matches(name.replace(".", "_"), dotted, n=4, cutoff=0.5)
            raise ValueError(
                f"intermediate_features: {type(model).__name__} has no layer {name!r}"
                + (f"; did you mean {', '.join(close)}?" if close else "")
                + f" (top-level layers: {', '.join(sorted({p[0] for p in seen}))})"
            )
        result[name] = outputs[path]
    return result
