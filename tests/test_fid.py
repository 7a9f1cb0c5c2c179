"""FID, KID and IS against pytorch-fid, torchmetrics and clean-fid (same weights, same
features), the statistics files both ways, and the command line's one-line errors."""

import json
import os
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest
import torch_refs
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
    return torch_refs.pytorch_fid_network()


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


def test_host_resize_equals_torch_interpolate_for_odd_sizes_and_batches():
    import torch.nn.functional as F

    rng = np.random.RandomState(4)
    for shape in ((3, 1, 1, 3), (2, 17, 600, 3), (1, 299, 150, 3), (2, 1000, 7, 3)):
        x = rng.rand(*shape).astype(np.float32)
        want = F.interpolate(
            torch.tensor(x.transpose(0, 3, 1, 2)), size=(299, 299), mode="bilinear", align_corners=False
        )
        got = fid.resize_bilinear(x)
        assert got.dtype == np.float32 and got.shape == (shape[0], 299, 299, 3)
        assert rel(got, want.numpy().transpose(0, 2, 3, 1)) < 1e-6, shape
        assert rel(fid.resize_bilinear(x[0]), want.numpy()[0].transpose(1, 2, 0)) < 1e-6  # one HWC image


def test_mixed_image_sizes_compile_once_and_equal_pytorch_fid(torch_fid_net, weights_file):
    """7 images of 4 sizes: today's program compiles once (it used to compile per
    size); each image's block-0 activations equal pytorch-fid's InceptionV3, which
    resizes every image itself (F.interpolate on the [0, 1] tensor)."""
    import jax

    rng = np.random.RandomState(5)
    sizes = [(32, 32), (45, 61), (299, 299), (350, 310), (32, 32), (45, 61), (120, 80)]
    images = [rng.randint(0, 256, (h, w, 3)).astype(np.uint8) for h, w in sizes]
    net = fid.FIDNetwork.load(weights_file)
    compiles = []

    def count(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(duration)

    fid._block_fn.cache_clear()
    jax.monitoring.register_event_duration_secs_listener(count)
    try:
        got = fid.activations(net, images, dims=64, batch_size=3)
    finally:
        jax.monitoring.unregister_event_duration_listener(count)
    assert len(compiles) == 1, compiles
    model = _torch_wrapper(torch_fid_net, [0])
    with torch.no_grad():
        for image, row in zip(images, got):
            x = torch.tensor(image.transpose(2, 0, 1)[None] / np.float32(255.0))
            (want,) = model(x)
            assert rel(row, want.mean(dim=(2, 3))[0].numpy()) < 1e-5


def _png(path, image, **save):
    image.save(path, **save)
    return str(path)


def test_image_modes_by_hand(tmp_path):
    from PIL import Image

    # 16 bits: round(v / 257), not saturated (pytorch-fid's convert("RGB") gives 255 for 1000)
    sixteen = np.array([[0, 257, 1000, 65535]], np.uint16)
    path = _png(tmp_path / "16.png", Image.fromarray(sixteen))
    assert Image.open(path).mode in ("I;16", "I")
    want = np.repeat(np.array([[0, 1, 4, 255]], np.uint8)[:, :, None], 3, axis=2)  # 1000 / 257 = 3.89
    np.testing.assert_array_equal(fid.read_image(path), want)
    path = _png(tmp_path / "32.tif", Image.fromarray(sixteen.astype(np.int32), mode="I"))
    np.testing.assert_array_equal(fid.read_image(path), want)
    np.testing.assert_array_equal(fid.to_rgb8(sixteen), want)

    # RGBA on white: c a / 255 + 255 (1 - a / 255), rounded
    rgba = np.array([[[200, 100, 0, 128], [10, 20, 30, 255], [10, 20, 30, 0]]], np.uint8)
    path = _png(tmp_path / "rgba.png", Image.fromarray(rgba, mode="RGBA"))
    want = np.array([[[227, 177, 127], [10, 20, 30], [255, 255, 255]]], np.uint8)  # 100.39 + 127 etc.
    np.testing.assert_array_equal(fid.read_image(path), want)
    # gray + alpha: 50 * 64 / 255 + 191 = 203.55
    path = _png(tmp_path / "la.png", Image.fromarray(np.array([[[50, 64]]], np.uint8), mode="LA"))
    np.testing.assert_array_equal(fid.read_image(path), [[[204, 204, 204]]])
    # gray repeated
    path = _png(tmp_path / "l.png", Image.fromarray(np.array([[7, 200]], np.uint8), mode="L"))
    np.testing.assert_array_equal(fid.read_image(path), [[[7, 7, 7], [200, 200, 200]]])
    # palette: through its colours; with a transparent index, that index on white
    palette = Image.fromarray(np.array([[0, 1, 2]], np.uint8), mode="P")
    palette.putpalette([255, 0, 0, 0, 0, 255, 0, 128, 0])
    path = _png(tmp_path / "p.png", palette)
    np.testing.assert_array_equal(fid.read_image(path), [[[255, 0, 0], [0, 0, 255], [0, 128, 0]]])
    path = _png(tmp_path / "p_trns.png", palette, transparency=1)
    np.testing.assert_array_equal(fid.read_image(path), [[[255, 0, 0], [255, 255, 255], [0, 128, 0]]])

    with pytest.raises(fid.FIDError, match="dtype float32: expected uint8"):
        fid.to_rgb8(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(fid.FIDError, match=r"shape \(4, 4, 5\): expected HxW"):
        fid.to_rgb8(np.zeros((4, 4, 5), np.uint8))


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


def _stats(x):
    return x.mean(0), np.cov(x, rowvar=False)


def test_frechet_distance_equals_pytorch_fid():
    rng = np.random.RandomState(0)
    a, b = rng.randn(200, 16), rng.randn(150, 16) * 1.3 + 0.2
    want = fid_score.calculate_frechet_distance(*_stats(a), *_stats(b))
    assert fid.frechet_distance(*_stats(a), *_stats(b)) == pytest.approx(want, rel=1e-6)
    # 256 dims, correlated features, two close distributions: the trace term nearly
    # cancels the others, so this is where a less accurate root would show
    mix = rng.randn(256, 256) / 16
    c, d = rng.randn(600, 256) @ mix, (rng.randn(500, 256) @ mix) * 1.05 + 0.01
    want = fid_score.calculate_frechet_distance(*_stats(c), *_stats(d))
    assert fid.frechet_distance(*_stats(c), *_stats(d)) == pytest.approx(want, rel=1e-6)
    # rank-deficient (fewer samples than dimensions): scipy 1.17's sqrtm returns a
    # finite root for these products, so pytorch-fid takes no fallback and the two
    # compute the same quantity; the zero eigenvalues cost sqrtm accuracy, hence 1e-6
    for n, dims in ((5, 16), (100, 256)):
        e, f = rng.randn(n, dims), rng.randn(n, dims) + 0.1
        want = fid_score.calculate_frechet_distance(*_stats(e), *_stats(f))
        assert fid.frechet_distance(*_stats(e), *_stats(f)) == pytest.approx(want, rel=1e-6), (n, dims)


def test_trace_sqrt_product_of_singular_covariances_by_hand():
    """Covariances that commute (one rotation diagonalises both), with zeros on the
    diagonal: Tr((S1 S2)^(1/2)) = sum_i sqrt(a_i b_i) exactly."""
    rng = np.random.RandomState(3)
    rotation, _ = np.linalg.qr(rng.randn(32, 32))
    a, b = rng.rand(32) * 2, rng.rand(32) * 3
    a[:10], b[5:15] = 0.0, 0.0  # rank 22 and 22, the product rank 17
    s1, s2 = (rotation * a) @ rotation.T, (rotation * b) @ rotation.T
    assert np.linalg.matrix_rank(s1 @ s2) == 17
    assert fid.trace_sqrt_product(s1, s2) == pytest.approx(np.sqrt(a * b).sum(), rel=1e-9)
    mu = rng.randn(32)
    by_hand = 4.0 + a.sum() + b.sum() - 2 * np.sqrt(a * b).sum()  # ||(2, 0, ...)||^2 = 4
    shift = np.zeros(32)
    shift[0] = 2.0
    assert fid.frechet_distance(mu, s1, mu + shift, s2) == pytest.approx(by_hand, rel=1e-9)


def test_frechet_distance_where_pytorch_fid_falls_back_to_eps(capsys):
    """A product with no square root: sigma1 is a covariance up to rounding (one
    eigenvalue -5e-7, as a rank-deficient estimate can come out) whose product with
    sigma2 has a 2x2 Jordan block at 0, so scipy's sqrtm gives NaNs and pytorch-fid
    retries with 1e-6 on the diagonals. Ours needs no retry: with ``eps=1e-6`` it
    computes pytorch-fid's fallback number; with the default (no offset) a finite
    value, checked by hand below."""
    from scipy import linalg

    block1, block2 = np.array([[2.0, 1e-3], [1e-3, 0.0]]), np.array([[1.0, 0.3], [0.3, 2.0]])
    sigma1 = linalg.block_diag(block1, block2)
    sigma2 = linalg.block_diag(np.diag([0.0, 1.0]), [[1.5, -0.2], [-0.2, 0.7]])
    mu1, mu2 = np.array([0.1, -0.2, 0.3, 0.0]), np.array([0.0, 0.1, -0.1, 0.2])
    assert not np.isfinite(linalg.sqrtm(sigma1 @ sigma2)).all()  # the input really is singular

    theirs = fid_score.calculate_frechet_distance(mu1, sigma1, mu2, sigma2)
    assert "fid calculation produces singular product" in capsys.readouterr().out  # it fell back
    assert fid.frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6) == pytest.approx(theirs, rel=1e-9)

    # by hand, without the offset: sigma1's first block, its negative eigenvalue taken
    # as 0, is lam v v^T (lam, v its positive eigenpair), so its root is sqrt(lam) v v^T
    # and the first block of R sigma2 R is lam (v^T diag(0, 1) v) v v^T: one eigenvalue
    # lam v_2^2, the root's trace sqrt(lam) |v_2|. The second blocks are positive
    # definite: the square roots of the eigenvalues of their product.
    lam = 1.0 + np.sqrt(1.0 + 1e-6)  # 2x2 eigenvalue: (2 + sqrt(4 + 4e-6)) / 2
    v = np.array([1e-3, lam - 2.0])  # (block1 - lam) v = 0 from its first row
    v /= np.linalg.norm(v)
    product2 = block2 @ np.array([[1.5, -0.2], [-0.2, 0.7]])
    trace_root = np.sqrt(lam) * abs(v[1]) + np.sqrt(np.linalg.eigvals(product2)).sum()
    diff = mu1 - mu2
    by_hand = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_root.real
    ours = fid.frechet_distance(mu1, sigma1, mu2, sigma2)
    assert ours == pytest.approx(by_hand, rel=1e-9)
    # the offset moves the value by O(sqrt(eps)): the zero eigenvalues' roots become ~1e-3
    assert abs(ours - theirs) < 5e-3


def test_frechet_distance_refuses_what_is_not_a_covariance():
    sigma = np.array([[1.0, 0.0], [0.0, -1.0]])  # the product's root has a large imaginary part
    with pytest.raises(ValueError, match="Imaginary component"):
        fid_score.calculate_frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), sigma)
    with pytest.raises(fid.FIDError, match="sigma2 is not a covariance matrix"):
        fid.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), sigma)
    with pytest.raises(fid.FIDError, match="sigma1 has eigenvalue -1"):
        fid.frechet_distance(np.zeros(2), sigma, np.zeros(2), np.eye(2))
    with pytest.raises(fid.FIDError, match="sigma1 is not symmetric"):
        fid.frechet_distance(np.zeros(2), np.array([[1.0, 0.5], [0.0, 1.0]]), np.zeros(2), np.eye(2))
    with pytest.raises(fid.FIDError, match="compute both with the same --dims"):
        fid.frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


