"""Public ImageNet weights: loading, the reference preprocessing, features.

* :func:`load_torch_state_dict` reads a local ``.pth``/``.pt``/``.bin`` (with
  ``torch.load(..., weights_only=True)``, never a full unpickle) or
  ``.safetensors`` file into ``{name: numpy array}``.
* :func:`load_pretrained` gives ``(model, variables)`` for a registered model from
  such a file, a :func:`save_pretrained` directory, or (``path=None``) the usual
  download caches (torch hub's ``checkpoints/``, the Hugging Face hub cache used by
  timm), downloading when online.
* :func:`preprocess` is the eval transform the weights were made for (torchvision's
  ``weights.transforms()``, timm's ``create_transform`` from the pretrained cfg,
  Cadene's ``TransformImage``), as recorded in each model file's ``PRETRAINED``.
* :func:`features` returns the pooled features the classifier sees.
* :func:`save_pretrained` / :func:`load_variables`: an Orbax checkpoint of
  ``{"params", "batch_stats"}`` to start training from.
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from inception_jax import models
from inception_jax.convert import from_torch
from inception_jax.models.registry import Pretrained

TORCH_EXTENSIONS = (".pth", ".pt", ".bin")
SAFETENSORS_EXTENSIONS = (".safetensors",)
METADATA_FILE = "inception_jax.json"  # written beside the Orbax files by save_pretrained
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "state_dict_ema", "net", "module")


# ----------------------------------------------------------------------------
# Reading weight files
# ----------------------------------------------------------------------------


def _is_array(value: Any) -> bool:
    return hasattr(value, "detach") or isinstance(value, np.ndarray)


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def _unwrap(obj: Any, path: str) -> dict[str, np.ndarray]:
    """Finds the state_dict in a checkpoint (``{"state_dict": ...}``, ``{"model": ...}``)
    and strips a leading ``module.`` (DataParallel) from its keys."""
    for _ in range(3):
        if not isinstance(obj, Mapping):
            break
        if obj and all(_is_array(v) for v in obj.values()):
            break
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping) or not obj:
        kind = type(obj).__name__ if not isinstance(obj, Mapping) else "an empty mapping"
        raise ValueError(
            f"weights file {path!r} holds {kind}, not a state_dict of tensors; "
            "save model.state_dict() (torch.save(model.state_dict(), path))"
        )
    arrays = {str(k): v for k, v in obj.items() if _is_array(v)}
    others = sorted(str(k) for k in obj if not _is_array(obj[k]))
    if not arrays:
        raise ValueError(
            f"weights file {path!r} holds no tensors (keys: {', '.join(others[:5])}); "
            "save model.state_dict() instead"
        )
    if others and not all(k in ("epoch", "step", "arch", "_metadata") for k in others):
        raise ValueError(
            f"weights file {path!r} mixes tensors with other entries "
            f"({', '.join(others[:5])}); save model.state_dict() alone"
        )
    return {(k.removeprefix("module.")): _to_numpy(v) for k, v in arrays.items()}


def load_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a PyTorch state_dict from ``.pth``/``.pt``/``.bin`` or ``.safetensors``.

    Pickled files are read with ``torch.load(map_location="cpu", weights_only=True)``:
    a file that holds anything but tensors and plain containers (a pickle that would
    run code on load) is refused with a ``ValueError``. Returns ``{key: np.ndarray}``
    (bfloat16 becomes float32), unwrapped from ``{"state_dict": ...}``-style
    wrappers, with any ``module.`` prefix removed.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        what = "is a directory" if os.path.isdir(path) else "does not exist"
        raise ValueError(
            f"weights file {path!r} {what}; pass a .pth/.pt/.bin or .safetensors state_dict file"
        )
    ext = os.path.splitext(path)[1].lower()
    if ext in SAFETENSORS_EXTENSIONS:
        return _load_safetensors(path)
    if ext not in TORCH_EXTENSIONS:
        raise ValueError(
            f"weights file {path!r} has an unknown extension {ext or '(none)'!r}; "
            "expected .pth, .pt, .bin (torch.save of a state_dict) or .safetensors"
        )
    try:
        import torch
    except ImportError:
        raise ValueError(
            f"reading {path!r} needs PyTorch, which is not installed; "
            "pip install torch, or convert the file to .safetensors"
        ) from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - every failure becomes one line
        message = str(e)
        if "weights only" in message.lower() or "weights_only" in message:
            found = re.search(r"GLOBAL ([\w.]+)", message)
            detail = f" (it references {found.group(1)})" if found else ""
            raise ValueError(
                f"weights file {path!r} contains non-weight objects{detail} and was refused for "
                "safety (loading it could run arbitrary code); re-save only the tensors with "
                "torch.save(model.state_dict(), path) from a trusted source, or use .safetensors"
            ) from None
        first = message.strip().splitlines()[0] if message.strip() else type(e).__name__
        raise ValueError(
            f"weights file {path!r} could not be read as a torch checkpoint "
            f"({type(e).__name__}: {first}); is it complete and a torch.save file?"
        ) from None
    return _unwrap(obj, path)


def _load_safetensors(path: str) -> dict[str, np.ndarray]:
    try:
        import safetensors.numpy
    except ImportError:
        raise ValueError(f"reading {path!r} needs the safetensors package; pip install safetensors") from None
    try:
        arrays = safetensors.numpy.load_file(path)
    except Exception as e:  # noqa: BLE001 - e.g. bfloat16, which numpy cannot hold
        error: Exception = e
        try:
            import safetensors.torch

            arrays = safetensors.torch.load_file(path, device="cpu")
        except Exception as e2:  # noqa: BLE001
            if not isinstance(e2, ImportError):
                error = e2
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ValueError(
                f"weights file {path!r} could not be read as safetensors ({type(error).__name__}: {first})"
            ) from None
    return _unwrap(arrays, path)


# ----------------------------------------------------------------------------
# Pretrained configs, caches, download
# ----------------------------------------------------------------------------


def pretrained_config(name: str | Pretrained) -> Pretrained:
    """The :class:`~inception_jax.models.Pretrained` record of a registered model."""
    if isinstance(name, Pretrained):
        return name
    cfg = models.get_info(name).pretrained
    if cfg is None:
        have = [n for n in models.list_models() if models.get_info(n).pretrained is not None]
        raise ValueError(
            f"model {name!r} has no public pretrained weights; models with weights: {', '.join(have)}"
        )
    return cfg


def torch_hub_dir() -> str:
    """torch.hub's directory, computed as torch does (``$TORCH_HOME/hub``), without torch."""
    try:
        import torch.hub

        return torch.hub.get_dir()
    except ImportError:
        home = os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))
        return os.path.join(os.path.expanduser(home), "hub")


