import os
import sys

# Tests run on the CPU even where an accelerator is visible.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(__file__))

# As train.py does, before JAX starts its threads (inception_jax/hostmem.py): each
# jitted call's temporary block is reused instead of page-faulted in again.
from inception_jax import hostmem  # noqa: E402

hostmem.reuse_freed_memory()

import pytest  # noqa: E402

SHARED_TFDS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data", "tfds"
)


def pytest_configure(config):
    config.addinivalue_line("markers", "needs_cifar: reads the real CIFAR-10 copy in ../shared/data/tfds")
    config.addinivalue_line(
        "markers", "slow: takes more than ~30 s on a 2-core CPU (deselect with -m 'not slow')"
    )


def pytest_runtest_setup(item):
    # a missing data copy fails these tests with the reason, never skips them silently
    if item.get_closest_marker("needs_cifar") and not os.path.isdir(os.path.join(SHARED_TFDS, "cifar10")):
        pytest.fail(
            f"{os.path.normpath(SHARED_TFDS)}/cifar10 is missing: this test reads the real CIFAR-10 "
            "copy that sits beside the repository (../shared/data/tfds); put a prepared tfds "
            "cifar10 there",
            pytrace=False,
        )
