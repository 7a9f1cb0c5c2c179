"""Building blocks against PyTorch modules and the design doc's hand-computed numbers."""

import functools
import math

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch_refs import rel_l2  # noqa: E402

from inception_jax import nn as layers
from inception_jax.backends import cpu_kernels  # noqa: E402
from inception_jax.weights import convert_state_dict  # noqa: E402


def nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


def rand(*shape, seed=0):
    return np.random.RandomState(seed).randn(*shape).astype(np.float32)


@pytest.mark.parametrize(
    "size,k,s,p,ceil",
    [
        (7, 3, 2, 0, True),
        (8, 3, 2, 0, True),
        (14, 3, 2, 0, True),
        (13, 3, 2, 1, True),
        (112, 3, 2, 0, True),
        (7, 2, 2, 0, True),
        (9, 3, 1, 1, True),
        (10, 3, 2, 1, False),
        (11, 2, 2, 0, False),
        (15, 3, 3, 1, True),
    ],
)
def test_max_pool_matches_torch(size, k, s, p, ceil):
    x = rand(2, size, size + 1, 3)
    ref = nhwc(F.max_pool2d(nchw(x), k, s, p, ceil_mode=ceil))
    out = np.asarray(layers.max_pool(jnp.asarray(x), k, s, p, ceil_mode=ceil))
    assert out.shape == ref.shape
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize(
    "size,k,s,p,ceil",
    [
        (8, 2, 2, 0, False),
        (9, 3, 1, 1, True),
        (13, 3, 2, 1, True),
        (14, 3, 2, 0, True),
        (7, 3, 3, 1, True),
        (11, 2, 2, 0, False),
        (10, 3, 2, 1, False),
    ],
)
@pytest.mark.parametrize("kernels", [False, True], ids=["plain", "cpu_kernels"])
def test_max_pool_gradient_equals_torch_including_ties(size, k, s, p, ceil, kernels):
    # post-ReLU-like input: many exact ties (zeros and repeated small integers); torch
    # sends a tied window's gradient to its first maximum, so must we
    x = np.maximum(np.random.RandomState(1).randint(-3, 3, (2, size, size + 1, 3)), 0).astype(np.float32)
    xt = nchw(x).requires_grad_(True)
    out = F.max_pool2d(xt, k, s, p, ceil_mode=ceil)
    g = rand(*out.shape, seed=2)
    out.backward(torch.from_numpy(g))
    with cpu_kernels(kernels):
        out, vjp = jax.vjp(lambda v: layers.max_pool(v, k, s, p, ceil_mode=ceil), jnp.asarray(x))
        (dx,) = vjp(jnp.asarray(g.transpose(0, 2, 3, 1)))
    np.testing.assert_array_equal(np.asarray(out), nhwc(F.max_pool2d(nchw(x), k, s, p, ceil_mode=ceil)))
    np.testing.assert_allclose(np.asarray(dx), nhwc(xt.grad), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "size,k,s,p,ceil,include",
    [
        (7, 3, 1, 1, False, True),
        (7, 3, 1, 1, False, False),
        (8, 3, 2, 1, True, True),
        (8, 3, 2, 1, True, False),
        (17, 5, 3, 0, False, True),
        (9, 3, 2, 1, True, True),
        (7, 7, 1, 0, True, True),
        (10, 4, 3, 2, True, False),
    ],
)
def test_avg_pool_matches_torch(size, k, s, p, ceil, include):
    x = rand(2, size, size, 4)
    ref = nhwc(F.avg_pool2d(nchw(x), k, s, p, ceil_mode=ceil, count_include_pad=include))
    out = np.asarray(layers.avg_pool(jnp.asarray(x), k, s, p, ceil, include))
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "size,out", [((14, 14), 4), ((7, 9), 4), ((5, 5), 3), ((8, 8), 4), ((9, 6), 1), ((3, 3), 4)]
)
def test_adaptive_avg_pool_matches_torch(size, out):
    x = rand(2, *size, 5)
    ref = nhwc(F.adaptive_avg_pool2d(nchw(x), out))
    got = np.asarray(layers.adaptive_avg_pool(jnp.asarray(x), out))
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)


def test_pool_too_small_input_is_a_clear_error():
    with pytest.raises(ValueError, match="does not fit an input of size 2"):
        layers.max_pool(jnp.zeros((1, 2, 2, 1)), 3, 2)


def _torch_bn(c, eps):
    bn = torch.nn.BatchNorm2d(c, eps=eps)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(c) + 0.5)
        bn.bias.copy_(torch.randn(c))
        bn.running_mean.copy_(torch.randn(c))
        bn.running_var.copy_(torch.rand(c) + 0.5)
    return bn


