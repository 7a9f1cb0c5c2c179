"""The evaluation table (inception_jax.evaluation, inception_jax.sample_metrics) against
its references on the same features: prdc (precision, recall, density, coverage),
torchmetrics (Inception Score, KID), pytorch-fid (FID, its network's Mixed_6d and
classifier for sFID and the Inception Score's logits); and the command line."""

import json
import os

import numpy as np
import pytest

from inception_jax import evaluation, fid, sample_metrics

torch = pytest.importorskip("torch")
prdc = pytest.importorskip("prdc")
fid_score = pytest.importorskip("pytorch_fid.fid_score")

import torch_refs  # noqa: E402
from test_fid import _cli, _torch_wrapper, _write_images, rel  # noqa: E402


@pytest.fixture(scope="module")
def torch_fid_net():
    """pytorch-fid's own fid_inception_v3 with He-initialised convolutions and BatchNorm
    near the identity: its features differ from image to image by a few percent of
    their norm. (With torch's default init the deep random network maps every image
    to nearly one point, 1e-7 apart in 11, where no nearest-neighbour decision is
    meaningful.)"""
    return torch_refs.pytorch_fid_network(
        he_init=True, running_mean=(-0.1, 0.1), running_var=(0.8, 1.2), weight=(0.8, 1.2), bias=(-0.1, 0.1)
    )


