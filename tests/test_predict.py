"""``python -m inception_jax.predict`` against torchvision: a GoogLeNet with random
weights (transform_input=True, as the pretrained weights are used) saved as .pth
gives the same top-5 on photo-sized images as torchvision applying
``GoogLeNet_Weights.IMAGENET1K_V1.transforms()``; bad input is one line, exit 2."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import real_images
import torch_refs as R

from inception_jax import predict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def googlenet(tmp_path_factory):
    ref = R.build("googlenet", transform_input=True, aux_logits=True)
    path = tmp_path_factory.mktemp("weights") / "googlenet.pth"
    torch.save(ref.state_dict(), path)
    return ref, str(path)


@pytest.fixture(scope="module")
def image_files(tmp_path_factory, synthetic_cifar):
    return real_images.write_images(tmp_path_factory.mktemp("images"), synthetic_cifar)


def _run(argv, capsys):
    code = predict.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_top5_matches_torchvision(googlenet, image_files, capsys):
    from PIL import Image
    from torchvision.models import GoogLeNet_Weights

    ref, weights = googlenet
    code, out, err = _run(["--model", "googlenet", "--weights", weights, "--json", *image_files], capsys)
    assert code == 0, err
    results = json.loads(out)
    transform = GoogLeNet_Weights.IMAGENET1K_V1.transforms()
    categories = GoogLeNet_Weights.IMAGENET1K_V1.meta["categories"]
    ref.eval()
    with torch.no_grad():
        x = torch.stack([transform(Image.open(p).convert("RGB")) for p in image_files])
        probs = torch.softmax(ref(x), dim=-1).numpy()
    assert [r["image"] for r in results] == image_files
    for result, p in zip(results, probs):
        top = np.argsort(-p)[:5]
        assert [row["index"] for row in result["top5"]] == top.tolist()
        assert [row["label"] for row in result["top5"]] == [categories[i] for i in top]
        np.testing.assert_allclose([row["prob"] for row in result["top5"]], p[top], atol=1e-4)
    # the text output lists the same classes
    code, out, _ = _run(["--model", "googlenet", "--weights", weights, "--top", "3", *image_files], capsys)
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 4 * len(image_files)
    for k, (path, p) in enumerate(zip(image_files, probs)):
        assert lines[4 * k] == path
        for line, i in zip(lines[4 * k + 1 : 4 * k + 4], np.argsort(-p)[:3]):
            assert line.rstrip().endswith(f"{categories[i]} ({i})")


def test_bad_input_is_one_line_exit_2(googlenet, image_files, tmp_path, capsys):
    _, weights = googlenet
    undecodable = tmp_path / "photo.jpg"
    undecodable.write_bytes(b"\xff\xd8 not really a jpeg")
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"conv1.conv.weight": Evil()}, evil)
    cases = [
        (["--model", "googlenet", "--weights", weights, tmp_path / "missing.png"], "missing.png"),
        (["--model", "googlenet", "--weights", weights, undecodable], "could not be decoded"),
        (["--model", "inceptionv9", "--weights", weights, image_files[0]], "unknown model"),
        (["--model", "inception_v3", "--weights", weights, image_files[0]], "does not fit inception_v3"),
        (["--model", "googlenet", "--weights", evil, image_files[0]], "refused for safety"),
        (["--model", "googlenet", "--weights", tmp_path / "nope.pth", image_files[0]], "does not exist"),
        (["--model", "googlenet", "--top", "0", "--weights", weights, image_files[0]], "must be positive"),
        (["--model", "googlenet"], "required"),
    ]
    for argv, expected in cases:
        code, out, err = _run(argv, capsys)
        assert code == 2, (argv, out, err)
        assert out == "" and err.count("\n") == 1 and expected in err, (argv, err)
    assert not marker.exists()


def test_module_entry_point(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "inception_jax.predict",
            "--model",
            "googlenet",
            "--weights",
            str(tmp_path / "w.pth"),
            str(tmp_path / "x.jpg"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"predict: error: image {str(tmp_path / 'x.jpg')!r} does not exist"
    ]
