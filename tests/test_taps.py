"""Named feature taps equal torchvision's ``create_feature_extractor`` and timm's
``features_only`` outputs at the same names (same random weights, random BatchNorm
statistics, eval mode)."""

import re

import jax
import numpy as np
import pytest
import torch_refs

import inception_jax
from inception_jax import models
from inception_jax.train.programs import init_variables
from inception_jax.weights import convert

torch = pytest.importorskip("torch")


def _ours(name, ref, size, names, **kw):
    variables = convert.from_torch(name, ref.state_dict(), **kw)
    model = models.create(name, **kw)
    x = np.random.RandomState(0).rand(2, size, size, 3).astype(np.float32)
    fn = jax.jit(lambda v, x: inception_jax.intermediate_features(model, v, x, layers=names))  # inside jit
    return x, fn(variables, x)


def _check(got, want):
    assert set(got) == set(want)
    for k in want:
        w = want[k].detach().numpy().transpose(0, 2, 3, 1)
        g = np.asarray(got[k])
        assert g.shape == w.shape, k
        assert torch_refs.rel_l2(g, w) < 1e-4, (k, torch_refs.rel_l2(g, w))


@pytest.mark.parametrize(
    "name,size,names",
    [
        ("googlenet", 64, ["conv1", "conv3", "inception3b", "inception4e", "inception5b.branch4"]),
        pytest.param(
            "inception_v3",
            75,
            ["Conv2d_4a_3x3", "Mixed_5d", "Mixed_6e", "Mixed_7c.branch_pool"],
            marks=pytest.mark.slow,  # 20 s
        ),
    ],
)
def test_taps_equal_torchvision_feature_extractor(name, size, names):
    from torchvision.models.feature_extraction import create_feature_extractor

    kw = {"aux_logits": False}
    ref = torch_refs.build(name, **kw).eval()
    x, got = _ours(name, ref, size, names, **kw)
    with torch.no_grad():
        want = create_feature_extractor(ref, return_nodes=names)(torch.tensor(x.transpose(0, 3, 1, 2)))
    _check(got, want)


def _timm(name, size, **kw):
    import timm

    torch.manual_seed(0)
    full = timm.create_model(name, pretrained=False, **kw)
    torch_refs.randomize_batchnorm(full)
    full.eval()
    feats = timm.create_model(name, pretrained=False, features_only=True, **kw).eval()
    # the same weights: features_only flattens nn.Sequential paths ("features.2" -> "features_2")
    full_sd = full.state_dict()
    feats.load_state_dict(
        {
            k: full_sd[k if k in full_sd else re.sub(r"^(\w+?)_(\d+)\.", r"\1.\2.", k)]
            for k in feats.state_dict()
        }
    )
    names = feats.feature_info.module_name()
    variables_kw = {"aux_logits": False} if name == "inception_v3" else {}
    x, got = _ours(name, full, size, names, **variables_kw)
    with torch.no_grad():
        outs = feats(torch.tensor(x.transpose(0, 3, 1, 2)))
    _check(got, dict(zip(names, outs)))


@pytest.mark.slow  # 20 s: inception_v3
def test_taps_equal_timm_features_only_inception_v3():
    _timm("inception_v3", 75)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["inception_v4", "inception_resnet_v2"])
def test_taps_equal_timm_features_only(name):
    # names: features.2/3/9/17/21 (v4); conv2d_2b, conv2d_4a, repeat, repeat_1, conv2d_7b (the
    # last two Sequential names are their last block's output)
    _timm(name, 75)


def test_unknown_tap_names_the_closest_layers():
    model = models.create("googlenet", aux_logits=False)
    variables = init_variables(model, jax.random.PRNGKey(0), (1, 32, 32, 3))
    with pytest.raises(ValueError, match=r"has no layer 'inception4x'; did you mean inception4"):
        inception_jax.intermediate_features(
            model, variables, np.zeros((1, 32, 32, 3), np.float32), layers=["inception4x"]
        )
