"""The decoded in-memory copy of a tfds split (inception_jax/data/source.py) is
reused only while the dataset's files are the ones it was decoded from."""

import shutil

import numpy as np
import synthetic_data
import tensorflow_datasets as tfds

from inception_jax.data import source


def test_a_dataset_rewritten_in_place_with_the_same_size_is_decoded_again(tmp_path):
    data, cache = tmp_path / "tfds", tmp_path / "decoded"
    synthetic_data.write_cifar10(str(data), num_examples=24, seed=0)
    first = source.load_in_memory("cifar10", "train", str(data), cache_dir=str(cache))
    shutil.rmtree(data)
    synthetic_data.write_cifar10(str(data), num_examples=24, seed=1)  # same size, other images
    second = source.load_in_memory("cifar10", "train", str(data), cache_dir=str(cache))
    # the reference: tfds's own decode of the records now on disk
    src = tfds.data_source("cifar10", split="train", data_dir=str(data))
    expected = np.stack([np.asarray(src[i]["image"]) for i in range(len(src))])
    np.testing.assert_array_equal(second.images, expected)
    assert not np.array_equal(first.images, second.images)
    # unchanged files: the cached copy is read back
    third = source.load_in_memory("cifar10", "train", str(data), cache_dir=str(cache))
    np.testing.assert_array_equal(third.images, expected)
    assert len(list(cache.iterdir())) == 2