def _hf_cache_dir() -> str:
    if os.getenv("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    home = os.getenv("HF_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "huggingface"))
    return os.path.join(os.path.expanduser(home), "hub")


_HF_FILES = ("model.safetensors", "pytorch_model.bin")


def cached_weights(name: str) -> str | None:
    """The path of already-downloaded weights for ``name``, or None.

    Looks in torch hub's ``checkpoints/<filename>`` and, for timm weights, the
    Hugging Face hub cache (``models--timm--<id>/snapshots/*/model.safetensors``).
    """
    cfg = pretrained_config(name)
    candidate = os.path.join(torch_hub_dir(), "checkpoints", cfg.filename)
    if os.path.isfile(candidate):
        return candidate
    if cfg.hf_hub_id:
        repo_dir = os.path.join(_hf_cache_dir(), "models--" + cfg.hf_hub_id.replace("/", "--"))
        for fname in _HF_FILES:
            hits = sorted(glob.glob(os.path.join(repo_dir, "snapshots", "*", fname)), key=os.path.getmtime)
            if hits:
                return hits[-1]
    return None


def _download(url: str, target: str, hash_prefix: str | None = None, timeout: float = 30.0) -> None:
    """Streams ``url`` to ``target`` (via a temporary file, renamed when complete),
    checking the sha256 prefix when given, as torch.hub does."""
    import hashlib
    import shutil
    import tempfile
    import urllib.request

    os.makedirs(os.path.dirname(target), exist_ok=True)
    request = urllib.request.Request(url, headers={"User-Agent": "inception_jax"})
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), suffix=".partial")
    try:
        sha = hashlib.sha256()
        with urllib.request.urlopen(request, timeout=timeout) as response, os.fdopen(fd, "wb") as f:
            while chunk := response.read(1 << 20):
                sha.update(chunk)
                f.write(chunk)
        if hash_prefix and not sha.hexdigest().startswith(hash_prefix):
            raise ValueError(
                f"sha256 {sha.hexdigest()[:12]}... does not start with the expected {hash_prefix}"
            )
        shutil.move(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def download_weights(name: str) -> str:
    """Downloads the public weights of ``name`` to torch hub's ``checkpoints/<filename>``
    (timm's from the Hugging Face hub URL); returns the path."""
    cfg = pretrained_config(name)
    target = os.path.join(torch_hub_dir(), "checkpoints", cfg.filename)
    prefix = None
    if cfg.check_hash:  # torchvision files carry a sha256 prefix: name-<prefix>.pth
        found = re.search(r"-([a-f0-9]+)\.", cfg.filename)
        prefix = found.group(1) if found else None
    _download(cfg.url, target, prefix)
    return target


def _find_or_download(name: str, download: bool) -> str:
    cfg = pretrained_config(name)
    path = cached_weights(name)
    if path:
        return path
    where = os.path.join(torch_hub_dir(), "checkpoints", cfg.filename)
    if cfg.hf_hub_id:
        where += f" or the Hugging Face cache ({cfg.hf_hub_id})"
    if not download:
        raise ValueError(
            f"no {name} weights found in {where} and downloading is off; download "
            f"{cfg.url} to {os.path.join(torch_hub_dir(), 'checkpoints', cfg.filename)} "
            "or pass the file's path"
        )
    try:
        return download_weights(name)
    except Exception as e:  # noqa: BLE001 - offline, HTTP error, bad hash, no torch ...
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(
            f"no {name} weights found in {where} and downloading {cfg.url} failed "
            f"({type(e).__name__}: {first}); download it on a machine with internet "
            f"to {os.path.join(torch_hub_dir(), 'checkpoints', cfg.filename)} or pass "
            "the file's path"
        ) from None


# ----------------------------------------------------------------------------
# Loading and saving variables
# ----------------------------------------------------------------------------


def _adapt_state_dict(name: str, sd: dict[str, np.ndarray], cfg: Pretrained | None) -> dict[str, np.ndarray]:
    """Known layouts of public files that differ from the reference model:
    Cadene's inceptionresnetv2 names the classifier ``last_linear`` (timm: ``classif``);
    Cadene's inceptionv4/inceptionresnetv2 files have 1001 classes, background first,
    which Cadene's own loader drops for the 1000-class "imagenet" setting."""
    info = models.get_info(name)
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
        and name in ("inception_v4", "inception_resnet_v2")
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


def _options_from_variables(name: str, variables: Mapping[str, Any]) -> dict[str, Any]:
    info = models.get_info(name)
    params = variables["params"]
    options: dict[str, Any] = {"num_classes": int(params[info.classifier]["kernel"].shape[-1])}
    if info.has_aux:
        options["aux_logits"] = any(p in params for p in info.aux_prefixes)
    return options


def _input_size_for(name: str, options: Mapping[str, Any]) -> int:
    info = models.get_info(name)
    if options.get("aux_logits") and info.min_aux_input_size:
        return max(info.min_input_size, info.min_aux_input_size)
    return info.min_input_size


def _replace_heads(name: str, model, variables, rng) -> dict[str, Any]:
    """Fresh classifier heads for a changed ``num_classes`` / added aux heads: every
    parameter (and BatchNorm statistic) whose shape changed or that is new comes from
    ``model.init(rng)``, the rest is kept."""
    size = _input_size_for(name, {"aux_logits": getattr(model, "aux_logits", False)})
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    template = jax.eval_shape(lambda r, x: model.init(r, x, train=False), rng, x)
    flat = {
        col: flax.traverse_util.flatten_dict(flax.core.unfreeze(template.get(col, {})))
        for col in ("params", "batch_stats")
    }
    old = {
        col: flax.traverse_util.flatten_dict(flax.core.unfreeze(variables.get(col, {})))
        for col in ("params", "batch_stats")
    }
    changed = [
        (col, k)
        for col in flat
        for k, v in flat[col].items()
        if k not in old[col] or tuple(np.shape(old[col][k])) != tuple(v.shape)
    ]

    def init_changed(r):  # XLA keeps only the changed leaves' initialisers
        new = model.init(r, jnp.zeros(x.shape, x.dtype), train=False)
        new = {col: flax.traverse_util.flatten_dict(new.get(col, {})) for col in flat}
        return [new[col][k] for col, k in changed]

    fresh = dict(zip(changed, jax.jit(init_changed)(rng)))
    return {
        col: flax.traverse_util.unflatten_dict(
            {k: fresh[(col, k)] if (col, k) in fresh else old[col][k] for k in flat[col]}
        )
        for col in flat
    }


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
        _check_variables(name, variables, os.fspath(path))
    else:
        if path is None:
            cfg = pretrained_config(name)
            path = _find_or_download(name, download)
        sd = _adapt_state_dict(name, load_torch_state_dict(path), cfg)
        try:
            variables = from_torch(name, sd, **options)
        except ValueError as e:
            raise ValueError(f"weights file {os.fspath(path)!r} does not fit {name}: {e}") from None
    saved = _options_from_variables(name, variables)
    options.update(saved)
    options.update(model_kwargs)
    if num_classes is not None:
        options["num_classes"] = num_classes
    model = models.create(name, **options)
    variables = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
    if options.get("aux_logits") is False and saved.get("aux_logits"):  # drop unused aux heads
        aux = models.get_info(name).aux_prefixes
        variables = {col: {k: v for k, v in tree.items() if k not in aux} for col, tree in variables.items()}
    elif options["num_classes"] != saved["num_classes"] or (
        options.get("aux_logits") and not saved.get("aux_logits")
    ):
        variables = _replace_heads(name, model, variables, jax.random.PRNGKey(0) if rng is None else rng)
    return model, variables


def _check_variables(name: str, variables: Mapping[str, Any], where: str) -> None:
    """Every saved array has the shape ``name`` expects (names a mismatch)."""
    try:
        options = _options_from_variables(name, variables)
    except (KeyError, TypeError):
        raise ValueError(
            f"{where!r} does not hold {name} variables (no {models.get_info(name).classifier!r} classifier)"
        ) from None
    model = models.create(name, **options)
    size = _input_size_for(name, options)
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
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(
            f"load_variables: {directory!r} is not a readable Orbax checkpoint "
            f"({type(e).__name__}: {first[:200]})"
        ) from None
    if "params" not in restored:
        raise ValueError(
            f"load_variables: {directory!r} holds no 'params'; pass a directory written by save_pretrained"
        )
    return {"params": restored["params"], "batch_stats": restored.get("batch_stats", {})}


# ----------------------------------------------------------------------------
# Preprocessing
# ----------------------------------------------------------------------------

ImageLike = Any  # a path, a PIL image, or an HxWxC uint8 array


def _open_image(item: ImageLike):
    from PIL import Image, UnidentifiedImageError

    if isinstance(item, (str, os.PathLike)):
        path = os.fspath(item)
        if not os.path.isfile(path):
            raise ValueError(f"image {path!r} does not exist")
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ValueError(
                f"image {path!r} could not be decoded ({first}); pass a JPEG/PNG/... image file"
            ) from None
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    array = np.asarray(item)
    if (
        array.dtype != np.uint8
        or array.ndim not in (2, 3)
        or (array.ndim == 3 and array.shape[-1] not in (1, 3, 4))
    ):
        raise ValueError(
            f"preprocess: expected image paths, PIL images or HxWx3 uint8 arrays, "
            f"got an array of shape {array.shape} and dtype {array.dtype}"
        )
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return Image.fromarray(array).convert("RGB")


def _pil_filter(interpolation: str):
    from PIL import Image

    modes = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}
    if interpolation not in modes:
        raise ValueError(f"unknown interpolation {interpolation!r}; expected one of {sorted(modes)}")
    return modes[interpolation]