@pytest.fixture(scope="module")
def weights_file(torch_fid_net, tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(torch_fid_net.state_dict(), path)
    return str(path)


def test_precision_recall_density_coverage_equal_prdc(capsys):
    rng = np.random.RandomState(0)
    real, fake = rng.randn(300, 64), rng.randn(250, 64) * 1.1 + 0.15
    for k in (3, 5):
        want = prdc.compute_prdc(real, fake, nearest_k=k)
        # 37 rows a block: the distances are taken in several blocks
        got = sample_metrics.manifold_metrics(real, fake, nearest_k=k, block_elements=37 * 300)
        assert set(got) == {"precision", "recall", "density", "coverage"}
        for name in ("precision", "recall", "coverage"):  # fractions of the same counts
            assert got[name] == want[name], (k, name, got[name], want[name])
        assert got["density"] == pytest.approx(want["density"], rel=1e-12)
        assert 0 < got["precision"] < 1 and 0 < got["recall"] < 1  # neither trivially 0 nor 1
    assert sample_metrics.manifold_metrics(real, fake, metrics=["recall"]) == {
        "recall": prdc.compute_prdc(real, fake, nearest_k=3)["recall"]
    }


def test_ball_boundaries_by_hand():
    """Real points 0, 1, 2, 3 on a line, k = 1: every real radius is 1. Fake 4 lies on
    real 3's sphere: inside for precision (Kynkäänniemi et al.: distance <= radius),
    outside for density and coverage (Naeem et al.'s prdc: distance < radius)."""
    real, fake = np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([[4.0], [10.0], [11.0]])
    got = sample_metrics.manifold_metrics(real, fake, nearest_k=1)
    # fake 4's radius is 6: every real point is within it
    assert got == {"precision": 1 / 3, "recall": 1.0, "density": 0.0, "coverage": 0.0}
    theirs = prdc.compute_prdc(real, fake, nearest_k=1)
    assert theirs["precision"] == 0.0 and theirs["density"] == 0.0 and theirs["coverage"] == 0.0
    with pytest.raises(fid.FIDError, match="nearest_k=4: needs 1 <= k < the number of points"):
        sample_metrics.manifold_metrics(real, fake, nearest_k=4)


def test_inception_score_in_chunks_of_5000_equals_torchmetrics_per_chunk():
    """The ADM evaluator's splits: consecutive chunks of 5000 (the last shorter), the
    mean of their scores; torchmetrics with one split scores each chunk."""
    is_mod = pytest.importorskip("torchmetrics.image.inception")
    logits = np.random.RandomState(1).randn(10_500, 20) * 3
    scores = []
    for start in (0, 5000, 10_000):
        metric = is_mod.InceptionScore(feature=torch.nn.Identity(), splits=1)
        metric.features = [torch.tensor(logits[start : start + 5000])]
        scores.append(metric.compute()[0].item())
    mean, std = fid.inception_score(logits, split_size=5000)
    assert mean == pytest.approx(np.mean(scores), rel=1e-9)
    assert std == pytest.approx(np.std(scores, ddof=1), rel=1e-9)
    assert abs(fid.inception_score(logits, splits=3)[0] - mean) > 1e-3  # 3 chunks of 3500 differ


def _torch_features(net, images):
    """pytorch-fid's pool features, its Mixed_6d.branch1x1 output (first 7 channels,
    flattened as TF's NHWC [17, 17, 7]) and the pool features times fc's weight (no bias)."""
    spatial = []
    hook = net.Mixed_6d.branch1x1.register_forward_hook(lambda m, i, out: spatial.append(out))
    try:
        x = torch.tensor(np.stack(images).transpose(0, 3, 1, 2) / np.float32(255.0))
        with torch.no_grad():
            (pool,) = _torch_wrapper(net, [3])(x)
    finally:
        hook.remove()
    pool = pool[:, :, 0, 0].double().numpy()
    spatial = spatial[0][:, :7].permute(0, 2, 3, 1).reshape(len(images), -1).double().numpy()
    return pool, spatial, pool @ net.fc.weight.detach().double().numpy().T


def test_spatial_features_and_logits_equal_pytorch_fid_network(torch_fid_net, weights_file):
    rng = np.random.RandomState(3)
    images = list(rng.randint(0, 256, (3, 64, 80, 3)).astype(np.uint8))
    pool, spatial, logits = _torch_features(torch_fid_net, images)
    net = fid.FIDNetwork.load(weights_file)
    got = evaluation.features(net, images, batch_size=2)
    assert got.pool.shape == (3, 2048) and got.spatial.shape == (3, 17 * 17 * 7)
    assert rel(got.pool, pool) < 1e-5 and rel(got.spatial, spatial) < 1e-5
    assert rel(got.pool, fid.activations(net, images)) < 1e-6  # pytorch-fid's block 3, as FID takes it
    assert rel(evaluation.unbiased_logits(net, got.pool), logits) < 1e-5
    assert torch_fid_net.fc.bias.abs().max() > 0.01  # so leaving the bias out is seen


def test_npz_batch_reads_in_order_and_back(tmp_path):
    images = np.random.RandomState(0).randint(0, 256, (7, 5, 4, 3)).astype(np.uint8)
    for save in (np.savez, np.savez_compressed):
        path = str(tmp_path / f"{save.__name__}.npz")
        save(path, arr_0=images, mu=np.zeros(3), sigma=np.eye(3))
        source = evaluation.open_source(path)
        assert len(source.images) == 7 and set(source.stored) == {"mu", "sigma"}
        np.testing.assert_array_equal(source.images[2:5], images[2:5])
        np.testing.assert_array_equal(source.images[5], images[5])
        np.testing.assert_array_equal(source.images[0], images[0])  # backwards
        np.testing.assert_array_equal(source.images[-1], images[-1])
        np.testing.assert_array_equal(np.stack(list(source.images)), images)
    np.savez(tmp_path / "float.npz", arr_0=images.astype(np.float32))
    with pytest.raises(fid.FIDError, match="arr_0 of shape .* and dtype float32: expected uint8"):
        evaluation.open_source(str(tmp_path / "float.npz"))


def _one_line_error(out):
    lines = [line for line in out.stderr.replace("\r", "\n").splitlines() if line and "FID activ" not in line]
    assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), out.stderr[-800:]
    return lines[0]


def test_command_line_refuses_what_the_inputs_cannot_give(tmp_path):
    """Before the network is loaded (the weights file is not even read)."""
    weights = str(tmp_path / "unread.pth")
    open(weights, "w").close()
    folder = _write_images(tmp_path / "images", 5, 0, size=(16, 16))
    stats = str(tmp_path / "stats.npz")
    np.savez(stats, mu=np.zeros(4), sigma=np.eye(4))
    cases = [
        (("--metrics", "fid,precision", stats, folder), f"{stats}: a statistics file, but precision needs"),
        (
            ("--metrics", "sfid", stats, folder),
            f"{stats}: a statistics file, but sfid needs mu_s and sigma_s",
        ),
        (("--metrics", "fid,fidd", folder, folder), "--metrics fid,fidd: expected a comma list of fid,sfid"),
        (("--dims", "64", "--metrics", "fid,kid", folder, folder), "--dims 64: only fid takes another block"),
        (("--metrics", "recall", "--nearest-k", "5", folder, folder), "--nearest-k 5: needs 1 <= k < the"),
        (("--save-stats", stats, str(tmp_path / "out.npz")), "a statistics file; --save-stats needs images"),
    ]
    for args, message in cases:
        line = _one_line_error(_cli("--weights", weights, *args))
        assert message in line, (args, line)


