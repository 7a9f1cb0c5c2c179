"""Every model: published parameter counts, shapes, modes, dtypes, bad input."""

import jax
import jax.numpy as jnp
import pytest

import inception_jax
from inception_jax import models
from inception_jax.models.stats import count_macs, count_params

# Published / reference-implementation counts (torchvision, timm, Cadene, design doc).
PARAM_COUNTS = {
    ("googlenet", False): 6_624_904,
    ("googlenet", True): 13_004_888,
    ("inception_v3", False): 23_834_568,
    ("inception_v3", True): 27_161_264,
    ("inception_v4", None): 42_679_816,
    ("inception_resnet_v2", None): 55_843_464,
    ("bn_inception", None): 11_295_240,
    ("inception_cifar", None): 327_602,
}


def _init_shapes(model, size, batch=1):
    x = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), x)


def _create(name, aux):
    return models.create(name) if aux is None else models.create(name, aux_logits=aux)


@pytest.mark.parametrize("name,aux", sorted(PARAM_COUNTS, key=str))
def test_parameter_counts_match_the_references(name, aux):
    model = _create(name, aux)
    v = _init_shapes(model, models.get_info(name).default_input_size)
    assert count_params(v["params"]) == PARAM_COUNTS[(name, aux)]


def test_googlenet_paper_counts_match_the_design_doc_code():
    torch = pytest.importorskip("torch")
    from design_doc_torch import GoogLeNet

    for aux in (True, False):
        ref = sum(p.numel() for p in GoogLeNet(aux_logits=aux).parameters())
        assert count_params(_init_shapes(_create("googlenet_paper", aux), 224)["params"]) == ref
    del torch


@pytest.mark.parametrize(
    "name,expected_gmacs",
    [("googlenet", 1.50), ("inception_v3", 5.71), ("inception_v4", 12.25), ("inception_resnet_v2", 13.16)],
)
def test_multiply_adds_match_published_figures(name, expected_gmacs):
    # torchvision documents 1.50 / 5.71 GFLOPS (multiply-adds) for googlenet / inception_v3;
    # timm's tables give 12.28 / 13.18 G for v4 / IRv2 including BN and pools, of which
    # conv + linear are the figures here.
    info = models.get_info(name)
    macs = count_macs(models.create(name), info.default_input_size)
    assert macs / 1e9 == pytest.approx(expected_gmacs, abs=0.01)


def test_list_models_and_unknown_name():
    names = models.list_models()
    for expected in (
        "googlenet",
        "googlenet_paper",
        "googlenet_cifar",
        "bn_inception",
        "inception_v3",
        "inception_v4",
        "inception_resnet_v2",
        "inception_cifar",
    ):
        assert expected in names
    with pytest.raises(ValueError) as e:
        models.create("inception_v9")
    msg = str(e.value)
    assert "inception_v9" in msg and "googlenet" in msg and "inception_resnet_v2" in msg
    assert "\n" not in msg


def test_bad_options_are_one_line_value_errors():
    with pytest.raises(ValueError, match="unknown option.*dropuot"):
        models.create("googlenet", dropuot=0.1)
    with pytest.raises(ValueError, match="inception_v4: this model has no auxiliary heads"):
        models.create("inception_v4", aux_logits=True)
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        models.create("googlenet", num_classes=0)


# (name, input size, expected eval feature map -> logits) at small inputs; heavy models
# are checked by abstract evaluation only (their real forward runs in test_convert).
SMALL = [
    ("googlenet", 32),
    ("googlenet_paper", 32),
    ("googlenet_cifar", 32),
    ("inception_cifar", 32),
    ("bn_inception", 32),
    ("inception_v3", 75),
    ("inception_v4", 75),
    ("inception_resnet_v2", 75),
]


@pytest.mark.parametrize("name,size", SMALL)
def test_output_shapes_in_eval_and_train_mode(name, size):
    info = models.get_info(name)
    model = models.create(name, num_classes=7)
    v = _init_shapes(model, max(size, info.min_aux_input_size or 0))
    x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
    assert jax.eval_shape(lambda v, x: model.apply(v, x), v, x).shape == (2, 7)
    train_size = max(size, info.min_aux_input_size or 0)
    xt = jax.ShapeDtypeStruct((2, train_size, train_size, 3), jnp.float32)
    out, upd = jax.eval_shape(
        lambda v, x: model.apply(
            v, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.PRNGKey(1)}
        ),
        v,
        xt,
    )
    expected_outputs = 1 + len(info.aux_prefixes) if info.aux_default else 1
    if expected_outputs == 1:
        assert out.shape == (2, 7)
    else:
        assert isinstance(out, tuple) and len(out) == expected_outputs
        assert all(o.shape == (2, 7) for o in out)
    assert jax.tree_util.tree_structure(upd["batch_stats"]) == jax.tree_util.tree_structure(v["batch_stats"])


def test_googlenet_cifar_aux_heads_are_optional():
    model = models.create("googlenet_cifar", aux_logits=True)
    v = _init_shapes(model, 32)
    assert {"aux1", "aux2"} <= set(v["params"])
    x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    out, _ = jax.eval_shape(
        lambda v, x: model.apply(
            v, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.PRNGKey(1)}
        ),
        v,
        x,
    )
    assert [o.shape for o in out] == [(2, 10)] * 3
    assert jax.eval_shape(model.apply, v, x).shape == (2, 10)
    assert "aux1" not in _init_shapes(models.create("googlenet_cifar"), 32)["params"]


@pytest.mark.parametrize(
    "name,bad_shape,pattern",
    [
        ("googlenet", (1, 14, 14, 3), r"googlenet: expected images of at least 15x15, got 14x14"),
        ("inception_v3", (1, 74, 74, 3), r"inception_v3: expected images of at least 299x299, got 74x74"),
        ("inception_v4", (1, 299, 299, 1), r"inception_v4: expected 3 channels"),
        ("googlenet", (1, 3, 224, 224), r"NCHW"),
        ("inception_cifar", (32, 32, 3), r"inception_cifar: expected a 4-D NHWC image batch"),
    ],
)
def test_bad_input_is_a_one_line_value_error_before_tracing(name, bad_shape, pattern):
    model = models.create(name)
    x = jax.ShapeDtypeStruct(bad_shape, jnp.float32)
    with pytest.raises(ValueError, match=pattern) as e:
        jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), x)
    assert "\n" not in str(e.value) and str(bad_shape[1]) in str(e.value)


def test_inception_v3_aux_needs_299_like_torchvision():
    model = models.create("inception_v3", aux_logits=False)
    v = _init_shapes(model, 75)
    x = jax.ShapeDtypeStruct((2, 75, 75, 3), jnp.float32)
    out, _ = jax.eval_shape(
        lambda v, x: model.apply(
            v, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.PRNGKey(0)}
        ),
        v,
        x,
    )
    assert out.shape == (2, 1000)
    with_aux = models.create("inception_v3")
    with pytest.raises(ValueError, match="at least 299x299, got 75x75"):
        jax.eval_shape(lambda x: with_aux.init(jax.random.PRNGKey(0), x), x)


def test_package_exports_create():
    assert inception_jax.create is models.create
    assert inception_jax.list_models() == models.list_models()
