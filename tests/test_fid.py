"""FID, KID and IS against pytorch-fid, torchmetrics and clean-fid (same weights, same
features), the statistics files both ways, and the command line's one-line errors."""

import json
import os
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest
from cli import run_module

from inception_jax import fid

torch = pytest.importorskip("torch")
pfi = pytest.importorskip("pytorch_fid.inception")
fid_score = pytest.importorskip("pytorch_fid.fid_score")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def torch_fid_net():
    """pytorch-fid's own fid_inception_v3 (its FIDInception blocks), random weights and
    random BatchNorm statistics instead of the downloaded file."""
    torch.manual_seed(0)
    with (
        mock.patch.object(pfi, "load_state_dict_from_url", lambda *a, **k: None),
        mock.patch.object(torch.nn.Module, "load_state_dict", lambda self, *a, **k: None),
    ):
        net = pfi.fid_inception_v3()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.eval()


@pytest.fixture(scope="module")
def weights_file(torch_fid_net, tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(torch_fid_net.state_dict(), path)
    return str(path)


def _torch_wrapper(net, blocks):
    with mock.patch.object(pfi, "fid_inception_v3", lambda: net):
        return pfi.InceptionV3(output_blocks=blocks).eval()


def test_every_block_equals_pytorch_fid(torch_fid_net, weights_file):
    x = np.random.RandomState(0).rand(2, 3, 120, 150).astype(np.float32)  # [0, 1], resized to 299
    with torch.no_grad():
        want = [
            t.numpy().transpose(0, 2, 3, 1)
            for t in _torch_wrapper(torch_fid_net, [0, 1, 2, 3])(torch.tensor(x))
        ]
    net = fid.FIDNetwork.load(weights_file)
    x01 = fid.resize_bilinear(x.transpose(0, 2, 3, 1))
    got = net.model.apply(net.variables, 2 * x01 - 1, train=False, output_blocks=(0, 1, 2, 3))
    assert [g.shape[-1] for g in got] == [64, 192, 768, 2048]
    for g, w in zip(got, want):
        assert g.shape == w.shape
        assert rel(g, w) < 1e-4, (g.shape, rel(g, w))


def test_resize_modes_equal_pytorch_and_clean_fid():
    import torch.nn.functional as F

    rng = np.random.RandomState(1)
    for h, w in ((32, 32), (400, 333), (299, 299)):
        x = rng.rand(1, h, w, 3).astype(np.float32)
        want = F.interpolate(
            torch.tensor(x.transpose(0, 3, 1, 2)), size=(299, 299), mode="bilinear", align_corners=False
        )
        assert rel(fid.resize_bilinear(x), want.numpy().transpose(0, 2, 3, 1)) < 1e-6
    cleanfid_resize = pytest.importorskip("cleanfid.resize")
    clean = cleanfid_resize.make_resizer("PIL", False, "bicubic", (299, 299))
    for h, w in ((32, 32), (512, 384)):
        image = rng.randint(0, 256, (h, w, 3)).astype(np.uint8)
        np.testing.assert_array_equal(fid.resize_clean(image), clean(image))


def _write_images(folder, n, seed, size=(48, 40)):
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    rng = np.random.RandomState(seed)
    base = rng.randint(0, 256, (1, size[1], size[0], 3))
    for i in range(n):
        image = np.clip(base + rng.normal(0, 40 + 20 * seed, base.shape[1:]), 0, 255).astype(np.uint8)
        Image.fromarray(image[0] if image.ndim == 4 else image).save(os.path.join(folder, f"{i:03d}.png"))
    return str(folder)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    return _write_images(root / "a", 90, 0), _write_images(root / "b", 90, 1)


@pytest.mark.slow  # 60 s: 180 images through both networks
def test_folder_statistics_and_fid_equal_pytorch_fid(torch_fid_net, weights_file, folders, tmp_path):
    """dims 64 (block 0, average-pooled): 90 images per folder, so sigma is well conditioned."""
    model = _torch_wrapper(torch_fid_net, [0])
    want = [fid_score.compute_statistics_of_path(f, model, 30, 64, "cpu", num_workers=0) for f in folders]
    net = fid.FIDNetwork.load(weights_file)
    got = [fid.statistics_of(net, f, dims=64, batch_size=30) for f in folders]
    for (mu, sigma), (mu_t, sigma_t) in zip(got, want):
        assert rel(mu, mu_t) < 1e-5 and rel(sigma, sigma_t) < 1e-4
    value = fid.frechet_distance(*got[0], *got[1])
    assert value == pytest.approx(fid_score.calculate_frechet_distance(*want[0], *want[1]), rel=1e-3)
    assert value > 0  # the two folders differ

    # the command line: the same number, as JSON; statistics files both ways
    with mock.patch.object(pfi, "fid_inception_v3", lambda: torch_fid_net):
        torch_value = fid_score.calculate_fid_given_paths(list(folders), 30, "cpu", 64, num_workers=0)
    out = _cli("--weights", weights_file, "--dims", "64", "--batch-size", "30", "--json", *folders)
    assert out.returncode == 0, out.stderr[-1500:]
    assert json.loads(out.stdout.strip().splitlines()[-1])["fid"] == pytest.approx(torch_value, rel=1e-3)
    stats = str(tmp_path / "a.npz")
    out = _cli("--weights", weights_file, "--dims", "64", "--save-stats", folders[0], stats)
    assert out.returncode == 0, out.stderr[-1500:]
    mu_t, sigma_t = fid_score.compute_statistics_of_path(
        stats, model, 30, 64, "cpu"
    )  # pytorch-fid reads ours
    assert rel(mu_t, want[0][0]) < 1e-5 and rel(sigma_t, want[0][1]) < 1e-4
    theirs = str(tmp_path / "b_torch.npz")
    np.savez_compressed(theirs, mu=want[1][0], sigma=want[1][1])  # pytorch-fid's --save-stats format
    mu, sigma = fid.load_statistics(theirs)
    np.testing.assert_array_equal(mu, want[1][0])
    assert fid.frechet_distance(*fid.load_statistics(stats), mu, sigma) == pytest.approx(value, rel=1e-3)


def test_frechet_distance_equals_pytorch_fid_including_its_fallbacks():
    rng = np.random.RandomState(0)
    a, b = rng.randn(200, 16), rng.randn(150, 16) * 1.3 + 0.2
    stats = [(x.mean(0), np.cov(x, rowvar=False)) for x in (a, b)]
    want = fid_score.calculate_frechet_distance(*stats[0], *stats[1])
    assert fid.frechet_distance(*stats[0], *stats[1]) == pytest.approx(want, rel=1e-6)
    # singular covariances (5 samples in 16 dims); scipy 1.17's sqrtm returns a finite
    # root for this product, so neither takes the eps fallback (the test below does)
    c, d = rng.randn(5, 16), rng.randn(5, 16)
    singular = [(x.mean(0), np.cov(x, rowvar=False)) for x in (c, d)]
    want = fid_score.calculate_frechet_distance(*singular[0], *singular[1])
    assert fid.frechet_distance(*singular[0], *singular[1]) == pytest.approx(want, rel=1e-6)
    # a product with a large imaginary part: both refuse
    sigma = np.array([[1.0, 0.0], [0.0, -1.0]])
    with pytest.raises(ValueError, match="Imaginary component"):
        fid_score.calculate_frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), sigma)
    with pytest.raises(ValueError, match="imaginary component"):
        fid.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), sigma)