def resize_center_crop(img, resize_size: int, crop_size: int, interpolation: str = "bilinear"):
    """torchvision's ``Resize(resize_size)`` (shorter side, PIL) + ``CenterCrop(crop_size)``."""
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = resize_size, int(resize_size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), _pil_filter(interpolation))
    if crop_size > new_w or crop_size > new_h:
        raise ValueError(f"crop {crop_size} is larger than the resized image {new_w}x{new_h}")
    top = round((new_h - crop_size) / 2.0)  # Python rounding, as torchvision
    left = round((new_w - crop_size) / 2.0)
    return img.crop((left, top, left + crop_size, top + crop_size))


def preprocess(images: ImageLike | Sequence[ImageLike], name: str | Pretrained) -> np.ndarray:
    """The reference eval transform of ``name``'s pretrained weights -> NHWC float32.

    ``images``: a path, PIL image or HxWx3 uint8 array, or a list of them (a 4-D
    uint8 array is a batch). Each is converted to RGB, its shorter side resized
    with the weights' interpolation, center-cropped, scaled to [0, 1], put in the
    weights' channel order and range and normalised (see
    :class:`inception_jax.models.Pretrained`).
    """
    cfg = pretrained_config(name)
    single = isinstance(images, (str, os.PathLike)) or not isinstance(images, (list, tuple, np.ndarray))
    if single or (isinstance(images, np.ndarray) and images.ndim != 4):
        items = [images]
    else:
        items = list(images)
    if not items:
        raise ValueError("preprocess: no images given")
    mean = np.asarray(cfg.mean, np.float32)
    std = np.asarray(cfg.std, np.float32)
    out = np.empty((len(items), cfg.input_size, cfg.input_size, 3), np.float32)
    for i, item in enumerate(items):
        img = resize_center_crop(_open_image(item), cfg.resize_size, cfg.input_size, cfg.interpolation)
        x = np.asarray(img, np.uint8).astype(np.float32) / np.float32(255.0)
        if cfg.input_space == "BGR":
            x = x[..., ::-1]
        if cfg.input_range != 1:
            x = x * np.float32(cfg.input_range)
        out[i] = (x - mean) / std
    return out


