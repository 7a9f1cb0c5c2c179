"""The small input size each registered model is tested at, and the models the
package itself registers (tests register tiny_inception on top)."""

from inception_jax import models

# each model's smallest comfortable size: v3/v4/irv2 need 75 (v3's aux head 299)
SMALL_SIZES = {
    "bn_inception": 32,
    "googlenet": 32,
    "googlenet_cifar": 16,
    "googlenet_paper": 32,
    "inception_cifar": 16,
    "inception_resnet_v2": 75,
    "inception_v3": 75,
    "inception_v4": 75,
}


# Inference-only networks: not trained, so not in the per-model training checks;
# test_fid checks fid_inception_v3 against pytorch-fid block by block.
FEATURE_EXTRACTORS = ("fid_inception_v3",)


def package_models():
    """The trainable models the package registers."""
    return sorted(
        n
        for n in models.list_models()
        if models.get_info(n).builder.__module__.startswith("inception_jax.") and n not in FEATURE_EXTRACTORS
    )
