"""The accelerator programs, checked on a CPU machine: for every model the trainer's
real train step and eval step (bf16 compute, sharded with shard_map as the trainer runs
them, the plain program that ``cpu_kernels="auto"`` gives off the CPU) lower for
``cuda`` and ``tpu`` with ``jax.export``. This is the only check those paths get here."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import export
from model_sizes import SMALL_SIZES, package_models

from inception_jax import config as config_lib
from inception_jax import train as training

# v3 at 299: its aux head, on in the trainer, needs it (lowering only, no compile)
SIZES = {**SMALL_SIZES, "inception_v3": 299}
BATCH, EVAL_BATCH = 2, 2


def test_every_registered_model_is_covered():
    assert sorted(SIZES) == package_models()


def _abstract(tree, sharding):
    return jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding), tree
    )


@pytest.mark.parametrize("name", sorted(SIZES))
def test_train_and_eval_steps_lower_for_cuda_and_tpu_in_bf16(name):
    c = config_lib.base_config()
    c.model, c.image_size, c.half_precision, c.cpu_kernels = name, SIZES[name], True, False
    c.optimizer, c.schedule = "sgd", "constant"
    model = training.build_model(c, 10)
    assert model.dtype == jnp.bfloat16 and model.axis_name == training.AXIS
    cfg = training.step_config(c)
    assert not cfg.cpu_kernels
    runner = training.Runner(model, cfg, "shard_map")
    tx = training.make_optimizer(c, optax.constant_schedule(0.1))

    def init_state():
        v = model.init(jax.random.PRNGKey(0), jnp.zeros((1, SIZES[name], SIZES[name], 3)))
        return training.TrainState.create(
            apply_fn=model.apply, params=v["params"], batch_stats=v["batch_stats"], tx=tx
        )

    state = jax.eval_shape(init_state)
    rep, shard = runner.replicated, runner.sharded
    size = SIZES[name]

    def batch(n, *shape, dtype):
        return jax.ShapeDtypeStruct((n, *shape), dtype, sharding=shard)

    images, eval_images = (batch(n, size, size, 3, dtype=jnp.uint8) for n in (BATCH, EVAL_BATCH))
    labels, ids, eval_labels = (
        batch(BATCH, dtype=jnp.int32),
        batch(BATCH, dtype=jnp.int32),
        batch(EVAL_BATCH, dtype=jnp.int32),
    )
    weights, mask = batch(BATCH, dtype=jnp.float32), batch(EVAL_BATCH, dtype=jnp.bool_)
    key = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=rep)
    abstract_state = _abstract(state, rep)
    # one multi-platform artifact: traced once, lowered for each platform
    platforms = ("cuda", "tpu")
    train = export.export(runner._train, platforms=platforms)(
        abstract_state, images, labels, weights, ids, key
    )
    evaluate = export.export(runner._eval, platforms=platforms)(
        abstract_state, eval_images, eval_labels, mask
    )
    assert train.platforms == platforms and evaluate.platforms == platforms
    text = train.mlir_module()
    # the bf16 compute and the cross-device collectives are in the exported program
    assert "bf16" in text and "convolution" in text
    assert "all_reduce" in text or "all_gather" in text
    out_state, out_metrics = train.out_tree.unflatten(train.out_avals)
    assert [a.shape for a in jax.tree_util.tree_leaves(out_state)] == [
        np.shape(a) for a in jax.tree_util.tree_leaves(state)
    ]
    assert sorted(out_metrics) == ["correct", "count", "loss_sum"]
