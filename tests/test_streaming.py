"""The streaming (ImageNet-style) pipeline against torchvision's transforms and the
tfds source, and a short streaming training run."""

import os
import sys

import numpy as np
import pytest
from numerics import accuracy_and_loss

from inception_jax.data import streaming

torch = pytest.importorskip("torch")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_TFDS = os.path.join(ROOT, "..", "shared", "data", "tfds")
needs_cifar = pytest.mark.needs_cifar


def _image(h, w, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3)).astype(np.uint8)


def test_resized_crop_and_eval_transform_match_torchvision():
    import torchvision.transforms as T
    import torchvision.transforms.functional as TF
    from PIL import Image

    img = _image(48, 64)
    pil = Image.fromarray(img)
    ref = np.asarray(TF.resized_crop(pil, 5, 7, 30, 41, [24, 24], interpolation=T.InterpolationMode.BILINEAR))
    np.testing.assert_array_equal(streaming.resized_crop(img, 5, 7, 30, 41, 24), ref)
    # eval: Resize(size / 0.875) of the shorter side, then CenterCrop(size)
    ref = np.asarray(T.Compose([T.Resize(36), T.CenterCrop(32)])(pil))
    np.testing.assert_array_equal(streaming.eval_transform(img, 32), ref)


def test_random_resized_crop_box_respects_scale_ratio_and_bounds():
    rng = np.random.default_rng(0)
    for _ in range(500):
        top, left, h, w = streaming.random_resized_crop_box(60, 80, rng)
        assert 0 <= top and top + h <= 60 and 0 <= left and left + w <= 80
        assert 0.08 * 4800 * 0.8 <= h * w <= 4800
    # an extreme aspect never fits: torchvision's fallback is a center crop, aspect clamped
    top, left, h, w = streaming.random_resized_crop_box(10, 1000, np.random.default_rng(0), scale=(0.99, 1.0))
    assert (h, w) == (10, round(10 * 4 / 3)) and left == (1000 - w) // 2 and top == 0


@needs_cifar
def test_loader_shards_are_disjoint_ordered_and_labels_stay_with_images():
    import tensorflow_datasets as tfds

    src = tfds.data_source("cifar10", data_dir=SHARED_TFDS, split="train[:96]")
    loaders = [
        streaming.StreamingLoader(
            "cifar10",
            "train[:96]",
            SHARED_TFDS,
            32,
            16,
            train=False,
            workers=0,
            process_index=i,
            process_count=2,
        )
        for i in range(2)
    ]
    shards = [set(loader.shard.tolist()) for loader in loaders]
    assert not shards[0] & shards[1] and shards[0] | shards[1] == set(range(96))
    images, labels, valid = next(loaders[1].batches())
    assert valid.all() and images.shape == (16, 32, 32, 3)
    for k, idx in enumerate(loaders[1].shard[:16]):
        assert labels[k] == src[int(idx)]["label"]
        np.testing.assert_array_equal(
            images[k], streaming.eval_transform(np.asarray(src[int(idx)]["image"]), 32)
        )
    train = streaming.StreamingLoader(
        "cifar10", "train[:96]", SHARED_TFDS, 32, 16, train=True, workers=0, seed=3
    )
    a = next(train.batches(start_step=4))
    b = next(train.batches(start_step=4))  # resuming at a step gives the same batch
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@needs_cifar
def test_streaming_training_run_with_worker_processes(tmp_path):
    sys.path.insert(0, ROOT)
    from configs.cifar10 import get_config
    from inception_jax import train as training

    c = get_config()
    c.data_dir = SHARED_TFDS
    c.train_split, c.eval_split = "train[:256]", "train[45000:45128]"
    c.pipeline, c.pipeline_workers = "streaming", 1
    c.batch_size, c.num_epochs, c.log_every_steps = 64, 1, 2
    c.compilation_cache_dir = ""
    out = training.train_and_evaluate(c, str(tmp_path))
    assert out["step"] == 4
    assert os.path.exists(tmp_path / "checkpoints" / "4")
    # the streamed evaluation (worker processes, eval transform, masked batches, summed
    # metrics) equals the final state applied by hand to the same 128 records, resized
    # and cropped by torchvision (Resize(36) + CenterCrop(32), the 0.875 crop)
    import tensorflow_datasets as tfds
    import torchvision.transforms as T
    from PIL import Image

    src = tfds.data_source("cifar10", split=c.eval_split, data_dir=SHARED_TFDS)
    crop = T.Compose([T.Resize(36), T.CenterCrop(32)])
    images = np.stack(
        [np.asarray(crop(Image.fromarray(np.asarray(src[i]["image"])))) for i in range(len(src))]
    )
    labels = np.array([int(src[i]["label"]) for i in range(len(src))])
    x = (images / 255.0 - np.array(c.mean)) / np.array(c.std)
    model = training.build_model(c, 10).clone(axis_name=None)
    logits = np.asarray(
        model.apply(
            {"params": out["state"].params, "batch_stats": out["state"].batch_stats}, x.astype(np.float32)
        ),
        np.float64,
    )
    accuracy, loss = accuracy_and_loss(logits, labels)
    assert out["eval_accuracy"] == pytest.approx(accuracy, abs=1e-9)
    assert out["eval_loss"] == pytest.approx(loss, rel=1e-4)


@needs_cifar
def test_a_killed_decoding_worker_is_replaced_and_the_batches_do_not_change():
    import signal

    kw = dict(
        dataset="cifar10",
        split="train[:96]",
        data_dir=SHARED_TFDS,
        image_size=32,
        batch_size=16,
        train=True,
        seed=1,
    )
    expected = streaming.StreamingLoader(workers=0, **kw).batches(start_step=2)
    loader = streaming.StreamingLoader(workers=1, prefetch=2, **kw)
    got = loader.batches(start_step=2)
    try:
        first = next(got)
        for proc in loader._pool._processes.values():
            os.kill(proc.pid, signal.SIGKILL)
        batches = [first] + [next(got) for _ in range(3)]
    finally:
        loader.close()
    assert loader.restarts == 1
    for a, b in zip(batches, [next(expected) for _ in range(4)]):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