def test_frechet_distance_eps_fallback_runs_and_equals_pytorch_fid(capsys):
    """A product with no square root: sigma1 is a covariance up to rounding (one
    eigenvalue -5e-7, as a rank-deficient estimate can come out) whose product with
    sigma2 has a 2x2 Jordan block at 0, so scipy's sqrtm gives NaNs and both
    implementations retry with eps on the diagonals."""
    from scipy import linalg

    sigma1 = linalg.block_diag([[2.0, 1e-3], [1e-3, 0.0]], [[1.0, 0.3], [0.3, 2.0]])
    sigma2 = linalg.block_diag(np.diag([0.0, 1.0]), [[1.5, -0.2], [-0.2, 0.7]])
    mu1, mu2 = np.array([0.1, -0.2, 0.3, 0.0]), np.array([0.0, 0.1, -0.1, 0.2])
    assert not np.isfinite(linalg.sqrtm(sigma1 @ sigma2)).all()  # the input really is singular

    sqrtm, finite = linalg.sqrtm, []

    def spy(a, *args, **kwargs):  # the sqrtm both modules call, recording each root
        out = sqrtm(a, *args, **kwargs)
        finite.append(bool(np.isfinite(out[0] if isinstance(out, tuple) else out).all()))
        return out

    with mock.patch.object(linalg, "sqrtm", spy):
        ours = fid.frechet_distance(mu1, sigma1, mu2, sigma2)
        assert finite == [False, True]  # the plain root, then the eps one
        theirs = fid_score.calculate_frechet_distance(mu1, sigma1, mu2, sigma2)
        assert finite == [False, True, False, True]
    out = capsys.readouterr()
    assert "fid: singular product; adding 1e-06 to the diagonal" in out.err
    assert "fid calculation produces singular product" in out.out  # pytorch-fid's fallback ran too
    assert ours == pytest.approx(theirs, rel=1e-12)
    # by hand: the shifted covariances are positive definite, so Tr sqrt(product) is
    # the sum of the square roots of the product's (real, positive) eigenvalues
    offset = 1e-6 * np.eye(4)
    eigenvalues = np.linalg.eigvals((sigma1 + offset) @ (sigma2 + offset))
    assert np.all(eigenvalues.real > 0) and np.allclose(eigenvalues.imag, 0)
    diff = mu1 - mu2
    by_hand = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.sqrt(eigenvalues.real).sum()
    assert ours == pytest.approx(by_hand, rel=1e-9)


