"""PyTorch state_dict -> Flax variables, by name.

``from_torch(name, state_dict)`` accepts a torchvision (googlenet,
inception_v3), timm (inception_v4, inception_resnet_v2) or Cadene
(bn_inception) state_dict, with torch tensors or numpy arrays as values, and
returns ``{"params": ..., "batch_stats": ...}`` for ``create(name, ...)``.

Names map mechanically, because the Flax models use the reference's names:
a key's dotted path becomes the Flax module path, a numeric part (an
``nn.Sequential`` index) joining the part before it with ``_``
(``inception3a.branch2.0.conv.weight`` -> ``inception3a/branch2_0/conv``).
Leaves: conv ``weight`` (O, I, kh, kw) -> ``kernel`` (kh, kw, I, O); linear
``weight`` (O, I) -> ``kernel`` (I, O); BatchNorm ``weight``/``bias`` ->
``scale``/``bias``; ``running_mean``/``running_var`` -> ``batch_stats``
``mean``/``var``; ``num_batches_tracked`` is dropped. Every expected variable
must be produced exactly once with the expected shape, otherwise a
``ValueError`` names the offending keys.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

import flax
import jax
import jax.numpy as jnp
import numpy as np

from inception_jax import models
from inception_jax.weights.files import strip_module_prefix, to_numpy

Path = Tuple[str, ...]


def torch_key_to_path(key: str) -> Tuple[Path, str]:
    """``'a.b.0.conv.weight'`` -> ``(('a', 'b_0', 'conv'), 'weight')``."""
    parts = key.split(".")
    module: list = []
    for part in parts[:-1]:
        if part.isdigit() and module:
            module[-1] = f"{module[-1]}_{part}"
        else:
            module.append(part)
    return tuple(module), parts[-1]


def _infer_options(name: str, state_dict: Mapping[str, Any], kwargs: Dict[str, Any]) -> None:
    info = models.get_info(name)
    if "num_classes" not in kwargs:
        key = f"{info.classifier}.weight"
        if key in state_dict:
            kwargs["num_classes"] = int(to_numpy(state_dict[key]).shape[0])
    if info.has_aux and "aux_logits" not in kwargs:
        kwargs["aux_logits"] = any(k.split(".")[0] in info.aux_prefixes for k in state_dict)


def _summarise(keys, limit: int = 5) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def convert_state_dict(
    state_dict: Mapping[str, Any], template: Mapping[str, Any], context: str = "convert_state_dict"
) -> Dict[str, Any]:
    """Maps a torch ``state_dict`` onto Flax variables shaped like ``template``.

    ``template`` is a variables dict (arrays or ``ShapeDtypeStruct``s, e.g. from
    ``jax.eval_shape(model.init, ...)``) with ``params`` and optionally
    ``batch_stats``. Raises ``ValueError`` naming every unexpected key, missing
    variable and shape mismatch.
    """
    shapes = {}
    for col in ("params", "batch_stats"):
        flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(template.get(col, {})))
        shapes[col] = {k: tuple(v.shape) for k, v in flat.items()}
    params_shapes, stats_shapes = shapes["params"], shapes["batch_stats"]

    params: Dict[Path, np.ndarray] = {}
    stats: Dict[Path, np.ndarray] = {}
    unexpected, mismatched = [], []
    for key, value in state_dict.items():
        module, leaf = torch_key_to_path(key)
        if leaf == "num_batches_tracked":
            continue
        array = to_numpy(value)
        if leaf == "weight":
            if module + ("scale",) in params_shapes:
                target, dest = module + ("scale",), params
            else:
                target, dest = module + ("kernel",), params
                if array.ndim == 4:
                    array = array.transpose(2, 3, 1, 0)
                elif array.ndim == 2:
                    array = array.T
        elif leaf == "bias":
            target, dest = module + ("bias",), params
        elif leaf == "running_mean":
            target, dest = module + ("mean",), stats
        elif leaf == "running_var":
            target, dest = module + ("var",), stats
        else:
            unexpected.append(key)
            continue
        expected = params_shapes if dest is params else stats_shapes
        if target not in expected:
            unexpected.append(key)
            continue
        if tuple(array.shape) != expected[target]:
            mismatched.append(
                f"{key} {tuple(to_numpy(value).shape)} -> {'/'.join(target)} "
                f"expects {expected[target]} (after transposing)"
            )
            continue
        dest[target] = array.astype(np.float32)

    missing = ["/".join(p) for p in params_shapes if p not in params]
    missing += ["batch_stats:" + "/".join(p) for p in stats_shapes if p not in stats]
    problems = []
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_summarise(unexpected)}")
    if missing:
        problems.append(f"{len(missing)} missing variable(s): {_summarise(missing)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {_summarise(mismatched, 3)}")
    if problems:
        raise ValueError(f"{context}: state_dict does not match the model: {'; '.join(problems)}")
    unflat = flax.traverse_util.unflatten_dict
    out = {"params": jax.tree_util.tree_map(jnp.asarray, unflat(params))}
    if stats_shapes:
        out["batch_stats"] = jax.tree_util.tree_map(jnp.asarray, unflat(stats))
    return out


def from_torch(
    name: str, state_dict: Mapping[str, Any], *, input_size: Optional[int] = None, **model_kwargs: Any
) -> Dict[str, Any]:
    """Converts a PyTorch ``state_dict`` for model ``name`` into Flax variables.

    ``num_classes`` and ``aux_logits`` are read off the state_dict unless given
    in ``model_kwargs`` (which are passed to :func:`inception_jax.models.create`).
    """
    info = models.get_info(name)
    if not isinstance(state_dict, Mapping):
        raise ValueError(
            f"from_torch({name!r}): expected a state_dict mapping names to tensors, "
            f"got {type(state_dict).__name__}; pass model.state_dict()"
        )
    state_dict = strip_module_prefix(state_dict)
    kwargs = dict(model_kwargs)
    _infer_options(name, state_dict, kwargs)
    model = models.create(name, **kwargs)
    size = input_size or info.default_input_size
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    template = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)
    context = f"from_torch({name!r}, options {kwargs}) [is this a {info.reference} checkpoint?]"
    return convert_state_dict(state_dict, template, context)
