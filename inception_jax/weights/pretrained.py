"""Pretrained variables: ``load_pretrained`` (a file, a ``save_pretrained``
directory or the download caches), ``save_pretrained`` / ``load_variables`` (Orbax)
and ``pooled_features`` (the pooled features the classifier sees)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from inception_jax import models
from inception_jax.errors import first_line
from inception_jax.models.registry import ModelInfo, Pretrained
from inception_jax.weights import hub
from inception_jax.weights.convert import from_torch
from inception_jax.weights.files import (
    load_torch_state_dict,
)
from inception_jax.weights.merge import merge_params

METADATA_FILE = "inception_jax.json"  # written beside the Orbax files by save_pretrained


def _adapt_state_dict(
    info: ModelInfo, sd: dict[str, np.ndarray], cfg: Pretrained | None
) -> dict[str, np.ndarray]:
    """Known layouts of public files that differ from the reference model:
    Cadene's inceptionresnetv2 names the classifier ``last_linear`` (timm: ``classif``);
    Cadene's inceptionv4/inceptionresnetv2 files have 1001 classes, background first,
    which Cadene's own loader drops for the 1000-class "imagenet" setting."""
    sd = dict(sd)
    if info.classifier != "last_linear" and f"{info.classifier}.weight" not in sd:
        for leaf in ("weight", "bias"):
            if f"last_linear.{leaf}" in sd:
                sd[f"{info.classifier}.{leaf}"] = sd.pop(f"last_linear.{leaf}")
    expected = cfg.num_classes if cfg else None
    key = f"{info.classifier}.weight"
    if (
        expected
        and key in sd
        and sd[key].shape[0] == expected + 1
        and info.name in ("inception_v4", "inception_resnet_v2")
    ):
        for leaf in ("weight", "bias"):
            sd[f"{info.classifier}.{leaf}"] = sd[f"{info.classifier}.{leaf}"][1:]
    # yjxiong's Caffe-ported bn_inception-9f5701afb96c8044.pth (the alternative URL in
    # Cadene's settings) keeps vectors as (1, C); TSN's loader squeezes dim 0 likewise
    for k, v in sd.items():
        vector = k.endswith((".bias", ".running_mean", ".running_var")) or (
            k.endswith(".weight") and re.search(r"(^|[._])bn\.weight$", k)
        )
        if vector and v.ndim == 2 and v.shape[0] == 1:
            sd[k] = v.reshape(-1)
    return sd


def _options_from_variables(info: ModelInfo, variables: Mapping[str, Any]) -> dict[str, Any]:
    params = variables["params"]
    options: dict[str, Any] = {"num_classes": int(params[info.classifier]["kernel"].shape[-1])}
    if info.has_aux:
        options["aux_logits"] = any(p in params for p in info.aux_prefixes)
    return options


def _input_size_for(info: ModelInfo, options: Mapping[str, Any]) -> int:
    if options.get("aux_logits") and info.min_aux_input_size:
        return max(info.min_input_size, info.min_aux_input_size)
    return info.min_input_size


def _replace_heads(info: ModelInfo, model, variables, rng) -> dict[str, Any]:
    """Fresh classifier heads for a changed ``num_classes`` / added aux heads: every
    parameter (and BatchNorm statistic) whose shape changed or that is new comes from
    ``model.init(rng)``, the rest is kept."""
    size = _input_size_for(info, {"aux_logits": getattr(model, "aux_logits", False)})
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    template = jax.eval_shape(lambda r, x: model.init(r, x, train=False), rng, x)
    merged, fresh = merge_params(template, variables)

    def init_fresh(r):  # XLA keeps only the fresh leaves' initialisers
        new = model.init(r, jnp.zeros(x.shape, x.dtype), train=False)
        return [_leaf(new[key[0]], key[1:]) for key in fresh]

    for key, value in zip(fresh, jax.jit(init_fresh)(rng)):
        tree = merged[key[0]]
        for part in key[1:-1]:
            tree = tree[part]
        tree[key[-1]] = value
    return merged


def _leaf(tree, path):
    for part in path:
        tree = tree[part]
    return tree


