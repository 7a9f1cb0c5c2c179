"""Parameter and multiply-add counts of the registered models (no FLOPs are run)."""

from __future__ import annotations

import math
from typing import Any, Dict, Optional

import jax
import jax.numpy as jnp

from inception_jax.models.registry import create, get_info


def count_params(params: Any) -> int:
    """Number of trainable parameters (the ``params`` collection only)."""
    return int(sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))


def _sub_jaxprs(params: Dict[str, Any]):
    for value in params.values():
        values = value if isinstance(value, (tuple, list)) else (value,)
        for v in values:
            if hasattr(v, "eqns"):
                yield v
            elif hasattr(v, "jaxpr") and hasattr(v.jaxpr, "eqns"):
                yield v.jaxpr


def _jaxpr_macs(jaxpr) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "cond":  # alternatives (e.g. per-platform lowerings): one of them runs
            total += max(_jaxpr_macs(b.jaxpr) for b in eqn.params["branches"])
            continue
        if name == "conv_general_dilated":
            out = eqn.outvars[0].aval.shape
            rhs = eqn.invars[1].aval.shape
            out_features = rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
            total += math.prod(out) * math.prod(rhs) // out_features
        elif name == "dot_general":
            (lhs_contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in lhs_contract)
        for sub in _sub_jaxprs(eqn.params):
            total += _jaxpr_macs(sub)
    return total


def count_macs(model, input_size: int, variables: Optional[Any] = None) -> int:
    """Multiply-adds of convolutions and dense layers in one eval-mode forward pass
    of a single ``input_size`` x ``input_size`` image (traced, not run)."""
    x = jax.ShapeDtypeStruct((1, input_size, input_size, 3), jnp.float32)
    if variables is None:
        variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), x)
    closed = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(variables, x)
    return _jaxpr_macs(closed.jaxpr)


def model_stats(name: str, **kwargs: Any) -> Dict[str, Any]:
    """Parameters (with and without aux heads) and MACs at the default input size."""
    info = get_info(name)
    size = info.default_input_size
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    model = create(name, **kwargs)
    variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), x)
    row = {
        "model": name,
        "input_size": size,
        "params": count_params(variables["params"]),
        "macs": count_macs(model, size, variables),
        "min_input_size": info.min_input_size,
        "reference": info.reference,
    }
    if info.has_aux:
        with_aux = create(name, aux_logits=True, **kwargs)
        v_aux = jax.eval_shape(lambda x: with_aux.init(jax.random.PRNGKey(0), x), x)
        no_aux = create(name, aux_logits=False, **kwargs)
        v_no = jax.eval_shape(lambda x: no_aux.init(jax.random.PRNGKey(0), x), x)
        row["params"] = count_params(v_no["params"])
        row["params_with_aux"] = count_params(v_aux["params"])
    return row