def test_kid_and_inception_score_equal_torchmetrics():
    kid_mod = pytest.importorskip("torchmetrics.image.kid")
    is_mod = pytest.importorskip("torchmetrics.image.inception")
    rng = np.random.RandomState(0)
    real, fake = rng.rand(60, 32), rng.rand(60, 32) * 1.1
    want = kid_mod.poly_mmd(torch.tensor(real), torch.tensor(fake)).item()
    assert fid.polynomial_mmd(real, fake) == pytest.approx(want, rel=1e-9)
    # subsets as large as the sets: every subset is the whole set, in some order
    metric = kid_mod.KernelInceptionDistance(feature=torch.nn.Identity(), subsets=3, subset_size=60)
    metric.real_features, metric.fake_features = [torch.tensor(real)], [torch.tensor(fake)]
    mean, std = metric.compute()
    ours = fid.kernel_inception_distance(real, fake, subsets=3, subset_size=60)
    assert ours[0] == pytest.approx(mean.item(), rel=1e-9) and ours[1] == pytest.approx(std.item(), abs=1e-12)
    with pytest.raises(fid.FIDError, match="subset_size=61"):
        fid.kernel_inception_distance(real, fake, subset_size=61)

    logits = rng.randn(103, 1008) * 3  # 103: torch.chunk's uneven splits
    metric = is_mod.InceptionScore(feature=torch.nn.Identity(), splits=10)
    metric.features = [torch.tensor(logits)]
    with mock.patch.object(torch, "randperm", lambda n, *a, **k: torch.arange(n)):
        mean, std = metric.compute()
    got = fid.inception_score(logits, splits=10)
    assert got[0] == pytest.approx(mean.item(), rel=1e-9) and got[1] == pytest.approx(std.item(), rel=1e-6)


def test_kid_with_subsets_smaller_than_the_sets_equals_torchmetrics():
    """200 features a set, 20 subsets of 50: the subsets differ, so the std is > 0."""
    kid_mod = pytest.importorskip("torchmetrics.image.kid")
    rng = np.random.RandomState(2)
    real, fake = rng.rand(200, 32), rng.rand(200, 32) * 1.1 + 0.05
    subsets, size = 20, 50

    def torchmetrics_kid():
        metric = kid_mod.KernelInceptionDistance(
            feature=torch.nn.Identity(), subsets=subsets, subset_size=size
        )
        metric.real_features, metric.fake_features = [torch.tensor(real)], [torch.tensor(fake)]
        return tuple(v.item() for v in metric.compute())

    # each with its own random subsets: a subset's unbiased MMD averages, over the
    # draws, to the whole sets' unbiased MMD, so both means are within sampling error
    # (std / sqrt(subsets)) of it, which is well above zero (the sets differ)
    torch.manual_seed(0)
    theirs = torchmetrics_kid()
    ours = fid.kernel_inception_distance(real, fake, subsets=subsets, subset_size=size)
    whole = kid_mod.poly_mmd(torch.tensor(real), torch.tensor(fake)).item()
    assert ours[1] > 0 and theirs[1] > 0
    for mean, std in (ours, theirs):
        assert abs(mean - whole) < 4 * std / np.sqrt(subsets), (mean, std, whole)
    assert whole > 8 * max(ours[1], theirs[1]) / np.sqrt(subsets)

    # the same subsets in both: torchmetrics' draws (the first `size` of each randperm)
    # recorded and handed to ours in the same order (real, fake, real, ...)
    drawn, randperm = [], torch.randperm

    def recording_randperm(n, *args, **kwargs):
        perm = randperm(n, *args, **kwargs)
        drawn.append(perm[:size].numpy().copy())
        return perm

    class Replay:
        def __init__(self, seed):
            self.draws = iter(drawn)

        def choice(self, n, k, replace=True):
            assert (n, k, replace) == (200, size, False)
            return next(self.draws)

    with mock.patch.object(torch, "randperm", recording_randperm):
        theirs = torchmetrics_kid()
    assert len(drawn) == 2 * subsets and len({tuple(d) for d in drawn}) == 2 * subsets
    with mock.patch.object(np.random, "default_rng", Replay):
        ours = fid.kernel_inception_distance(real, fake, subsets=subsets, subset_size=size)

    # and by hand: mean over i != j of k(x_i, x_j) and of k(y_i, y_j), minus twice the
    # mean of k(x_i, y_j), with k(a, b) = (a.b / 32 + 1)^3
    def kernel(a, b):
        return (a @ b.T / a.shape[1] + 1.0) ** 3

    off_diagonal = ~np.eye(size, dtype=bool)
    values = []
    for r, f in zip(drawn[0::2], drawn[1::2]):
        x, y = real[r], fake[f]
        values.append(
            kernel(x, x)[off_diagonal].mean() + kernel(y, y)[off_diagonal].mean() - 2 * kernel(x, y).mean()
        )
    by_hand = (np.mean(values), np.std(values))
    assert by_hand[1] > 0
    for got in (ours, theirs):
        np.testing.assert_allclose(got, by_hand, rtol=1e-9)