def load_pretrained(
    name: str,
    path: str | os.PathLike | None = None,
    *,
    num_classes: int | None = None,
    download: bool = True,
    rng: jax.Array | None = None,
    **model_kwargs: Any,
):
    """Returns ``(model, variables)`` for ``name`` with ImageNet (or given) weights.

    Args:
      name: a registered model (:func:`inception_jax.list_models`).
      path: a ``.pth``/``.pt``/``.bin``/``.safetensors`` state_dict of the reference
        model, or a :func:`save_pretrained` directory. ``None``: the public weights
        from the torch hub / Hugging Face caches, downloaded if missing and
        ``download`` is true.
      num_classes: a new classifier size for fine-tuning: the classifier (and aux
        classifiers) are initialised afresh from ``rng`` (default ``PRNGKey(0)``),
        everything else is loaded. Likewise ``aux_logits=True`` for weights without
        aux heads initialises them; ``aux_logits=False`` drops the saved ones.
      **model_kwargs: more options for :func:`inception_jax.create` (``dtype``,
        ``axis_name``, ``dropout``, ...). The options the weights need
        (``transform_input=True`` for torchvision's googlenet / inception_v3) are
        set from the model's pretrained record unless given here.

    ``variables`` is ``{"params": ..., "batch_stats": ...}``; ``model.apply(variables,
    preprocess(images, name))`` gives the reference's logits.
    """
    info = models.get_info(name)
    cfg = info.pretrained
    options: dict[str, Any] = dict(cfg.model_kwargs) if cfg else {}
    if path is not None and os.path.isdir(os.fspath(path)):
        variables = load_variables(path)
        meta = _read_metadata(os.fspath(path))
        if meta.get("model") not in (None, name):
            raise ValueError(
                f"{os.fspath(path)!r} holds {meta['model']} weights, not {name}; "
                f"use --model {meta['model']} or another weights directory"
            )
        options.update(meta.get("model_kwargs", {}))
        _check_variables(info, variables, os.fspath(path))
    else:
        if path is None:
            cfg = hub.pretrained_config(info)
            path = hub._find_or_download(name, cfg, download)
        sd = _adapt_state_dict(info, load_torch_state_dict(path), cfg)
        try:
            variables = from_torch(name, sd, **options)
        except ValueError as e:
            raise ValueError(f"weights file {os.fspath(path)!r} does not fit {name}: {e}") from None
    saved = _options_from_variables(info, variables)
    options.update(saved)
    options.update(model_kwargs)
    if num_classes is not None:
        options["num_classes"] = num_classes
    model = models.create(name, **options)
    variables = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
    if options.get("aux_logits") is False and saved.get("aux_logits"):  # drop unused aux heads
        aux = info.aux_prefixes
        variables = {col: {k: v for k, v in tree.items() if k not in aux} for col, tree in variables.items()}
    elif options["num_classes"] != saved["num_classes"] or (
        options.get("aux_logits") and not saved.get("aux_logits")
    ):
        variables = _replace_heads(info, model, variables, jax.random.PRNGKey(0) if rng is None else rng)
    return model, variables


def _check_variables(info: ModelInfo, variables: Mapping[str, Any], where: str) -> None:
    """Every saved array has the shape the model expects (names a mismatch)."""
    name = info.name
    try:
        options = _options_from_variables(info, variables)
    except (KeyError, TypeError):
        raise ValueError(
            f"{where!r} does not hold {name} variables (no {info.classifier!r} classifier)"
        ) from None
    model = models.create(name, **options)
    size = _input_size_for(info, options)
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    expected = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)
    for col in ("params", "batch_stats"):
        want = {
            k: tuple(v.shape)
            for k, v in flax.traverse_util.flatten_dict(flax.core.unfreeze(expected.get(col, {}))).items()
        }
        have = {
            k: tuple(np.shape(v))
            for k, v in flax.traverse_util.flatten_dict(dict(variables.get(col, {}))).items()
        }
        if want != have:
            diff = sorted("/".join(k) for k in set(want) ^ set(have))
            diff += sorted("/".join(k) for k in set(want) & set(have) if want[k] != have[k])
            raise ValueError(
                f"{where!r} does not hold {name} variables ({col} differ at "
                f"{', '.join(diff[:3])}{' ...' if len(diff) > 3 else ''})"
            )