@pytest.mark.parametrize("batch", [1, 7, 50])
def test_running_statistics_equal_numpy_whatever_the_batch_size(batch):
    """float32 features far from zero (mean 30, spread 0.5 to 2), as activations are:
    a one-pass sum of squares would lose digits here."""
    rng = np.random.RandomState(batch)
    acts = (30 + rng.randn(203, 96) * rng.uniform(0.5, 2, 96) + rng.randn(203, 1)).astype(np.float32)
    full = acts.astype(np.float64)
    running = fid.RunningStatistics(96)
    for start in range(0, len(acts), batch):
        running.update(acts[start : start + batch])
    mu, sigma = running.result()
    want_mu, want_sigma = np.mean(full, axis=0), np.cov(full, rowvar=False)
    np.testing.assert_allclose(mu, want_mu, rtol=1e-9)
    np.testing.assert_allclose(sigma, want_sigma, rtol=1e-9, atol=1e-9 * np.abs(want_sigma).max())
    # two partial results merged (as the processes' are) equal the same
    halves = [fid.RunningStatistics(96).update(part) for part in (acts[:77], acts[77:])]
    mu, sigma = halves[0].merge(halves[1]).result()
    np.testing.assert_allclose(mu, want_mu, rtol=1e-9)
    np.testing.assert_allclose(sigma, want_sigma, rtol=1e-9, atol=1e-9 * np.abs(want_sigma).max())


