"""The package layout (nn/, train/, checkpoint/, weights/): every name users import
is where the documentation says."""

import pytest


def test_public_entry_points():
    import inception_jax
    from inception_jax import checkpoint, models, train, weights
    from inception_jax.weights import convert

    assert inception_jax.create is models.create and inception_jax.list_models is models.list_models
    assert inception_jax.train_and_evaluate is train.train_and_evaluate
    assert (
        convert.from_torch is weights.from_torch and convert.convert_state_dict is weights.convert_state_dict
    )
    assert checkpoint.Checkpointer.__module__ == "inception_jax.checkpoint.manager"
    for name in (
        "load_pretrained",
        "save_pretrained",
        "load_variables",
        "preprocess",
        "features",
        "load_torch_state_dict",
        "cached_weights",
        "download_weights",
        "imagenet_classes",
    ):
        assert callable(getattr(weights, name)), name
    assert len(weights.imagenet_classes()) == 1000  # the package data moved with weights/


def test_one_merge_rule_for_fresh_heads_and_init_from():
    import jax
    import numpy as np

    from inception_jax.weights import merge_params

    target = {
        "params": {"body": {"w": np.zeros((2, 3))}, "fc": {"w": np.zeros((3, 10))}},
        "batch_stats": {"body": {"mean": np.zeros(3)}},
    }
    source = {
        "params": {"body": {"w": np.ones((2, 3))}, "fc": {"w": np.ones((3, 1000))}},
        "batch_stats": {"body": {"mean": np.full(3, 2.0)}},
    }
    merged, kept = merge_params(target, source)
    assert kept == [("params", "fc", "w")]
    np.testing.assert_array_equal(merged["params"]["body"]["w"], np.ones((2, 3)))
    np.testing.assert_array_equal(merged["params"]["fc"]["w"], np.zeros((3, 10)))
    np.testing.assert_array_equal(merged["batch_stats"]["body"]["mean"], np.full(3, 2.0))
    with pytest.raises(ValueError, match=r"params/fc/w is of shape \(3, 1000\), expected shape \(3, 10\)"):
        merge_params(target, source, may_differ=lambda key: key[1] != "fc")
    shapes = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), target)
    merged, kept = merge_params(shapes, {"params": {}})  # nothing loaded: all kept
    assert len(kept) == 3 and isinstance(merged["params"]["fc"]["w"], jax.ShapeDtypeStruct)
