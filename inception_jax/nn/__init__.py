"""Building blocks shared by every Inception generation (Flax linen, NHWC).

Conventions used throughout the package:

* Inputs and activations are NHWC. Parameters are float32; ``dtype`` is the
  compute dtype (e.g. ``jnp.bfloat16`` on accelerators).
* BatchNorm keeps its running statistics in the ``batch_stats`` collection and
  follows PyTorch exactly (momentum 0.1 meaning ``new = 0.9 * old + 0.1 * batch``,
  running variance updated with the *unbiased* batch variance), so that a model
  converted from PyTorch keeps matching it in train mode too.
* ``train`` switches BatchNorm between batch and running statistics and turns
  dropout on; ``axis_name`` (optional) averages BatchNorm statistics across
  devices under ``pmap`` / ``shard_map``.
* Pools reproduce PyTorch semantics (``ceil_mode``, ``count_include_pad``,
  adaptive pooling) because the reference models depend on them.
* Submodules are named like the PyTorch reference: an ``nn.Sequential`` index
  becomes a ``_<index>`` suffix (``branch2.0`` -> ``branch2_0``) so that weight
  conversion (``inception_jax.weights.convert``) goes by name.

Modules: ``pooling`` (torch-semantics pools), ``norm`` (BatchNorm and cross-device
statistics), ``conv`` (``BasicConv``, conv branches, the classifier layer), ``blocks``
(the Inception blocks), ``dispatch`` (where a platform backend plugs in its kernels).
Everything but ``dispatch`` is re-exported here: ``inception_jax.nn.BasicConv``.
"""

from inception_jax.nn.blocks import (
    AsymmetricConv,
    AuxiliaryClassifier,
    DepthwiseSeparableConv,
    Dropout,
    FactorizedConv5x5,
    GridReduction,
    InceptionModule,
    MixedBlock,
    NaiveInceptionModule,
    ResidualInceptionBlock,
    check_image_input,
)
from inception_jax.nn.conv import (
    BasicConv,
    ConvSpec,
    conv_branch,
    conv_general_dilated,
    dense,
    make_conv,
)
from inception_jax.nn.norm import (
    BatchNorm,
    across_devices,
    batch_norm_train,
    batch_statistics,
    statistics_dtype,
)
from inception_jax.nn.pooling import (
    IntPair,
    PoolSpec,
    adaptive_avg_pool,
    apply_pool,
    avg_pool,
    flatten_nchw,
    global_avg_pool,
    max_pool,
)

__all__ = [
    "AsymmetricConv",
    "AuxiliaryClassifier",
    "BasicConv",
    "BatchNorm",
    "ConvSpec",
    "DepthwiseSeparableConv",
    "Dropout",
    "FactorizedConv5x5",
    "GridReduction",
    "InceptionModule",
    "IntPair",
    "MixedBlock",
    "NaiveInceptionModule",
    "PoolSpec",
    "ResidualInceptionBlock",
    "across_devices",
    "adaptive_avg_pool",
    "apply_pool",
    "avg_pool",
    "batch_norm_train",
    "batch_statistics",
    "check_image_input",
    "conv_branch",
    "conv_general_dilated",
    "dense",
    "flatten_nchw",
    "global_avg_pool",
    "make_conv",
    "max_pool",
    "statistics_dtype",
]