def test_batchnorm_train_and_eval_match_torch_including_running_stats():
    torch.manual_seed(0)
    bn_t = _torch_bn(6, 1e-3)
    v = convert_state_dict(
        {f"bn.{k}": t for k, t in bn_t.state_dict().items()},
        jax.eval_shape(lambda: _BNWrap().init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 6)))),
    )
    x = rand(3, 5, 4, 6) * 3 + 1
    # eval: running statistics
    ref_eval = nhwc(bn_t.eval()(nchw(x)))
    np.testing.assert_allclose(_BNWrap().apply(v, x), ref_eval, rtol=1e-5, atol=1e-5)
    # train: batch statistics, and the running stats move with torch's rule
    # (momentum 0.1, unbiased variance)
    ref_train = nhwc(bn_t.train()(nchw(x)))
    out, upd = _BNWrap().apply(v, x, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(out, ref_train, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(upd["batch_stats"]["bn"]["mean"], bn_t.running_mean.numpy(), rtol=1e-5)
    np.testing.assert_allclose(upd["batch_stats"]["bn"]["var"], bn_t.running_var.numpy(), rtol=1e-5)


class _BNWrap(flax.linen.Module):
    @flax.linen.compact
    def __call__(self, x, train=False):
        return layers.BatchNorm(name="bn")(x, train)


def _convert(module, torch_module, x_shape, prefix=""):
    template = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), jnp.zeros(x_shape)))
    sd = {prefix + k: v for k, v in torch_module.state_dict().items()}
    return convert_state_dict(sd, template)


def _randomize(torch_module, seed=0):
    from torch_refs import randomize_batchnorm

    randomize_batchnorm(torch_module, seed)
    return torch_module.eval()


def test_basic_conv_matches_design_doc_basicconv2d():
    from design_doc_torch import BasicConv2d

    torch.manual_seed(0)
    ref_m = _randomize(BasicConv2d(5, 7, kernel_size=(1, 3), stride=2, padding=(0, 1)))
    ours = layers.BasicConv(7, (1, 3), 2, (0, 1))
    v = _convert(ours, ref_m, (1, 9, 9, 5))
    x = rand(2, 9, 9, 5)
    np.testing.assert_allclose(ours.apply(v, x), nhwc(ref_m(nchw(x))), rtol=1e-5, atol=1e-5)


def test_inception_module_matches_design_doc_and_torchvision():
    from design_doc_torch import InceptionModule
    from torchvision.models.googlenet import Inception as TVInception

    torch.manual_seed(0)
    x = rand(2, 9, 9, 24)
    cfg = (24, 8, 6, 10, 4, 6, 5)
    for ref_m, kernel in ((InceptionModule(*cfg), 5), (TVInception(*cfg), 3)):
        ref_m = _randomize(ref_m)
        ours = layers.InceptionModule(*cfg, branch3_kernel=kernel)
        v = _convert(ours, ref_m, x.shape)
        out = np.asarray(ours.apply(v, x))
        assert out.shape == (2, 9, 9, 8 + 10 + 6 + 5)
        assert rel_l2(out, nhwc(ref_m(nchw(x)))) < 1e-5


def _conv_weights(variables):
    flat = flax.traverse_util.flatten_dict(variables["params"])
    return {"/".join(k[:-1]): math.prod(v.shape) for k, v in flat.items() if k[-1] == "kernel"}


def test_design_doc_inception_3a_worked_numbers():
    # The design doc: inception 3a (192 -> 64, 96->128, 16->32, pool 32) has 163,328
    # conv weights; a 5x5 conv with 32 filters on 192 channels costs 153,600 weights
    # without the 1x1 reduction and 3,072 + 12,800 = 15,872 with it.
    module = layers.InceptionModule(192, 64, 96, 128, 16, 32, 32)
    x = jnp.zeros((1, 28, 28, 192))
    v = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), x))
    weights = _conv_weights(v)
    assert sum(weights.values()) == 163_328
    assert weights["branch3_0/conv"] + weights["branch3_1/conv"] == 15_872
    naive = layers.NaiveInceptionModule(192, 64, 128, 32)
    vn = jax.eval_shape(lambda: naive.init(jax.random.PRNGKey(0), x))
    assert _conv_weights(vn)["branch3/conv"] == 153_600
    out = jax.eval_shape(module.apply, v, x)
    assert out.shape == (1, 28, 28, 256)
    # The naive module passes the pooled input through: 64 + 128 + 32 + 192 channels.
    assert jax.eval_shape(naive.apply, vn, x).shape == (1, 28, 28, 416)


