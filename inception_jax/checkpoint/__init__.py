"""Checkpoints of a run: the ``Checkpointer`` (``manager``), the two Orbax managers
(``stores``), the checkpoint thread (``background``), integrity checks (``integrity``)
and Orbax's log noise dropped (``quiet``)."""

from inception_jax.checkpoint.integrity import COMPATIBILITY_KEYS, checksums
from inception_jax.checkpoint.manager import Checkpointer, CheckpointWriteError
from inception_jax.checkpoint.quiet import quiet_orbax_logs

__all__ = ["COMPATIBILITY_KEYS", "CheckpointWriteError", "Checkpointer", "checksums", "quiet_orbax_logs"]
