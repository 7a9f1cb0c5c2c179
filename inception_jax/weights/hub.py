"""Where public weights live: torch hub's ``checkpoints/`` and the Hugging Face hub
cache (timm); finding them there, or downloading them (hash-checked)."""

from __future__ import annotations

import glob
import os
import re

from inception_jax import models
from inception_jax.checkpoint.integrity import write_atomic
from inception_jax.errors import first_line
from inception_jax.models.registry import ModelInfo, Pretrained


def pretrained_config(name: str | ModelInfo | Pretrained) -> Pretrained:
    """The :class:`~inception_jax.models.Pretrained` record of a registered model
    (given by name or by its :class:`~inception_jax.models.ModelInfo`)."""
    if isinstance(name, Pretrained):
        return name
    info = name if isinstance(name, ModelInfo) else models.get_info(name)
    cfg = info.pretrained
    if cfg is None:
        have = [n for n in models.list_models() if models.get_info(n).pretrained is not None]
        raise ValueError(
            f"model {info.name!r} has no public pretrained weights; models with weights: {', '.join(have)}"
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


def cached_weights(name: str | Pretrained) -> str | None:
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
    """Streams ``url`` to ``target`` (whole or not at all), checking the sha256 prefix
    when given, as torch.hub does."""
    import hashlib
    import urllib.request

    def fetch(f) -> None:
        sha = hashlib.sha256()
        request = urllib.request.Request(url, headers={"User-Agent": "inception_jax"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            while chunk := response.read(1 << 20):
                sha.update(chunk)
                f.write(chunk)
        if hash_prefix and not sha.hexdigest().startswith(hash_prefix):
            raise ValueError(
                f"sha256 {sha.hexdigest()[:12]}... does not start with the expected {hash_prefix}"
            )

    os.makedirs(os.path.dirname(target), exist_ok=True)
    write_atomic(target, fetch, remedy="free disk space or set TORCH_HOME to another folder")


def download_weights(name: str | Pretrained) -> str:
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


def _find_or_download(name: str, cfg: Pretrained, download: bool) -> str:
    path = cached_weights(cfg)
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
        return download_weights(cfg)
    except Exception as e:  # noqa: BLE001 - offline, HTTP error, bad hash, no torch ...
        first = first_line(e)
        raise ValueError(
            f"no {name} weights found in {where} and downloading {cfg.url} failed "
            f"({type(e).__name__}: {first}); download it on a machine with internet "
            f"to {os.path.join(torch_hub_dir(), 'checkpoints', cfg.filename)} or pass "
            "the file's path"
        ) from None