def save_pretrained(
    variables: Mapping[str, Any],
    directory: str | os.PathLike,
    *,
    name: str | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
) -> str:
    """Writes ``{"params", "batch_stats"}`` as an Orbax checkpoint (a plain
    ``StandardSave``) to a new ``directory``; returns its absolute path.

    ``name`` / ``model_kwargs`` (e.g. ``{"transform_input": True}``) are recorded in
    ``inception_jax.json`` beside the Orbax files so :func:`load_pretrained` and the
    predict command rebuild the same model. Read back with :func:`load_variables`.
    """
    import orbax.checkpoint as ocp

    directory = os.path.abspath(os.fspath(directory))
    if os.path.exists(directory) and (not os.path.isdir(directory) or os.listdir(directory)):
        raise ValueError(f"save_pretrained: {directory!r} already exists; pick a new directory")
    if os.path.isdir(directory):
        os.rmdir(directory)  # Orbax creates it (atomically, via a temporary directory)
    tree = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
    tree = jax.tree_util.tree_map(np.asarray, flax.core.unfreeze(tree))
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(directory, tree)
    meta = {
        "format": "inception_jax pretrained variables",
        "model": name,
        "model_kwargs": dict(model_kwargs or {}),
    }
    with open(os.path.join(directory, METADATA_FILE), "w") as f:
        json.dump(meta, f, indent=2)
    return directory


def _read_metadata(directory: str) -> dict[str, Any]:
    path = os.path.join(directory, METADATA_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def load_variables(directory: str | os.PathLike) -> dict[str, Any]:
    """Reads a :func:`save_pretrained` checkpoint: ``{"params", "batch_stats"}``
    (numpy arrays)."""
    import orbax.checkpoint as ocp

    directory = os.path.abspath(os.fspath(directory))
    if not os.path.isdir(directory):
        raise ValueError(
            f"load_variables: {directory!r} is not a directory; pass the directory written by save_pretrained"
        )
    try:
        with ocp.StandardCheckpointer() as ckptr:
            metadata = ckptr.metadata(directory)
            tree = getattr(metadata, "item_metadata", metadata)
            target = jax.tree_util.tree_map(
                lambda m: np.zeros(m.shape, m.dtype),
                dict(tree),
                is_leaf=lambda m: hasattr(m, "shape") and hasattr(m, "dtype"),
            )
            restored = ckptr.restore(directory, target)
    except Exception as e:  # noqa: BLE001
        raise ValueError(
            f"load_variables: {directory!r} is not a readable Orbax checkpoint "
            f"({type(e).__name__}: {first_line(e)})"
        ) from None
    if "params" not in restored:
        raise ValueError(
            f"load_variables: {directory!r} holds no 'params'; pass a directory written by save_pretrained"
        )
    return {"params": restored["params"], "batch_stats": restored.get("batch_stats", {})}


def _classifier_name(model) -> str | None:
    for info in map(models.get_info, models.list_models()):
        if type(model) is info.builder:
            return info.classifier
    return None


def _classifier_input(model, variables, x):
    classifier = _classifier_name(model)
    captured = []

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if (
            context.method_name == "__call__"
            and isinstance(module, nn.Dense)
            and len(module.scope.path) == 1
            and (classifier is None or module.name == classifier)
        ):
            captured.append(args[0])
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        model.apply(variables, x, train=False)
    if len(captured) != 1:
        raise ValueError(
            f"pooled_features: found {len(captured)} top-level classifiers in "
            f"{type(model).__name__}, expected 1"
        )
    return captured[0]


_classifier_input_jit = jax.jit(_classifier_input, static_argnums=0)


def pooled_features(model, variables: Mapping[str, Any], images: Any, *, jit: bool = True) -> jax.Array:
    """Pooled features before the classifier (eval mode): (N, 1024) for googlenet /
    bn_inception, 2048 for inception_v3, 1536 for inception_v4 / inception_resnet_v2.

    What torchvision gives with ``model.fc = nn.Identity()`` and timm with
    ``num_classes=0`` (``forward_features`` + global pool). ``images``: NHWC float32
    (e.g. from :func:`preprocess`). The classifier's matmul is not computed.
    """
    fn = _classifier_input_jit if jit else _classifier_input
    return fn(model, variables, jnp.asarray(images))
