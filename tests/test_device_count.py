"""The same update on 1, 4 and 8 devices, dropout and aux heads included (README claim)."""

import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def result():
    env = dict(
        os.environ,
        XLA_FLAGS=os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=os.path.dirname(HERE),
    )
    r = subprocess.run(
        [sys.executable, os.path.join(HERE, "device_count_check.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    lines = [line for line in r.stdout.splitlines() if line.startswith("RESULT ")]
    assert r.returncode == 0 and lines, r.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])


@pytest.mark.parametrize("case", ["inception_cifar", "googlenet_aux", "tiny_plain"])
def test_params_after_steps_agree_on_any_device_count(result, case):
    r = result[case]
    assert r["moved"] > 1e-4  # the steps really moved the params ...
    for n, diff in r["params"].items():  # ... the same way on 4 and 8 devices
        assert diff < 1e-5, (case, n, diff)
    for n, diff in r["stats"].items():
        assert diff < 1e-5, (case, n, diff)


def test_per_device_batch_norm_gives_another_update(result):
    # sync_batch_norm=False (PyTorch DDP's default) normalises each device's 2 examples
    # by their own statistics: the documented price is a device-count-dependent update
    r = result["tiny_unsynced"]
    assert r["params"]["8"] > 1e-4  # 10x the bound above
