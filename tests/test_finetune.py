"""Fine-tuning from PyTorch weights (configs/finetune_cifar10.py): the loaded
weights equal the torch file's, the heads are replaced for 10 classes, CIFAR images
are resized on the device, and the loss goes down."""

import json
import os
import sys

import numpy as np
import pytest
from numerics import accuracy_and_loss

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from inception_jax import config as config_lib
from inception_jax import train as training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def torch_googlenet(tmp_path_factory):
    torch.manual_seed(0)
    net = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True).eval()
    with torch.no_grad():  # non-trivial BN statistics, so loading them is visible
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.8, 1.2)
    path = tmp_path_factory.mktemp("weights") / "googlenet.pth"
    torch.save(net.state_dict(), path)
    return path, {k: v.numpy() for k, v in net.state_dict().items()}


def finetune_config(weights, **overrides):
    sys.path.insert(0, ROOT)
    from configs.finetune_cifar10 import get_config

    c = get_config()
    c.init_from = str(weights)
    c.half_precision = False  # bfloat16 is slow on CPUs
    for k, v in overrides.items():
        c[k] = v
    return c


def test_init_from_loads_every_array_but_the_new_heads(torch_googlenet):
    import jax

    path, sd = torch_googlenet
    c = finetune_config(path, resize_to=32)
    config_lib.validate(c)
    model = training.build_model(c, 10)
    tx = training.make_optimizer(c, lambda step: 0.01)
    fresh = training.create_train_state(model, jax.random.PRNGKey(0), 32, tx)
    state, note = training.init_from_pretrained(fresh, c)
    assert note.endswith("new heads: aux1, aux2, fc")
    p, s = state.params, state.batch_stats
    np.testing.assert_array_equal(p["conv1"]["conv"]["kernel"], sd["conv1.conv.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(
        p["inception5b"]["branch4_1"]["conv"]["kernel"],
        sd["inception5b.branch4.1.conv.weight"].transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(
        s["inception4e"]["branch2_0"]["bn"]["mean"], sd["inception4e.branch2.0.bn.running_mean"]
    )
    np.testing.assert_array_equal(p["aux1"]["fc1"]["kernel"], sd["aux1.fc1.weight"].T)
    # the 1000-class classifiers are not loaded: fresh 10-class ones
    assert p["fc"]["kernel"].shape == (1024, 10) and p["aux2"]["fc2"]["kernel"].shape == (1024, 10)
    np.testing.assert_array_equal(p["fc"]["kernel"], fresh.params["fc"]["kernel"])
    # the same through a save_pretrained (Orbax) directory
    from inception_jax import weights as pretrained

    _, variables = pretrained.load_pretrained("googlenet", str(path))
    saved = pretrained.save_pretrained(
        variables, str(path.parent / "orbax"), name="googlenet", model_kwargs={"transform_input": True}
    )
    c.init_from = saved
    again, note = training.init_from_pretrained(fresh, c)
    assert note.endswith("new heads: aux1, aux2, fc")
    for a, b in zip(jax.tree_util.tree_leaves(again.params), jax.tree_util.tree_leaves(state.params)):
        np.testing.assert_array_equal(a, b)


def test_init_from_weights_of_another_model_is_one_line(torch_googlenet):
    path, _ = torch_googlenet
    c = finetune_config(path, model="inception_v3", resize_to=75)
    c.model_kwargs.aux_logits = False
    # the file is checked against the model before any state is touched
    with pytest.raises(ValueError, match=r"^weights file .* does not fit inception_v3"):
        training.init_from_pretrained(None, c)


@pytest.mark.slow
def test_finetuning_on_resized_cifar(torch_googlenet, synthetic_cifar, tmp_path, capsys):
    # the synthetic cifar10 (synthetic_data.py): its classes are learnable (shape and
    # colour), so the loss going down is the same check as on real CIFAR
    path, _ = torch_googlenet
    c = finetune_config(
        path,
        data_dir=synthetic_cifar,
        train_split="train[:256]",
        eval_split="train[448:512]",
        resize_to=48,
        batch_size=32,
        eval_batch_size=64,
        num_epochs=2,
        warmup_epochs=0.0,
        log_every_steps=8,
        compilation_cache_dir="",
        cache_dir=str(tmp_path / "cache"),
    )
    out = training.train_and_evaluate(c, str(tmp_path / "run"))
    printed = capsys.readouterr().out
    assert "Initialised from" in printed and "new heads: aux1, aux2, fc" in printed
    epochs = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    losses = [r["train_loss"] for r in epochs if r["kind"] == "epoch"]
    assert len(losses) == 2 and losses[1] < losses[0], losses
    assert out["step"] == 16
    # the run's evaluation (cached in-memory data, on-device resize to 48, batching)
    # equals the final state applied by hand to the 64 records resized by torch
    # (bilinear, align_corners=False: torchvision's Resize on tensors)
    import tensorflow_datasets as tfds

    src = tfds.data_source("cifar10", split=c.eval_split, data_dir=synthetic_cifar)
    images = torch.tensor(np.stack([np.asarray(src[i]["image"]) for i in range(64)]), dtype=torch.float32)
    labels = np.array([int(src[i]["label"]) for i in range(64)])
    x = (images.permute(0, 3, 1, 2) / 255.0 - torch.tensor(c.mean)[:, None, None]) / torch.tensor(c.std)[
        :, None, None
    ]
    x = torch.nn.functional.interpolate(x, size=(48, 48), mode="bilinear", align_corners=False)
    model = training.build_model(c, 10).clone(axis_name=None)
    logits = np.asarray(
        model.apply(
            {"params": out["state"].params, "batch_stats": out["state"].batch_stats},
            x.permute(0, 2, 3, 1).numpy(),
        ),
        np.float64,
    )
    accuracy, loss = accuracy_and_loss(logits, labels)
    assert out["eval_accuracy"] == pytest.approx(accuracy, abs=1e-9)
    assert out["eval_loss"] == pytest.approx(loss, rel=1e-4)
