"""The same update on 1, 4 and 8 devices, dropout and aux heads included (README claim)."""

import eight_devices
import pytest


@pytest.fixture(scope="module")
def result():
    return eight_devices.run("device_count_check.py", timeout=1200)


def _agree(r, case):
    assert r["moved"] > 1e-4  # the steps really moved the params ...
    for n, diff in r["params"].items():  # ... the same way on 4 and 8 devices
        assert diff < 1e-5, (case, n, diff)
    for n, diff in r["stats"].items():
        assert diff < 1e-5, (case, n, diff)


@pytest.mark.parametrize("case", ["inception_cifar", "tiny_plain"])
def test_params_after_steps_agree_on_any_device_count(result, case):
    _agree(result[case], case)


@pytest.mark.slow  # ~2 min: the float64 programs on 1, 4 and 8 devices
def test_googlenet_with_aux_heads_and_dropout_agrees_on_any_device_count():
    r = eight_devices.run("device_count_check.py", "googlenet", timeout=1200)
    _agree(r["googlenet_aux"], "googlenet_aux")


def test_per_device_batch_norm_gives_another_update(result):
    # sync_batch_norm=False (PyTorch DDP's default) normalises each device's 2 examples
    # by their own statistics: the documented price is a device-count-dependent update
    r = result["tiny_unsynced"]
    assert r["params"]["8"] > 1e-4  # 10x the bound above
