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

# A prepared tfds data_dir holding the real CIFAR-10: $INCEPTION_JAX_CIFAR_DIR, else the
# copy beside the repository that CI provides (../shared/data/README.md). Only tests of
# accuracy on real CIFAR read it (marker needs_cifar, fixture shared_tfds); every other
# test writes the small data it needs (fixture synthetic_cifar).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_TFDS = os.path.normpath(
    os.environ.get("INCEPTION_JAX_CIFAR_DIR") or os.path.join(ROOT, "..", "shared", "data", "tfds")
)


def pytest_configure(config):
    config.addinivalue_line("markers", "needs_cifar: reads the real CIFAR-10 copy in ../shared/data/tfds")
    config.addinivalue_line(
        "markers", "slow: takes more than ~30 s on a 2-core CPU (deselect with -m 'not slow')"
    )
    config.addinivalue_line("markers", "heavy: minutes each; left out of .ci/run (python -m pytest -m heavy)")


def pytest_runtest_setup(item):
    # a clone with nothing beside it skips the real-data tests with the reason; CI never
    # does, since .ci/run stops before the tests when the copy is missing
    if item.get_closest_marker("needs_cifar") and not os.path.isdir(os.path.join(SHARED_TFDS, "cifar10")):
        pytest.skip(f"{SHARED_TFDS}/cifar10 is missing: this test needs the real CIFAR-10 copy")


@pytest.fixture(scope="session")
def shared_tfds():
    """The tfds data_dir of the real CIFAR-10 copy (tests using it carry needs_cifar)."""
    return SHARED_TFDS


@pytest.fixture(scope="session")
def synthetic_cifar(tmp_path_factory):
    """A tfds data_dir holding a synthetic ``cifar10`` of 512 drawn images (synthetic_data.py),
    written once per test run (about a second)."""
    import synthetic_data

    return synthetic_data.write_cifar10(str(tmp_path_factory.mktemp("synthetic_tfds")), num_examples=512)