class _LazyImages:
    """n deterministic 16x16 uint8 images made when asked for: a list of them would
    take memory that grows with n."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return np.random.RandomState(i).randint(0, 256, (16, 16, 3)).astype(np.uint8)


def test_streaming_statistics_memory_does_not_grow_with_the_number_of_images():
    """The network replaced by the flattened pixels (768 features at 16 px): the
    statistics of 3,000 images take no more host memory than those of 300, where
    (N, 768) float64 activations would take 16 MB more; and they equal np.cov."""
    import tracemalloc

    def pixels_as_features(model, dims):
        return lambda variables, x: x.reshape(x.shape[0], -1)[:, :dims]

    net = fid.FIDNetwork(model=None, variables={})
    peaks, results = [], []
    with mock.patch.object(fid, "_block_fn", pixels_as_features):
        for n in (300, 3000):
            tracemalloc.start()
            try:
                stats = fid.streaming_statistics(net, _LazyImages(n), dims=768, batch_size=100, size=16)
                results.append(stats)
                peaks.append(tracemalloc.get_traced_memory()[1])
            finally:
                tracemalloc.stop()
    assert peaks[1] - peaks[0] < 2e6, peaks  # (2700, 768) float64 would be 16.6e6
    images = _LazyImages(3000)
    full = np.stack([images[i].reshape(-1) for i in range(3000)]).astype(np.float32) / np.float32(255)
    full = full.astype(np.float64)
    np.testing.assert_allclose(results[1][0], full.mean(0), rtol=1e-9)
    want = np.cov(full, rowvar=False)
    np.testing.assert_allclose(results[1][1], want, rtol=1e-9, atol=1e-9 * np.abs(want).max())


def test_few_images_warn_in_one_line(capsys):
    fid.statistics(np.random.RandomState(0).rand(17, 16))
    assert capsys.readouterr().err == ""
    fid.statistics(np.random.RandomState(0).rand(5, 16))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: FID from 5 images with 16-d features: ")
    assert "the covariance is singular; use at least 17 images (pytorch-fid's advice: 10,000+)" in err
    running = fid.RunningStatistics(2048).update(np.random.RandomState(0).rand(500, 2048))
    running.result()
    assert "FID from 500 images with 2048-d features" in capsys.readouterr().err


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
    in order, equal to one device's result; the streamed statistics equal numpy's."""
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
    # the streamed statistics (each process its share, merged in float64) equal numpy's
    # of the same run's activations
    for out in (four, *(np.load(tmp_path / f"p{i}.npz") for i in range(2))):
        want = np.cov(out["acts"], rowvar=False)
        np.testing.assert_allclose(out["mu"], out["acts"].mean(0), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(out["sigma"], want, rtol=1e-9, atol=1e-9 * np.abs(want).max())


_SINGLE_ARENA_RUN = """
import sys
from inception_jax.backends import cpu_inference
assert cpu_inference.single_arena()
import numpy as np
from inception_jax import fid
rng = np.random.RandomState(0)
images = [rng.randint(0, 256, (40 + i, 50, 3)).astype(np.uint8) for i in range(5)]
np.save(sys.argv[1], fid.activations(fid.FIDNetwork.random(seed=0), images, batch_size=4, size=75))
"""


def test_single_malloc_arena_gives_the_same_activations(tmp_path):
    """The CPU inference setting changes where memory comes from, not the numbers:
    a process with it computes the activations a process without it does."""
    out = tmp_path / "single.npy"
    run = subprocess.run(
        [sys.executable, "-c", _SINGLE_ARENA_RUN, str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )
    assert run.returncode == 0, run.stderr[-1500:]
    rng = np.random.RandomState(0)
    images = [rng.randint(0, 256, (40 + i, 50, 3)).astype(np.uint8) for i in range(5)]
    want = fid.activations(fid.FIDNetwork.random(seed=0), images, batch_size=4, size=75)
    assert np.abs(want).max() > 0
    np.testing.assert_allclose(np.load(out), want, rtol=1e-6, atol=1e-9)


def test_fid_record_and_size_are_pytorch_fids(torch_fid_net):
    import jax

    from inception_jax import models

    cfg = models.get_info("fid_inception_v3").pretrained
    assert cfg.url == pfi.FID_WEIGHTS_URL and cfg.filename == os.path.basename(pfi.FID_WEIGHTS_URL)
    model = models.create("fid_inception_v3")
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), np.zeros((1, 75, 75, 3), np.float32)))
    ours = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes["params"]))
    assert ours == sum(p.numel() for p in torch_fid_net.parameters()) == 23_850_960