# ----------------------------------------------------------------------------
# Features
# ----------------------------------------------------------------------------


def _classifier_name(model) -> str | None:
    for name in models.list_models():
        if type(model) is models.get_info(name).builder:
            return models.get_info(name).classifier
    return None


def _pooled_features(model, variables, x):
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
            f"features: found {len(captured)} top-level classifiers in {type(model).__name__}, expected 1"
        )
    return captured[0]


_pooled_features_jit = jax.jit(_pooled_features, static_argnums=0)


def features(model, variables: Mapping[str, Any], images: Any, *, jit: bool = True) -> jax.Array:
    """Pooled features before the classifier (eval mode): (N, 1024) for googlenet /
    bn_inception, 2048 for inception_v3, 1536 for inception_v4 / inception_resnet_v2.

    What torchvision gives with ``model.fc = nn.Identity()`` and timm with
    ``num_classes=0`` (``forward_features`` + global pool). ``images``: NHWC float32
    (e.g. from :func:`preprocess`). The classifier's matmul is not computed.
    """
    fn = _pooled_features_jit if jit else _pooled_features
    return fn(model, variables, jnp.asarray(images))


def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in the standard (synset-sorted) index order,
    as torchvision's weights list them."""
    here = os.path.join(os.path.dirname(__file__), "imagenet_classes.txt")
    with open(here, encoding="utf-8") as f:
        names = tuple(line.rstrip("\n") for line in f if line.strip())
    if len(names) != 1000:
        raise ValueError(f"{here} lists {len(names)} classes, expected 1000; reinstall the package")
    return names