@pytest.mark.slow  # minutes: 40 images through both networks, six 2k x 2k matrix square roots
def test_command_line_table_equals_the_references(torch_fid_net, weights_file, tmp_path):
    """REF a folder, SAMPLES an ADM-style batch .npz; every value against its reference
    library on pytorch-fid's features of the same images."""
    from PIL import Image

    kid_mod = pytest.importorskip("torchmetrics.image.kid")
    is_mod = pytest.importorskip("torchmetrics.image.inception")
    ref = _write_images(tmp_path / "ref", 20, 0)
    folder = _write_images(tmp_path / "samples", 20, 1)
    images = [np.asarray(Image.open(os.path.join(folder, f))) for f in sorted(os.listdir(folder))]
    batch = str(tmp_path / "samples.npz")
    np.savez(batch, arr_0=np.stack(images))
    ref_images = [np.asarray(Image.open(f)) for f in fid.list_images(ref)]

    out = _cli("--weights", weights_file, "--batch-size", "10", "--json", ref, batch)
    assert out.returncode == 0, out.stderr[-1500:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert list(got) == list(evaluation.METRICS)

    real_pool, real_spatial, _ = _torch_features(torch_fid_net, ref_images)
    fake_pool, fake_spatial, fake_logits = _torch_features(torch_fid_net, images)

    def frechet(a, b):
        return fid_score.calculate_frechet_distance(
            a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
        )

    assert got["fid"] == pytest.approx(frechet(real_pool, fake_pool), rel=1e-3)
    assert got["sfid"] == pytest.approx(frechet(real_spatial, fake_spatial), rel=1e-3)
    scores = []  # 10 consecutive splits, each scored by torchmetrics as one split
    for chunk in np.array_split(fake_logits, 10):
        metric = is_mod.InceptionScore(feature=torch.nn.Identity(), splits=1)
        metric.features = [torch.tensor(chunk)]
        scores.append(metric.compute()[0].item())
    assert got["inception_score"] == pytest.approx(np.mean(scores), rel=1e-4)
    want = prdc.compute_prdc(real_pool, fake_pool, nearest_k=3)
    for name in sample_metrics.MANIFOLD_METRICS:
        assert got[name] == pytest.approx(want[name], abs=1e-12), name
    # subsets of all 20: every subset is the whole set, so no draw matters
    metric = kid_mod.KernelInceptionDistance(feature=torch.nn.Identity(), subsets=100, subset_size=20)
    metric.real_features, metric.fake_features = [torch.tensor(real_pool)], [torch.tensor(fake_pool)]
    assert got["kid"] == pytest.approx(metric.compute()[0].item(), rel=1e-4)
    assert "inception_score: of the samples only" in out.stderr

    # the ADM reference statistics, written and read back
    stats = str(tmp_path / "ref_stats.npz")
    out = _cli("--weights", weights_file, "--batch-size", "10", "--save-stats", ref, stats)
    assert out.returncode == 0, out.stderr[-1500:]
    with np.load(stats) as f:
        assert set(f.files) == {"mu", "sigma", "mu_s", "sigma_s"}
        assert (
            rel(f["mu"], real_pool.mean(0)) < 1e-5
            and rel(f["sigma_s"], np.cov(real_spatial, rowvar=False)) < 1e-4
        )
    out = _cli("--weights", weights_file, "--batch-size", "10", "--json", stats, batch)
    assert out.returncode == 0, out.stderr[-1500:]
    from_stats = json.loads(out.stdout.strip().splitlines()[-1])
    assert list(from_stats) == ["fid", "sfid", "inception_score"]  # all a statistics file allows
    for name in from_stats:
        assert from_stats[name] == pytest.approx(got[name], rel=1e-4), name
    assert "left out, as the inputs do not allow them: precision" in out.stderr
