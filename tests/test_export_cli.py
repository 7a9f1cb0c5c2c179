"""``python -m inception_jax.export``: the artifact it writes (cpu, cuda, tpu; symbolic
batch) runs on the CPU and equals torchvision's model with the same weights."""

import numpy as np
import pytest
import torch_refs
from cli import run_module


def _cli(*args):
    return run_module("inception_jax.export", *args)


@pytest.mark.slow  # 35 s: export, then three compiles
def test_exported_googlenet_equals_torchvision(tmp_path):
    torch = pytest.importorskip("torch")
    from jax import export

    # torchvision's googlenet weights are used with transform_input=True (load_pretrained sets it)
    ref = torch_refs.build("googlenet", aux_logits=False, transform_input=True).eval()
    weights = tmp_path / "googlenet.pth"
    torch.save(ref.state_dict(), weights)
    out = _cli(
        "--model",
        "googlenet",
        "--weights",
        str(weights),
        "--image-size",
        "64",
        "--out",
        str(tmp_path / "g.bin"),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "platforms cpu, cuda, tpu" in out.stdout and "relative L2" in out.stdout

    exported = export.deserialize((tmp_path / "g.bin").read_bytes())
    assert exported.platforms == ("cpu", "cuda", "tpu")
    assert str(exported.in_avals[0].shape[0]) == "b"  # symbolic batch
    x = np.random.RandomState(3).rand(5, 64, 64, 3).astype(np.float32)
    got = np.asarray(exported.call(x))
    with torch.no_grad():
        want = ref(torch.tensor(x.transpose(0, 3, 1, 2))).numpy()
    assert got.shape == (5, 1000)
    assert torch_refs.rel_l2(got, want) < 1e-4


def test_export_errors_are_one_line(tmp_path):
    for args, message in [
        (("--model", "inception_v9", "--out", str(tmp_path / "x")), "--model inception_v9: unknown"),
        (
            ("--model", "inception_v3", "--image-size", "40", "--out", str(tmp_path / "x")),
            "needs at least 75",
        ),
        (
            ("--model", "googlenet", "--weights", str(tmp_path / "none.pth"), "--out", str(tmp_path / "x")),
            "no such",
        ),
    ]:
        out = _cli(*args)
        assert out.returncode == 2, out.stderr[-1000:]
        assert out.stderr.strip().splitlines() == [out.stderr.strip()] and message in out.stderr, out.stderr
    assert not (tmp_path / "x").exists()
