"""Reading weight files safely: torch ``.pth``/``.pt``/``.bin`` with
``weights_only=True`` (never a full unpickle) and ``.safetensors``, into
``{name: numpy array}``."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from inception_jax.errors import first_line

TORCH_EXTENSIONS = (".pth", ".pt", ".bin")


SAFETENSORS_EXTENSIONS = (".safetensors",)


_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "state_dict_ema", "net", "module")


def _is_array(value: Any) -> bool:
    return hasattr(value, "detach") or isinstance(value, np.ndarray)


def to_numpy(value: Any) -> np.ndarray:
    """A numpy array of a torch tensor (without importing torch; bfloat16 as float32)
    or of anything ``np.asarray`` takes."""
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def strip_module_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """``state_dict`` with the ``module.`` prefix that (Distributed)DataParallel adds
    removed from its keys."""
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


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
    return strip_module_prefix({k: to_numpy(v) for k, v in arrays.items()})


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
        first = first_line(e)
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
            first = first_line(error)
            raise ValueError(
                f"weights file {path!r} could not be read as safetensors ({type(error).__name__}: {first})"
            ) from None
    return _unwrap(arrays, path)
