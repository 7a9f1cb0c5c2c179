"""The streaming (ImageNet-style) grain pipeline against torchvision's transforms and
the tfds source, its sharding over processes, and a short streaming training run; the
records are the synthetic cifar10 of synthetic_data.py (fixture synthetic_cifar)."""

import os
import sys

import numpy as np
import pytest
from numerics import accuracy_and_loss

from inception_jax.data import streaming, transforms

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _image(h, w, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3)).astype(np.uint8)


def test_resized_crop_and_eval_transform_match_torchvision():
    pytest.importorskip("torchvision")
    import torchvision.transforms as T
    import torchvision.transforms.functional as TF
    from PIL import Image

    img = _image(48, 64)
    pil = Image.fromarray(img)
    ref = np.asarray(TF.resized_crop(pil, 5, 7, 30, 41, [24, 24], interpolation=T.InterpolationMode.BILINEAR))
    np.testing.assert_array_equal(transforms.resized_crop(img, 5, 7, 30, 41, 24), ref)
    # eval: Resize(size / 0.875) of the shorter side, then CenterCrop(size)
    ref = np.asarray(T.Compose([T.Resize(36), T.CenterCrop(32)])(pil))
    np.testing.assert_array_equal(transforms.eval_transform(img, 32), ref)


def test_random_resized_crop_box_respects_scale_ratio_and_bounds():
    rng = np.random.default_rng(0)
    for _ in range(500):
        top, left, h, w = transforms.random_resized_crop_box(60, 80, rng)
        assert 0 <= top and top + h <= 60 and 0 <= left and left + w <= 80
        assert 0.08 * 4800 * 0.8 <= h * w <= 4800
    # an extreme aspect never fits: torchvision's fallback is a center crop, aspect clamped
    top, left, h, w = transforms.random_resized_crop_box(
        10, 1000, np.random.default_rng(0), scale=(0.99, 1.0)
    )
    assert (h, w) == (10, round(10 * 4 / 3)) and left == (1000 - w) // 2 and top == 0


def _source(data_dir, split):
    import tensorflow_datasets as tfds

    return tfds.data_source("cifar10", data_dir=data_dir, split=split)


def test_grain_batches_are_the_per_example_transforms_in_reshuffled_epochs(synthetic_cifar):
    """Every streamed example equals the host transform applied to its record with the
    generator seeded (seed, epoch, record index), as the pipeline before grain did; the
    labels stay with their images; each epoch is a new permutation of the shard."""
    src = _source(synthetic_cifar, "train[:96]")
    loader = streaming.StreamingLoader(
        "cifar10", "train[:96]", synthetic_cifar, 24, 16, train=True, seed=3, workers=2
    )
    it = loader.iterator()
    try:
        batches = [next(it) for _ in range(2 * loader.steps_per_epoch)]
    finally:
        it.close()
    epochs = []
    for step, batch in enumerate(batches):
        epoch = step // loader.steps_per_epoch
        if step % loader.steps_per_epoch == 0:
            epochs.append([])
        for k, index in enumerate(np.asarray(batch["index"]).tolist()):
            epochs[-1].append(index)
            image = np.asarray(src[index]["image"])
            expected = transforms.train_transform(image, 24, np.random.default_rng([3, epoch, index]))
            np.testing.assert_array_equal(np.asarray(batch["image"])[k], expected)
            assert int(batch["label"][k]) == int(src[index]["label"]) and bool(batch["valid"][k])
    assert sorted(epochs[0]) == list(range(96)) == sorted(epochs[1]) and epochs[0] != epochs[1]


def test_a_restored_iterator_continues_at_the_same_example_with_any_worker_count(synthetic_cifar):
    kw = dict(
        dataset="cifar10",
        split="train[:96]",
        data_dir=synthetic_cifar,
        image_size=16,
        batch_size=16,
        train=True,
    )
    it = streaming.StreamingLoader(workers=2, **kw).iterator()
    try:
        for _ in range(4):
            next(it)
        state = it.get_state()
        expected = [next(it) for _ in range(5)]  # crosses into the second epoch
    finally:
        it.close()
    for workers in (2, 1, 0):
        again = streaming.StreamingLoader(workers=workers, **kw).iterator()
        try:
            again.set_state(state)
            assert again.position == 4
            for want in expected:
                got = next(again)
                for key in ("index", "image", "label"):
                    np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(want[key]))
        finally:
            again.close()


def test_eval_shards_cover_every_example_once_and_run_the_same_number_of_batches(synthetic_cifar):
    """101 examples over 2 processes (51 + 50) and over 3 (34 + 34 + 33), batch 16:
    every process runs the same number of batches; the smaller shards end in masked
    padding; together they hold each record once, evaluated with the eval transform."""
    src = _source(synthetic_cifar, "train[:101]")
    for count in (2, 3):
        seen, lengths = [], set()
        for index in range(count):
            loader = streaming.StreamingLoader(
                "cifar10",
                "train[:101]",
                synthetic_cifar,
                32,
                16,
                train=False,
                workers=0,
                process_index=index,
                process_count=count,
            )
            batches = list(loader.batches())
            lengths.add(len(batches))
            for b in batches:
                valid = np.asarray(b["valid"])
                assert (np.asarray(b["index"])[~valid] == streaming.PAD).all()
                for k in np.flatnonzero(valid):
                    i = int(b["index"][k])
                    seen.append(i)
                    assert int(b["label"][k]) == int(src[i]["label"])
                    if i % 17 == 0:
                        np.testing.assert_array_equal(
                            np.asarray(b["image"])[k],
                            transforms.eval_transform(np.asarray(src[i]["image"]), 32),
                        )
        assert len(lengths) == 1, (count, lengths)
        assert sorted(seen) == list(range(101))


@pytest.mark.slow  # 35 s: a train.py run; the kill test and the ImageNet config tests stream too
def test_streaming_training_run_with_worker_processes(synthetic_cifar, tmp_path):
    pytest.importorskip("torchvision")
    sys.path.insert(0, ROOT)
    from configs.cifar10 import get_config
    from inception_jax import train as training

    c = get_config()
    c.data_dir = synthetic_cifar
    c.train_split, c.eval_split = "train[:256]", "train[384:512]"
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

    src = tfds.data_source("cifar10", split=c.eval_split, data_dir=synthetic_cifar)
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


def test_a_killed_decoding_worker_is_replaced_and_the_batches_do_not_change(synthetic_cifar):
    import multiprocessing
    import signal

    kw = dict(
        dataset="cifar10",
        split="train[:96]",
        data_dir=synthetic_cifar,
        image_size=16,
        batch_size=16,
        train=True,
    )
    expected = streaming.StreamingLoader(workers=0, **kw).batches(start_step=2)
    it = streaming.StreamingLoader(workers=1, **kw).iterator()
    it.seek(2)
    try:
        got = [next(it)]
        for proc in multiprocessing.active_children():
            os.kill(proc.pid, signal.SIGKILL)
        got += [next(it) for _ in range(3)]
    finally:
        it.close()
    assert it.restarts == 1 and it.position == 6
    for a, b in zip(got, [next(expected) for _ in range(4)]):
        for key in ("index", "image", "label"):
            np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]))
