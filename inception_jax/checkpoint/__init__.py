"""Orbax checkpoints of a run (``manager``) and their integrity checks (``integrity``)."""

from inception_jax.checkpoint.integrity import checksums
from inception_jax.checkpoint.manager import (
    COMPATIBILITY_KEYS,
    Checkpointer,
    CheckpointWriteError,
    quiet_orbax_logs,
)

__all__ = ["COMPATIBILITY_KEYS", "CheckpointWriteError", "Checkpointer", "checksums", "quiet_orbax_logs"]