def test_in_channels_mismatch_names_the_module():
    module = layers.InceptionModule(192, 64, 96, 128, 16, 32, 32)
    with pytest.raises(ValueError, match="InceptionModule: expected an input with 192 channels"):
        module.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 100)))


def test_factorized_and_asymmetric_convs_save_the_weights_the_papers_say():
    c, f = 64, 96
    x = jnp.zeros((1, 10, 10, c))
    fact = layers.FactorizedConv5x5(f, f)
    w = _conv_weights(jax.eval_shape(lambda: fact.init(jax.random.PRNGKey(0), x)))
    assert sum(w.values()) == 9 * c * f + 9 * f * f  # vs 25 * c * f for one 5x5
    assert fact.apply(fact.init(jax.random.PRNGKey(0), x), x).shape == (1, 10, 10, f)
    asym = layers.AsymmetricConv(f, 7)
    v = asym.init(jax.random.PRNGKey(0), x)
    kernels = flax.traverse_util.flatten_dict(v["params"])
    assert kernels[("conv1", "conv", "kernel")].shape == (1, 7, c, f)
    assert kernels[("conv2", "conv", "kernel")].shape == (7, 1, f, f)
    assert asym.apply(v, x).shape == (1, 10, 10, f)


def test_grid_reduction_matches_torchvision_inceptionb():
    from torchvision.models.inception import InceptionB

    torch.manual_seed(0)
    ref_m = _randomize(InceptionB(16))
    ours = layers.GridReduction(384, 64, 96)
    x = rand(2, 11, 11, 16)
    v = _convert(ours, ref_m, x.shape)
    out = np.asarray(ours.apply(v, x))
    assert out.shape == (2, 5, 5, 384 + 96 + 16)
    assert rel_l2(out, nhwc(ref_m(nchw(x)))) < 1e-5


def test_residual_block_matches_timm_block35_scaling():
    from timm.models.inception_resnet_v2 import Block35

    from inception_jax.models.inception_resnet_v2 import BLOCK35

    torch.manual_seed(0)
    ref_m = _randomize(Block35(scale=0.17))  # standalone timm block: BatchNorm eps 1e-5
    conv = functools.partial(layers.BasicConv, bn_eps=1e-5)
    ours = layers.ResidualInceptionBlock(BLOCK35, 0.17, conv=conv)
    x = rand(1, 5, 5, 320)
    v = _convert(ours, ref_m, x.shape)
    assert rel_l2(ours.apply(v, x), nhwc(ref_m(nchw(x)))) < 1e-5
    # scale really scales the residual: relu(x + s * r) with r the unscaled branch
    unscaled = layers.ResidualInceptionBlock(BLOCK35, 1.0, activate=False, conv=conv)
    r = np.asarray(unscaled.apply(v, x)) - x
    np.testing.assert_allclose(ours.apply(v, x), np.maximum(x + 0.17 * r, 0), rtol=1e-4, atol=1e-4)


def test_depthwise_separable_matches_design_doc():
    from design_doc_torch import DepthwiseSeparableConv

    torch.manual_seed(0)
    ref_m = DepthwiseSeparableConv(6, 10)
    ours = layers.DepthwiseSeparableConv(10)
    x = rand(2, 7, 7, 6)
    v = _convert(ours, ref_m, x.shape)
    assert rel_l2(ours.apply(v, x), nhwc(ref_m(nchw(x)))) < 1e-5
    assert sum(math.prod(p.shape) for p in jax.tree_util.tree_leaves(v)) == 6 * 9 + 6 + 6 * 10 + 10


def test_aux_classifier_matches_torchvision_googlenet_aux():
    from torchvision.models.googlenet import InceptionAux

    torch.manual_seed(0)
    ref_m = _randomize(InceptionAux(32, 7))
    ours = layers.AuxiliaryClassifier(7)
    x = rand(2, 14, 14, 32)
    v = _convert(ours, ref_m, x.shape)
    assert rel_l2(ours.apply(v, x), ref_m(nchw(x)).detach().numpy()) < 1e-5


def test_global_avg_pool_is_the_spatial_mean():
    x = rand(2, 3, 5, 4)
    chex.assert_trees_all_close(layers.global_avg_pool(jnp.asarray(x)), x.mean(axis=(1, 2)), rtol=1e-6)


