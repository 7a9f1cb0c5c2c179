"""Model registry: ``register`` a model, ``create(name, ...)`` one, ``get_info`` to
describe it and ``list_models()``. Compiling and running models is the caller's
business (``inception_jax.train.programs.init_variables`` makes their variables)."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Optional, Tuple

import jax.numpy as jnp

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)  # TF-slim "Inception preprocessing": x in [-1, 1]
INCEPTION_STD = (0.5, 0.5, 0.5)


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """Public ImageNet weights of a model and the eval transform they were made for,
    as their reference defines it (see :func:`inception_jax.weights.preprocess`).

    Transform: decode to RGB, resize the shorter side to ``resize_size`` (PIL,
    ``interpolation``), center-crop ``input_size``, scale to [0, 1], reorder to
    ``input_space`` ("RGB" or "BGR"), multiply by ``input_range`` (1 or 255), then
    ``(x - mean) / std`` with ``mean``/``std`` in the model's channel order.
    ``model_kwargs`` are the options the weights need (torchvision's googlenet and
    inception_v3 weights are used with ``transform_input=True``). ``label_offset`` is
    the index of ImageNet class 0 in the logits (1 for 1001-class checkpoints with a
    background class first).
    """

    source: str  # "torchvision", "timm" or "pretrainedmodels"
    url: str
    filename: str  # file name in torch hub's checkpoints/ cache
    input_size: int
    resize_size: int
    interpolation: str = "bilinear"
    mean: Tuple[float, ...] = IMAGENET_MEAN
    std: Tuple[float, ...] = IMAGENET_STD
    input_space: str = "RGB"
    input_range: float = 1.0
    num_classes: int = 1000
    label_offset: int = 0
    model_kwargs: Tuple[Tuple[str, Any], ...] = ()
    hf_hub_id: Optional[str] = None  # timm weights: Hugging Face hub repository
    check_hash: bool = False  # the filename carries a sha256 prefix to verify
    accuracy: Optional[Tuple[float, float]] = None  # published ImageNet-1k top-1/top-5


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What the rest of the package needs to know about a registered model."""

    name: str
    builder: Callable[..., Any]
    default_input_size: int
    min_input_size: int
    num_classes: int = 1000
    has_aux: bool = False
    aux_default: bool = False
    # Smallest input for which train mode with aux heads works (aux pools need room).
    min_aux_input_size: Optional[int] = None
    classifier: str = "fc"  # name of the final Dense (for checkpoint inspection)
    aux_prefixes: Tuple[str, ...] = ()  # top-level names of the aux heads
    reference: str = ""
    pretrained: Optional[Pretrained] = None  # public ImageNet weights + their preprocessing


_REGISTRY: Dict[str, ModelInfo] = {}


def register(info: ModelInfo) -> ModelInfo:
    if info.name in _REGISTRY:
        raise ValueError(f"model {info.name!r} is registered twice")
    _REGISTRY[info.name] = info
    return info


def list_models() -> List[str]:
    """Names accepted by :func:`create`, sorted."""
    return sorted(_REGISTRY)


def get_info(name: str) -> ModelInfo:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; expected one of: {', '.join(list_models())}")
    return _REGISTRY[name]


def create(
    name: str,
    *,
    num_classes: Optional[int] = None,
    aux_logits: Optional[bool] = None,
    dtype: Any = jnp.float32,
    **kwargs: Any,
):
    """Builds a registered model (a Flax linen Module).

    Args:
      name: one of :func:`list_models`.
      num_classes: classifier outputs; default 1000 (10 for the CIFAR models).
      aux_logits: build the auxiliary heads (models that have them); default is
        the reference's default (True for googlenet/googlenet_paper/inception_v3).
      dtype: compute dtype; parameters stay float32.
      **kwargs: model options (``dropout``, ``transform_input``, ``axis_name``, ...).

    Call the result as ``model.apply(variables, x, train=False)`` with NHWC float32
    ``x``: eval mode returns logits; train mode with aux heads returns
    ``(logits, aux_1, ...)``.
    """
    info = get_info(name)
    if num_classes is None:
        num_classes = info.num_classes
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"{name}: num_classes must be a positive int, got {num_classes!r}")
    if info.has_aux:
        kwargs["aux_logits"] = info.aux_default if aux_logits is None else bool(aux_logits)
    elif aux_logits:
        raise ValueError(
            f"{name}: this model has no auxiliary heads, got aux_logits=True; "
            "drop the argument or pick one of googlenet, googlenet_paper, "
            "googlenet_cifar, inception_v3"
        )
    try:
        return info.builder(num_classes=num_classes, dtype=dtype, **kwargs)
    except TypeError as e:
        fields = getattr(info.builder, "__dataclass_fields__", {})
        allowed = sorted(f for f in fields if f not in ("parent", "name"))
        bad = sorted(set(kwargs) - set(allowed))
        raise ValueError(
            f"{name}: unknown option(s) {bad or kwargs}; accepted: {', '.join(allowed)} ({e})"
        ) from None
