"""Where a platform backend plugs in: a table of kernels in effect while tracing.

The building blocks (``pooling``, ``norm``, ``conv``) call :func:`kernel` for the
few ops a backend may replace (``max_pool``, ``batch_norm_train``, ``conv``). Outside
:func:`using` it returns None and the blocks run plain JAX with JAX's own autodiff,
which is the program every platform runs. The table is read when a function is
*traced*, so it decides what a ``jax.jit`` compiles the first time; a function
already compiled keeps the kernels it was traced with.

It lives beside the blocks, so that a backend (``inception_jax.backends``) imports the
blocks and plugs into them, and the blocks never import a backend. It imports
nothing heavy and nothing platform-specific.
"""

from __future__ import annotations

import contextlib
import contextvars
import types
from typing import Callable, Iterator, Mapping, Optional

OPS = ("max_pool", "batch_norm_train", "conv")

_NONE: Mapping[str, Callable] = types.MappingProxyType({})
_ACTIVE: contextvars.ContextVar[Mapping[str, Callable]] = contextvars.ContextVar(
    "inception_jax_kernels", default=_NONE
)


def kernel(op: str) -> Optional[Callable]:
    """The replacement for ``op`` in effect, or None (plain JAX)."""
    return _ACTIVE.get().get(op)


def active() -> Mapping[str, Callable]:
    return dict(_ACTIVE.get())


@contextlib.contextmanager
def using(kernels: Mapping[str, Callable]) -> Iterator[None]:
    """Traces inside this block use ``kernels`` (op name -> function); ``{}`` turns
    every replacement off."""
    unknown = sorted(set(kernels) - set(OPS))
    if unknown:
        raise ValueError(f"unknown kernel op(s) {unknown}; expected some of {', '.join(OPS)}")
    token = _ACTIVE.set(dict(kernels))
    try:
        yield
    finally:
        _ACTIVE.reset(token)
