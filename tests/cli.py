"""Runs a package command line (``python -m inception_jax.<module>``) the way the
tests check it: a fresh CPU-only process from the repository root, output captured."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_module(module: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )
