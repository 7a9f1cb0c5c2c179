import os
import sys

# Tests run on the CPU even where an accelerator is visible.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(__file__))

# As train.py does, before JAX starts its threads (inception_jax/hostmem.py): each
# jitted call's temporary block is reused instead of page-faulted in again.
from inception_jax import hostmem  # noqa: E402

hostmem.reuse_freed_memory()
