"""Input pipelines: tfds ``data_source`` readers, in-memory device datasets and
on-device augmentation. No TensorFlow is imported at training time."""

from inception_jax.data.source import DatasetMissingError, InMemoryDataset, load_in_memory

__all__ = ["DatasetMissingError", "InMemoryDataset", "load_in_memory"]
