"""Host memory setting for XLA:CPU: reuse freed memory instead of handing it back.

Each execution of a compiled step asks for one large temporary block (about 0.7 GB
for inception_cifar at batch 128) and frees it at the end. glibc's ``malloc``
serves blocks that large with a fresh ``mmap`` and returns them with ``munmap``, so
every step the kernel maps and zero-fills every page again: on 2 CPU cores that was
~170,000 page faults and ~0.5 s of system time per step, a quarter of the step's
CPU time. :func:`reuse_freed_memory` makes that block come from glibc's main heap
and stay there, which removes those faults (measured with ``getrusage``: 1.74
million minor faults per 10 steps -> 0):

* JAX runs a CPU computation on the thread that calls it
  (``jax_cpu_enable_async_dispatch`` off), so the block is asked for by the Python
  thread, which allocates from the main heap. Another thread's ``malloc`` arena is
  made of 64 MB heaps, and there a larger block is always a fresh ``mmap``.
* The main heap makes no ``mmap`` for large blocks and keeps freed memory (up to
  2 GB, growing 64 MB at a time) instead of trimming it back to the kernel.

Earlier this put every thread on the main heap instead (one malloc arena). XLA's
compiler threads then waited for each other's ``malloc``: the first googlenet step
compiled in 27 s instead of 17 s (docs/benchmarks.md).

It changes process-wide behaviour, so it is opt-in for library users; ``train.py``
applies it with the rule of the CPU kernels (:func:`follow`: ``config.cpu_kernels``
"auto" = on exactly when JAX runs on the CPU, True/False force it), and the test
suite and ``benchmarks/throughput.py`` (for inception_jax) call it. Set
``INCEPTION_JAX_DEFAULT_MALLOC=1`` to leave ``malloc`` and JAX alone.

It must run before JAX creates its CPU client (the first computation or
``jax.devices()``); this module imports JAX only once the ``malloc`` settings are made.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import os
import pkgutil
import sys

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4

OPT_OUT_ENV = "INCEPTION_JAX_DEFAULT_MALLOC"


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _ = libc.gnu_get_libc_version  # glibc only (not musl)
        return libc
    except (OSError, AttributeError):
        return None


def _accelerator_plugin_installed() -> bool:
    """Whether JAX may pick a GPU/TPU: ``JAX_PLATFORMS`` allows one and a plugin is
    installed (``jax_plugins.*`` such as CUDA's, or ``libtpu``)."""
    platforms = os.environ.get("JAX_PLATFORMS", "")
    if platforms and all(p.strip() == "cpu" for p in platforms.split(",")):
        return False
    if importlib.util.find_spec("libtpu") is not None:
        return True
    spec = importlib.util.find_spec("jax_plugins")
    return spec is not None and any(pkgutil.iter_modules(spec.submodule_search_locations))


def reuse_freed_memory(force: bool = False) -> bool:
    """Makes the step's temporary memory come from glibc's main heap and stay there.

    Call it first thing in a program, before JAX creates its CPU client. Returns
    True when applied; False on non-glibc systems, when ``INCEPTION_JAX_DEFAULT_MALLOC``
    is set, or (unless ``force``) when JAX may run on an accelerator: there the step's
    buffers live on the device.

    Settings: no ``mmap`` for large blocks and freed memory at the top of the heap
    kept up to 2 GB (with 64 MB of extra room per growth) instead of being trimmed
    back to the kernel; and JAX's CPU computations run on the calling thread, whose
    memory comes from that heap (if JAX's CPU client already exists, only the heap
    settings take effect). The price: memory a process freed stays mapped to it, so
    its resident size tracks its peak, and a CPU step's call returns when the step
    is done instead of when it is queued.
    """
    if os.environ.get(OPT_OUT_ENV, "") not in ("", "0"):
        return False
    if not force and _accelerator_plugin_installed():
        return False
    libc = _glibc()
    if libc is None:
        return False
    applied = all(
        libc.mallopt(param, value) == 1
        for param, value in (
            (_M_MMAP_MAX, 0),
            (_M_TRIM_THRESHOLD, 2**31 - 1),
            (_M_TOP_PAD, 64 << 20),
        )
    )
    if applied:
        import jax  # only now: the settings above are made

        jax.config.update("jax_cpu_enable_async_dispatch", False)
    return applied


def follow(setting, *, jax_started: bool = False) -> bool:
    """Applies the setting by the rule of ``config.cpu_kernels``: True forces it,
    False leaves ``malloc`` alone, "auto" applies it exactly when JAX runs on the CPU.

    Call it twice: once before JAX starts (``jax_started=False``), when "auto" can
    only predict the platform (no accelerator plugin installed, or
    ``JAX_PLATFORMS=cpu``), and once after (``jax_started=True``), when
    ``jax.default_backend()`` is known: a CPU run whose prediction was wrong (a
    plugin installed, no accelerator present) gets it then, minus running on the
    calling thread, which only a client created later takes. Returns whether it is
    applied.
    """
    if setting is True or setting is False:
        return reuse_freed_memory(force=True) if (setting and not jax_started) else False
    if setting != "auto":
        return False  # not a valid setting: the config's validation names it
    if not jax_started:
        return reuse_freed_memory()
    import jax

    if jax.default_backend() == "cpu" and _accelerator_plugin_installed():
        return reuse_freed_memory(force=True)
    return False