@pytest.mark.parametrize(
    "cin,cout,k,stride,pad,size",
    [(3, 8, 3, 1, 1, 9), (6, 5, 1, 1, 0, 7), (4, 6, 3, 2, 0, 11), (5, 7, 5, 1, 2, 8), (4, 4, 3, 2, 1, 10)],
)
@pytest.mark.parametrize("kernels", [False, True], ids=["plain", "cpu_kernels"])
def test_basic_conv_train_gradients_equal_torch(cin, cout, k, stride, pad, size, kernels):
    # conv -> BatchNorm (batch statistics) -> ReLU, differentiated against torch's
    # autograd: JAX's autodiff, and the CPU backend (GEMM filter gradient / 1x1 as dot,
    # closed-form BatchNorm gradient)
    x = rand(3, size, size + 1, cin)
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(cin, cout, k, stride, pad, bias=False)
    bn = torch.nn.BatchNorm2d(cout, eps=1e-3)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    xt = nchw(x).requires_grad_(True)
    yt = torch.relu(bn(conv(xt)))
    g = rand(*yt.shape, seed=3)
    yt.backward(torch.from_numpy(g))
    module = layers.BasicConv(cout, k, stride, pad)
    variables = convert_state_dict(
        {
            "conv.weight": conv.weight,
            "bn.weight": bn.weight,
            "bn.bias": bn.bias,
            "bn.running_mean": bn.running_mean,
            "bn.running_var": bn.running_var,
        },
        module.init(jax.random.PRNGKey(0), jnp.asarray(x)),
        "BasicConv",
    )

    def f(params, xin):
        return module.apply(
            {"params": params, "batch_stats": variables["batch_stats"]},
            xin,
            train=True,
            mutable=["batch_stats"],
        )[0]

    with cpu_kernels(kernels):
        y, vjp = jax.vjp(f, variables["params"], jnp.asarray(x))
        dparams, dx = vjp(jnp.asarray(g.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(np.asarray(y), nhwc(yt), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(dx), nhwc(xt.grad), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(dparams["conv"]["kernel"]),
        conv.weight.grad.numpy().transpose(2, 3, 1, 0),
        rtol=1e-4,
        atol=1e-4,
    )
    np.testing.assert_allclose(
        np.asarray(dparams["bn"]["scale"]), bn.weight.grad.numpy(), rtol=1e-4, atol=1e-4
    )
    np.testing.assert_allclose(np.asarray(dparams["bn"]["bias"]), bn.bias.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_basic_conv_draws_flax_default_kernel_and_still_checks_shapes():
    # BasicConv gives its conv a shape-only initializer outside init (Flax's shape check
    # on apply then traces no random draw): init must still draw exactly what a plain
    # flax.linen.Conv with its default initializer draws, and apply must still reject
    # a kernel of the wrong shape.
    class PlainConv(flax.linen.Module):
        @flax.linen.compact
        def __call__(self, x):
            return flax.linen.Conv(4, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, name="conv")(x)

    x = jnp.ones((2, 6, 6, 3))
    conv = layers.BasicConv(4, 3, padding=1)
    variables = conv.init(jax.random.PRNGKey(7), x)
    expected = PlainConv().init(jax.random.PRNGKey(7), x)["params"]["conv"]["kernel"]
    np.testing.assert_array_equal(variables["params"]["conv"]["kernel"], expected)
    assert float(jnp.std(expected)) > 0.05  # a real draw, not zeros
    bad = jax.tree_util.tree_map(lambda v: v, variables)
    bad["params"]["conv"]["kernel"] = jnp.zeros((3, 3, 3, 5))
    with pytest.raises(flax.errors.ScopeParamShapeError):
        conv.apply(bad, x)


def test_batch_statistics_over_a_one_device_axis_need_no_collective():
    # the statistics of a mapped axis of one device are the local ones: no all_gather
    # for XLA to compile, and the numbers of a plain two-pass mean and variance
    from jax.sharding import Mesh
    from jax.sharding import PartitionSpec as P

    x = np.random.RandomState(0).randn(4, 5, 5, 6).astype(np.float32) * 3 + 1
    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    stats = jax.jit(
        jax.shard_map(
            lambda v: layers.batch_statistics(v, "data"), mesh=mesh, in_specs=P("data"), out_specs=P("data")
        )
    )
    assert "all_gather" not in stats.lower(x).as_text()
    mean, var = stats(x)
    x64 = x.astype(np.float64).reshape(-1, 6)
    np.testing.assert_allclose(mean, x64.mean(0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(var, ((x64 - x64.mean(0)) ** 2).mean(0), rtol=1e-5)
