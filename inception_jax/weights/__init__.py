"""Weights: reading files safely (``files``), the download caches (``hub``), torch
state_dict conversion (``convert``), one merge rule for loaded weights (``merge``),
the reference preprocessing (``preprocess``) and pretrained variables
(``pretrained``). Everything is re-exported here."""

from inception_jax.weights.convert import (
    convert_state_dict,
    from_torch,
    torch_key_to_path,
)
from inception_jax.weights.files import (
    SAFETENSORS_EXTENSIONS,
    TORCH_EXTENSIONS,
    load_safetensors,
    load_torch_file,
    load_torch_state_dict,
    strip_module_prefix,
    to_numpy,
)
from inception_jax.weights.hub import (
    cached_weights,
    download_weights,
    pretrained_config,
    torch_hub_dir,
)
from inception_jax.weights.merge import (
    merge_params,
)
from inception_jax.weights.preprocess import (
    ImageLike,
    imagenet_classes,
    preprocess,
    resize_center_crop,
)
from inception_jax.weights.pretrained import (
    METADATA_FILE,
    load_pretrained,
    load_variables,
    pooled_features,
    save_pretrained,
)

__all__ = [
    "ImageLike",
    "METADATA_FILE",
    "SAFETENSORS_EXTENSIONS",
    "TORCH_EXTENSIONS",
    "cached_weights",
    "convert_state_dict",
    "download_weights",
    "from_torch",
    "imagenet_classes",
    "load_pretrained",
    "load_safetensors",
    "load_torch_file",
    "load_torch_state_dict",
    "load_variables",
    "merge_params",
    "pooled_features",
    "preprocess",
    "pretrained_config",
    "resize_center_crop",
    "save_pretrained",
    "strip_module_prefix",
    "to_numpy",
    "torch_hub_dir",
    "torch_key_to_path",
]
