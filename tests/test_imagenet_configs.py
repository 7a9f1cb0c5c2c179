"""The ImageNet configs run end to end through train.py on an ImageNet-like dataset
(``inception_jax.data.imagenet_like``: 500x375 JPEGs written as tfds ``imagenet2012``,
made from the synthetic cifar10 of synthetic_data.py):
a few steps at small batch, stopped and saved, resumed, and evaluated from the workdir.

About 2 minutes per config on 2 CPU cores (compilation): ``python -m pytest -q -m slow``.
"""

import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def imagenet_like(tmp_path_factory, synthetic_cifar):
    from inception_jax.data import imagenet_like

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    imagenet_like.build(data_dir, synthetic_cifar, num_train=64, num_validation=16)
    return data_dir


def _train(config, workdir, data_dir, cache, *extra):
    args = [
        sys.executable,
        os.path.join(ROOT, "train.py"),
        "--config",
        os.path.join(ROOT, "configs", config),
        "--workdir",
        str(workdir),
        f"--config.data_dir={data_dir}",
        "--config.eval_split=validation",
        "--config.batch_size=4",
        "--config.eval_batch_size=8",
        "--config.num_epochs=-1",
        "--config.num_train_steps=4",
        "--config.checkpoint_every_steps=2",
        "--config.log_every_steps=1",
        "--config.pipeline_workers=1",
        f"--config.compilation_cache_dir={cache}",
        *extra,
    ]
    return subprocess.run(
        args, capture_output=True, text=True, timeout=900, cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu")
    )


@pytest.mark.parametrize("config", ["imagenet_googlenet.py", "imagenet_inception_v3.py"])
def test_imagenet_config_trains_saves_resumes_and_evaluates(config, imagenet_like, tmp_path):
    cache = tmp_path / "xla"
    first = _train(config, tmp_path / "run", imagenet_like, cache, "--config.stop_at_step=2")
    assert first.returncode == 0, first.stdout[-1500:] + first.stderr[-1500:]
    assert "step 2/4" in first.stdout
    # the checkpoint holds the input pipeline's position beside the train state
    with open(tmp_path / "run" / "checkpoints" / "2" / "data" / "process_0-of-1.json") as f:
        assert json.load(f)["position"] == 2

    second = _train(config, tmp_path / "run", imagenet_like, cache)
    assert second.returncode == 0, second.stdout[-1500:] + second.stderr[-1500:]
    assert "Resumed from step 2" in second.stdout and "step 4/4" in second.stdout
    with open(tmp_path / "run" / "checkpoints" / "4" / "data" / "process_0-of-1.json") as f:
        assert json.load(f)["position"] == 4
    with open(tmp_path / "run" / "metrics.jsonl") as f:
        epochs = [r for r in map(json.loads, f) if r.get("kind") == "epoch"]
    assert [e["step"] for e in epochs] == [2, 4]

    evaluation = _train(config, tmp_path / "run", imagenet_like, cache, "--mode=eval")
    assert evaluation.returncode == 0, evaluation.stdout[-1500:] + evaluation.stderr[-1500:]
    pattern = r"Checkpoint best \(step (\d+)\): Test Acc: ([\d.]+)%, Test Loss: ([\d.]+)"
    m = re.search(pattern, evaluation.stdout)
    assert m, evaluation.stdout[-1500:]
    best = max(epochs, key=lambda e: e["eval_accuracy"])
    # 16 validation images: the accuracy is a multiple of 1/16, and the saved best
    # checkpoint evaluates (in a new process) to what the run measured at its step
    assert int(m.group(1)) == best["step"]
    assert float(m.group(2)) == pytest.approx(100 * best["eval_accuracy"], abs=0.01)
    assert round(16 * best["eval_accuracy"], 6) == int(round(16 * best["eval_accuracy"]))
    assert float(m.group(3)) == pytest.approx(best["eval_loss"], abs=1e-3)
