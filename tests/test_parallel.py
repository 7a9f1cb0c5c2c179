"""The per-device train step on 1 vs 8 (fake CPU) devices, and shard_map vs pmap."""

import eight_devices
import pytest


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    return eight_devices.run("multidevice_check.py", str(tmp_path_factory.mktemp("w")), timeout=900)


def test_eight_devices_give_the_same_step_as_one(result):
    assert result["devices"] == 8
    one, eight = result["losses"]["one"], result["losses"]["eight"]
    assert one == pytest.approx(eight, rel=1e-5)
    assert result["params_moved"] > 1e-4  # the steps really changed the params
    assert result["params_eight"] < 1e-5  # ... identically on 1 and 8 devices
    assert result["stats_eight"] < 1e-5  # synchronised BatchNorm statistics


def test_a_saved_program_runs_the_same_step_on_eight_devices(result):
    assert result["programs_loaded_counts"] == [0, 1]  # read back, not traced again
    assert result["programs_equal"]  # bitwise the state of the traced 8-device run
    assert result["losses"]["eight_loaded"] == result["losses"]["eight"]


def test_a_runner_on_a_subset_of_the_devices_traces_its_own_program(result):
    # same cache, same caller key, same argument shapes: only the devices differ
    assert result["programs_subset_counts"] == [1, 0]  # traced and written, not read back
    assert result["programs_subset_equal"]  # bitwise a plain 2-device run's state


def test_pmap_and_shard_map_agree(result):
    assert result["losses"]["pmap"] == pytest.approx(result["losses"]["eight"], rel=1e-5)
    assert result["params_pmap"] < 1e-5
    assert result["stats_pmap"] < 1e-5


def test_batch_not_divisible_by_devices_is_one_line(result):
    msg = result["divisibility_error"]
    assert msg and "config.batch_size=12" in msg and "8 devices" in msg and "\n" not in msg


def test_checkpoint_from_eight_devices_resumes_on_one(result, capsys):
    import jax
    import reliability_worker  # noqa: F401  (registers tiny_inception)

    from inception_jax import config as config_lib
    from inception_jax import train as training

    assert jax.device_count() == 1
    c = config_lib.base_config()
    c.model = "tiny_inception"
    c.dataset, c.image_size, c.batch_size, c.eval_batch_size = "synthetic", 16, 16, 16
    c.synthetic_examples, c.num_classes, c.num_epochs, c.num_train_steps = 64, 4, -1, 3
    c.compilation_cache_dir = ""
    out = training.train_and_evaluate(c, result["eight_device_workdir"])
    assert "Resumed from step 2" in capsys.readouterr().out
    assert out["step"] == 3
