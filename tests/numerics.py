"""Numeric comparisons shared by the tests (no torch, no JAX devices touched)."""

import jax
import numpy as np


def tree_rel_l2(a, b) -> float:
    """||a - b|| / ||b|| over every leaf of two pytrees together (float64)."""
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    num = sum(float(np.sum((np.float64(x) - np.float64(y)) ** 2)) for x, y in zip(la, lb))
    return (num / sum(float(np.sum(np.float64(y) ** 2)) for y in lb)) ** 0.5


def accuracy_and_loss(logits, labels):
    """(accuracy, mean cross-entropy) of ``logits`` computed by hand in float64: the
    reference the runs' own evaluations are checked against."""
    logits = np.asarray(logits, np.float64)
    log_p = logits - logits.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    return np.mean(logits.argmax(1) == labels), -np.mean(log_p[np.arange(len(labels)), labels])
