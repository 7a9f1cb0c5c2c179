"""Platform backends: kernels measured faster on one platform, opt-in, outside the
model blocks. Without them every model is the same plain JAX program everywhere.

* ``cpu`` (:func:`cpu_kernels`): hand-written gradients for XLA:CPU. The trainer
  turns them on when it runs on a CPU (``config.cpu_kernels="auto"``).
* ``cpu_inference`` (``single_arena``): all threads' memory from one malloc heap,
  for FID feature extraction on a CPU (the FID command line applies it).

A backend plugs its kernels into the building blocks through
``inception_jax.nn.dispatch``: backends import the blocks, never the other way round.
Imported lazily: the CPU backend imports JAX and the blocks.
"""

import importlib

__all__ = ["cpu_kernels", "cpu", "cpu_inference"]


def __getattr__(name):
    if name in ("cpu", "cpu_inference"):
        return importlib.import_module(f"inception_jax.backends.{name}")
    if name == "cpu_kernels":
        return importlib.import_module("inception_jax.backends.cpu").cpu_kernels
    raise AttributeError(f"module 'inception_jax.backends' has no attribute {name!r}")
