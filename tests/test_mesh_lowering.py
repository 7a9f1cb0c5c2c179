"""The accelerator programs over 8 devices, checked on a CPU machine: the trainer's
real train and eval steps (``Runner``, shard_map) over an 8-device mesh, exported for
``cuda`` and ``tpu`` with ``jax.export``, in float32 and bfloat16, carry synced
BatchNorm's collective.

test_export.py lowers every model on one device, where ``nn/norm.py`` drops the
collective (``across_devices``: a mean over one device changes nothing), so only a mesh
of several devices shows it. With ``sync_batch_norm`` each train-mode BatchNorm gathers
every device's float32 (mean, variance) in one ``all_gather`` over all 8 devices, and
the backward pass sends the gradient back with its transpose, a ``reduce_scatter``;
without it there is neither, and the per-device running statistics are averaged
(``pmean``) instead. The eval step uses running statistics: no BatchNorm collective,
only the metrics' ``psum``. The fake devices must exist before JAX starts, so the
lowering runs in a subprocess (tests/mesh_lowering_check.py)."""

import collections

import pytest
from eight_devices import run

ALL = list(range(8))


def _ops(program, kind):
    return [op for op in program["collectives"] if op["op"] == kind]


def _counts(program):
    return collections.Counter(op["op"] for op in program["collectives"])


@pytest.mark.parametrize(
    "name,size",
    # tiny_inception: one Inception module (tests/reliability_worker.py); inception_v3 at
    # 299 with its aux head, as the trainer runs it (80 s)
    [("tiny_inception", 16), pytest.param("inception_v3", 299, marks=pytest.mark.slow)],
)
def test_synced_batch_norm_collective_is_in_the_8_device_cuda_and_tpu_programs(name, size):
    out = run("mesh_lowering_check.py", name, str(size), timeout=1200)
    assert out["devices"] == 8
    for dtype in ("float32", "bfloat16"):
        sync, per_device = out["programs"][f"{dtype}/sync"], out["programs"][f"{dtype}/per_device"]
        channels = sync["batch_norms"]  # each BatchNorm's channel count
        assert channels and per_device["batch_norms"] == channels
        n_bn = len(channels)
        for lowered in (sync, per_device):
            for step in ("train", "eval"):
                program = lowered[step]
                assert program["platforms"] == ["cuda", "tpu"] and program["nr_devices"] == 8, (dtype, step)
                assert program["bf16"] == (dtype == "bfloat16"), (dtype, step)
                # every collective spans the whole mesh: the batch axis
                assert all(op["groups"] == [ALL] for op in program["collectives"]), program["collectives"]

        # synced: each BatchNorm gathers its float32 (mean, variance), also under bf16
        # compute, from all 8 devices; all_gather lowers per platform, so the program
        # holds it once in the cuda branch and once in the tpu branch of a platform switch
        gathers = _ops(sync["train"], "all_gather")
        assert sorted((op["operand"], op["result"]) for op in gathers) == sorted(
            (f"tensor<1x2x{c}xf32>", f"tensor<8x2x{c}xf32>") for c in channels * 2
        ), (dtype, len(gathers), n_bn)
        # and the backward pass sends each gradient back with its transpose
        assert len(_ops(sync["train"], "reduce_scatter")) == n_bn, (dtype, _counts(sync["train"]))
        # per-device statistics: the same checks find no BatchNorm collective; instead the
        # running statistics' pmean adds one all-reduce per mean and per variance to the
        # gradient and metric ones
        assert not _ops(per_device["train"], "all_gather") and not _ops(per_device["train"], "reduce_scatter")
        sync_reduces = len(_ops(sync["train"], "all_reduce"))
        per_device_reduces = len(_ops(per_device["train"], "all_reduce"))
        assert sync_reduces > 0 and per_device_reduces - sync_reduces == 2 * n_bn, (
            dtype,
            sync_reduces,
            per_device_reduces,
        )

        # eval: running statistics, so only the metrics' psum, the same with either setting
        for lowered in (sync, per_device):
            counts = _counts(lowered["eval"])
            assert set(counts) == {"all_reduce"}, (dtype, counts)
        assert _counts(sync["eval"]) == _counts(per_device["eval"])
