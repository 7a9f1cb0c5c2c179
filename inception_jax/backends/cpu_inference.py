"""XLA:CPU inference (FID feature extraction): every thread's memory from one heap.

A forward pass of the FID Inception network at 299 px asks for its activations'
memory afresh in XLA:CPU's worker threads. glibc gives each thread its own malloc
arena of 64 MB heaps and serves larger blocks with a fresh ``mmap``, so every batch
the kernel maps and zero-fills every page again. Measured on a 2-core CPU, batch 50,
one forward pass (2026-12-07, machine shared with other jobs, load average ~2.6):

=========================================  ==============  =========  ======
setting                                    minor faults    system s   img/s
=========================================  ==============  =========  ======
default                                    2.6 million     7.8-8.1    2.6
``inception_jax.hostmem`` + one arena      13 thousand     0.02-0.04  5.2
=========================================  ==============  =========  ======

:func:`single_arena` applies :func:`inception_jax.hostmem.reuse_freed_memory` (large
blocks from the main heap, kept) and ``mallopt(M_ARENA_MAX, 1)`` (every thread on the
main heap). The numbers are those of the plain program: only where memory comes
from changes. For training it is not used: with one arena XLA's compiler threads
waited for each other (``hostmem``'s notes), and a training run compiles more.
The FID command line applies it on a CPU; call it first thing in a program,
before JAX creates its CPU client.
"""

from __future__ import annotations

from inception_jax import hostmem

_M_ARENA_MAX = -8  # glibc's malloc.h


def single_arena() -> bool:
    """All threads' memory from glibc's main heap, freed blocks kept (CPU runs only:
    False, doing nothing, where JAX may pick an accelerator, off glibc, or with
    ``INCEPTION_JAX_DEFAULT_MALLOC`` set). Returns whether it was applied."""
    libc = hostmem._glibc()
    if libc is None or not hostmem.reuse_freed_memory():
        return False
    return libc.mallopt(_M_ARENA_MAX, 1) == 1
