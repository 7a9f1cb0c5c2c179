"""Parity with the PyTorch references: random weights *and* random BatchNorm
statistics, converted by name, same logits (1e-4 relative L2, float32, CPU)."""

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch_refs as R  # noqa: E402

from inception_jax import models  # noqa: E402
from inception_jax.weights import from_torch, torch_key_to_path  # noqa: E402

TOL = 1e-4


def _input(size, batch=2, seed=0):
    return np.random.RandomState(seed).randn(batch, size, size, 3).astype(np.float32)


# One call per model; sizes are the smallest that exercise every layer (bn_inception's
# reference has a fixed 7x7 final pool, so it needs 224).
@pytest.mark.parametrize(
    "name,size", [("googlenet", 64), ("bn_inception", 224), ("inception_v4", 96), ("inception_resnet_v2", 96)]
)
def test_eval_logits_match_reference(name, size):
    ref_model = R.build(name)
    variables = from_torch(name, ref_model.state_dict())
    model = models.create(name)
    x = _input(size)
    out = jax.jit(model.apply)(variables, x)
    assert R.rel_l2(out, R.run(ref_model, x)) < TOL


def _flat_stats(batch_stats):
    return {
        "/".join(k): np.asarray(v)
        for k, v in __import__("flax").traverse_util.flatten_dict(batch_stats).items()
    }


@pytest.mark.parametrize("name,size", [("googlenet", 64), ("inception_v3", 299)])
def test_train_and_eval_mode_match_reference_with_aux_and_bn_updates(name, size):
    ref_model = R.build(name, aux_logits=True)
    sd = {k: v.clone() for k, v in ref_model.state_dict().items()}
    variables = from_torch(name, sd)
    # dropout off on both sides: train-mode outputs are then deterministic
    dropout_kw = {"dropout": 0.0}
    if name == "googlenet":
        dropout_kw["dropout_aux"] = 0.0
    model = models.create(name, aux_logits=True, **dropout_kw)
    x = _input(size, batch=4)

    eval_out = jax.jit(model.apply)(variables, x)
    assert R.rel_l2(eval_out, R.run(ref_model, x, train=False)) < TOL

    out, updated = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(variables, x)
    ref_out = R.run(ref_model, x, train=True)
    if name == "googlenet":  # torchvision returns (logits, aux2, aux1); ours (logits, aux1, aux2)
        ref_out = (ref_out[0], ref_out[2], ref_out[1])
    assert len(out) == len(ref_out)
    for ours, theirs in zip(out, ref_out):
        assert R.rel_l2(ours, theirs) < TOL
    # running statistics after one train-mode call equal torch's (momentum 0.1, unbiased var)
    after = from_torch(name, ref_model.state_dict())["batch_stats"]
    ref_stats, our_stats = _flat_stats(after), _flat_stats(updated["batch_stats"])
    assert set(ref_stats) == set(our_stats)
    for key in ref_stats:
        assert R.rel_l2(our_stats[key], ref_stats[key]) < TOL, key
    before = _flat_stats(variables["batch_stats"])
    assert any(not np.allclose(before[k], ref_stats[k]) for k in ref_stats)


def test_design_doc_models_match_their_pytorch_code():
    from design_doc_torch import GoogLeNet, InceptionCIFAR

    torch.manual_seed(0)
    for name, ref_model, size, kw in (
        ("inception_cifar", InceptionCIFAR(), 32, {"dropout": 0.0}),
        (
            "googlenet_paper",
            GoogLeNet(num_classes=10),
            48,
            {"dropout": 0.0, "dropout_aux": 0.0, "num_classes": 10},
        ),
    ):
        R.randomize_batchnorm(ref_model)
        variables = from_torch(name, ref_model.state_dict(), **kw)
        model = models.create(name, **kw)
        x = _input(size)
        assert R.rel_l2(jax.jit(model.apply)(variables, x), R.run(ref_model, x)) < TOL
        if name == "googlenet_paper":
            out, _ = jax.jit(
                lambda v, x, model=model: model.apply(v, x, train=True, mutable=["batch_stats"])
            )(variables, x)
            for ours, theirs in zip(out, R.run(ref_model, x, train=True)):
                assert R.rel_l2(ours, theirs) < TOL


def test_torch_key_mapping():
    assert torch_key_to_path("inception3a.branch2.0.conv.weight") == (
        ("inception3a", "branch2_0", "conv"),
        "weight",
    )
    assert torch_key_to_path("repeat_1.12.conv2d.bias") == (("repeat_1_12", "conv2d"), "bias")
    assert torch_key_to_path("features.4.branch1.3.bn.running_var") == (
        ("features_4", "branch1_3", "bn"),
        "running_var",
    )


@pytest.fixture(scope="module")
def googlenet_sd():
    return {k: v.numpy() for k, v in R.build("googlenet", aux_logits=False).state_dict().items()}


def test_numpy_state_dict_and_inferred_options(googlenet_sd):
    variables = from_torch("googlenet", googlenet_sd)  # aux_logits inferred: no aux keys
    assert "aux1" not in variables["params"]
    np.testing.assert_array_equal(variables["params"]["fc"]["kernel"], googlenet_sd["fc.weight"].T)
    np.testing.assert_array_equal(
        variables["params"]["conv1"]["conv"]["kernel"],
        googlenet_sd["conv1.conv.weight"].transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(
        variables["batch_stats"]["conv1"]["bn"]["var"], googlenet_sd["conv1.bn.running_var"]
    )
    small = dict(
        googlenet_sd, **{"fc.weight": googlenet_sd["fc.weight"][:10], "fc.bias": googlenet_sd["fc.bias"][:10]}
    )
    assert from_torch("googlenet", small)["params"]["fc"]["kernel"].shape == (1024, 10)


def test_missing_unexpected_and_mismatched_keys_are_named(googlenet_sd):
    sd = dict(googlenet_sd)
    del sd["inception4b.branch3.1.conv.weight"]
    with pytest.raises(ValueError, match=r"missing variable\(s\): inception4b/branch3_1/conv/kernel"):
        from_torch("googlenet", sd)
    sd = dict(googlenet_sd, **{"extra.layer.weight": np.zeros(3)})
    with pytest.raises(ValueError, match=r"unexpected key\(s\): extra.layer.weight"):
        from_torch("googlenet", sd)
    sd = dict(googlenet_sd)
    sd["conv2.conv.weight"] = np.zeros((64, 32, 1, 1), np.float32)
    with pytest.raises(ValueError, match=r"shape mismatch.*conv2.conv.weight \(64, 32, 1, 1\)"):
        from_torch("googlenet", sd)
    with pytest.raises(ValueError, match="state_dict does not match"):
        from_torch("inception_v3", googlenet_sd)
    with pytest.raises(ValueError, match="expected a state_dict"):
        from_torch("googlenet", [1, 2])
