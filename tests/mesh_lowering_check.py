"""``python tests/mesh_lowering_check.py MODEL SIZE`` with 8 fake CPU devices (see
test_mesh_lowering.py): the trainer's train and eval steps (``Runner``, shard_map over
all 8 devices) exported for cuda and tpu, in float32 and bfloat16, with and without
``sync_batch_norm``. Prints ``RESULT {json}``: per program, the collectives of its
StableHLO text (kind, replica groups, types where on the op's line) and the channel
count of each of the model's BatchNorms."""

import json
import os
import re
import sys

assert "xla_force_host_platform_device_count=8" in os.environ.get("XLA_FLAGS", "")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import reliability_worker  # noqa: E402,F401  (registers tiny_inception: lowers in seconds)
from jax import export  # noqa: E402

from inception_jax import config as config_lib  # noqa: E402
from inception_jax import train as training  # noqa: E402

PLATFORMS = ("cuda", "tpu")
PER_DEVICE = 2  # examples per device in a step
COLLECTIVES = ("all_gather", "all_reduce", "reduce_scatter", "all_to_all", "collective_permute")
# the op's first line: its name, then attributes (replica groups); all_gather and
# reduce_scatter end the line with their types, all_reduce's types follow its region
OP = re.compile(r'"?stablehlo\.(' + "|".join(COLLECTIVES) + r')"?(.*)')
GROUPS = re.compile(r"replica_groups = dense<(\[\[[0-9, \[\]]*\]\])>")
TYPES = re.compile(r":\s*\((tensor<[^)]*>)\)\s*->\s*(tensor<[^>]*>)")


def collectives(text: str):
    ops = []
    for line in text.splitlines():
        m = OP.search(line)
        if not m:
            continue
        groups = GROUPS.search(m.group(2))
        types = TYPES.search(m.group(2))
        ops.append(
            {
                "op": m.group(1),
                "groups": json.loads(groups.group(1)) if groups else None,
                "operand": types.group(1) if types else None,
                "result": types.group(2) if types else None,
            }
        )
    return ops


def lower(name: str, size: int, half: bool, sync: bool):
    c = config_lib.base_config()
    c.model, c.image_size, c.half_precision, c.sync_batch_norm = name, size, half, sync
    c.cpu_kernels = False  # the program ``cpu_kernels="auto"`` gives off the CPU
    c.optimizer, c.schedule = "sgd", "constant"
    config_lib.validate(c)
    model = training.build_model(c, 10)
    cfg = training.step_config(c)
    runner = training.Runner(model, cfg, "shard_map")
    assert runner.num_devices == 8
    tx = training.make_optimizer(c, optax.constant_schedule(0.1))

    def init_state():
        v = model.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)))
        return training.TrainState.create(
            apply_fn=model.apply, params=v["params"], batch_stats=v["batch_stats"], tx=tx
        )

    state = jax.eval_shape(init_state)
    rep, shard = runner.replicated, runner.sharded
    n = PER_DEVICE * runner.num_devices

    def batch(*shape, dtype):
        return jax.ShapeDtypeStruct((n, *shape), dtype, sharding=shard)

    abstract = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=rep), state
    )
    images, labels = batch(size, size, 3, dtype=jnp.uint8), batch(dtype=jnp.int32)
    key = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=rep)
    train = export.export(runner._train, platforms=PLATFORMS)(
        abstract, images, labels, batch(dtype=jnp.float32), batch(dtype=jnp.int32), key
    )
    evaluate = export.export(runner._eval, platforms=PLATFORMS)(
        abstract, images, labels, batch(dtype=jnp.bool_)
    )
    out = {}
    for step, exported in (("train", train), ("eval", evaluate)):
        text = exported.mlir_module()
        out[step] = {
            "platforms": list(exported.platforms),
            "nr_devices": exported.nr_devices,
            "bf16": "bf16" in text,
            "collectives": collectives(text),
        }
    # the channel count of each BatchNorm (its running mean's length)
    out["batch_norms"] = [
        int(leaf.shape[0])
        for path, leaf in jax.tree_util.tree_leaves_with_path(state.batch_stats)
        if path[-1].key == "mean"
    ]
    return out


def main():
    name, size = sys.argv[1], int(sys.argv[2])
    result = {"devices": jax.device_count(), "programs": {}}
    for half in (False, True):
        for sync in (True, False):
            key = f"{'bfloat16' if half else 'float32'}/{'sync' if sync else 'per_device'}"
            result["programs"][key] = lower(name, size, half, sync)
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
