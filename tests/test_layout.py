"""The package layout (nn/, models/, backends/, train/, checkpoint/, weights/): which
room may import which, and every name users import is where the documentation says."""

import ast
import os

import pytest

import inception_jax

PACKAGE = os.path.dirname(os.path.abspath(inception_jax.__file__))
# Models know nothing of data, training, checkpoints, weight files or the platform;
# the platform backends plug into the blocks, never the other way round.
MAY_NOT_IMPORT = {
    "models": ("train", "data", "weights", "checkpoint", "backends"),
    "nn": ("train", "data", "weights", "checkpoint", "backends"),
    "backends": ("train", "data", "weights", "checkpoint", "models"),
}


def _imported_modules(path: str, module: str):
    """``(line, dotted name)`` of every import in the file, at any depth (function-level
    imports and ``importlib.import_module("...")`` included); ``from a import b`` gives
    both ``a`` and ``a.b``, and relative imports are made absolute."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            name = getattr(node.func, "attr", getattr(node.func, "id", None))
            if name == "import_module" and isinstance(node.args[0].value, str):
                yield node.lineno, node.args[0].value


def _violations(room: str, forbidden) -> list:
    out = []
    for dirpath, _, files in os.walk(os.path.join(PACKAGE, room)):
        for f in sorted(files):
            if not f.endswith(".py"):
                continue
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, os.path.dirname(PACKAGE))
            module = rel[: -len(".py")].replace(os.sep, ".").removesuffix(".__init__")
            for line, name in _imported_modules(path, module):
                parts = name.split(".")
                if parts[0] == "inception_jax" and len(parts) > 1 and parts[1] in forbidden:
                    out.append(f"{rel}:{line} imports {name}")
    return sorted(set(out))


@pytest.mark.parametrize("room", sorted(MAY_NOT_IMPORT))
def test_imports_run_downwards_only(room):
    assert os.path.isdir(os.path.join(PACKAGE, room)), room
    assert _violations(room, MAY_NOT_IMPORT[room]) == []


def test_the_import_rules_see_function_level_and_relative_imports(tmp_path):
    # the rule's parser against hand-written imports: what it must catch and what not
    path = tmp_path / "norm.py"
    path.write_text(
        "import jax\n"
        "from . import dispatch\n"
        "from ..backends import cpu\n"
        "def f():\n"
        "    from inception_jax.train import programs\n"
        "    return importlib.import_module('inception_jax.data.source')\n"
    )
    found = sorted(_imported_modules(str(path), "inception_jax.nn.norm"))
    assert found == [
        (1, "jax"),
        (2, "inception_jax.nn"),
        (2, "inception_jax.nn.dispatch"),
        (3, "inception_jax.backends"),
        (3, "inception_jax.backends.cpu"),
        (5, "inception_jax.train"),
        (5, "inception_jax.train.programs"),
        (6, "inception_jax.data.source"),
    ]


def test_public_entry_points():
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
        "pooled_features",
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