def _cli(*args):
    return run_module("inception_jax.fid", *args)


def test_command_line_errors_are_one_line(weights_file, folders, tmp_path):
    import torchvision

    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "0.png").write_bytes(b"not a png")
    googlenet = tmp_path / "googlenet.pth"
    torch.save(
        torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False).state_dict(),
        googlenet,
    )
    cases = [
        (("--weights", weights_file, str(tmp_path / "nope"), folders[0]), "no such folder"),
        (("--weights", weights_file, str(empty), folders[0]), "no images in it"),
        (("--weights", weights_file, str(broken), folders[0]), "0.png: not a readable image"),
        (
            ("--weights", weights_file, "--dims", "100", *folders),
            "--dims 100: expected one of 64, 192, 768, 2048",
        ),
        (("--weights", str(googlenet), *folders), "not the FID Inception network's weights"),
    ]
    for args, message in cases:
        out = _cli(*args)
        assert out.returncode == 2, (args, out.stderr[-800:])
        lines = [
            line for line in out.stderr.replace("\r", "\n").splitlines() if line and "FID activ" not in line
        ]
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (args, lines)


def _check(*args, env=None):
    return subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "tests", "fid_sharding_check.py"), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, JAX_PLATFORMS="cpu", **(env or {})),
    )


@pytest.mark.slow  # 55 s: three processes
def test_activations_sharded_over_4_devices_and_2_processes_equal_one_device(tmp_path):
    """10 images (not a multiple of the 4 devices or the 2 processes): each computed once,
    in order, equal to one device's result."""
    import socket

    four = _check(tmp_path / "four.npz", env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    procs = [_check(tmp_path / f"p{i}.npz", i, 2, port) for i in range(2)]
    try:
        outs = [p.communicate(timeout=600)[0] for p in [four, *procs]]
    finally:
        for p in [four, *procs]:
            p.kill()
    assert [p.returncode for p in [four, *procs]] == [0, 0, 0], "\n".join(o[-1500:] for o in outs)
    four = np.load(tmp_path / "four.npz")
    assert int(four["devices"]) == 4 and four["acts"].shape == (10, 2048)
    reference = four["one_device"]
    assert np.abs(reference).max() > 0
    np.testing.assert_allclose(four["acts"], reference, rtol=1e-5, atol=1e-7)
    for i in range(2):
        np.testing.assert_allclose(np.load(tmp_path / f"p{i}.npz")["acts"], reference, rtol=1e-5, atol=1e-7)


def test_fid_record_and_size_are_pytorch_fids(torch_fid_net):
    import jax

    from inception_jax import models

    cfg = models.get_info("fid_inception_v3").pretrained
    assert cfg.url == pfi.FID_WEIGHTS_URL and cfg.filename == os.path.basename(pfi.FID_WEIGHTS_URL)
    model = models.create("fid_inception_v3")
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), np.zeros((1, 75, 75, 3), np.float32)))
    ours = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes["params"]))
    assert ours == sum(p.numel() for p in torch_fid_net.parameters()) == 23_850_960
