"""Reading prepared tensorflow-datasets (ArrayRecord) with ``tfds.data_source``.

``tfds.load`` / tf.data cannot read ArrayRecord files and would make TensorFlow a
training dependency; ``tfds.data_source`` needs only pillow to decode. Small
datasets (CIFAR) are decoded once, in parallel threads, and cached as ``.npz``
under ``cache_dir`` so later runs start in well under a second.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import os
import re
from typing import Optional

import numpy as np
import tqdm

from inception_jax.checkpoint.integrity import write_atomic
from inception_jax.errors import first_line

PREPARE_HINT = (
    "prepare it with: pip install -e '.[prepare]' && python -m inception_jax.data.prepare "
    "--dataset {dataset} --data_dir {data_dir}"
)


class DatasetMissingError(ValueError):
    """The dataset / split is not prepared under ``data_dir``."""


@dataclasses.dataclass
class InMemoryDataset:
    images: np.ndarray  # uint8 (N, H, W, C)
    labels: np.ndarray  # int32 (N,)
    num_classes: int
    skipped: int = 0  # undecodable records skipped (bad_records="skip")

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _data_source(dataset: str, split: str, data_dir: Optional[str]):
    import tensorflow_datasets as tfds

    searched = data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
    folder = os.path.join(os.path.expanduser(searched), dataset.split("/")[0].split(":")[0])
    if not os.path.isdir(folder):
        raise DatasetMissingError(
            f"dataset {dataset!r} is not prepared: {folder} does not exist; "
            + PREPARE_HINT.format(dataset=dataset, data_dir=searched)
        )
    try:
        return tfds.data_source(dataset, split=split, data_dir=data_dir, download=False)
    except Exception as e:  # tfds raises several types for a missing dataset or split
        reason = first_line(e)
        if re.search(r"split|Split", reason) and "not" in reason.lower():
            raise DatasetMissingError(
                f"dataset {dataset!r} has no split {split!r} in data_dir {searched!r} ({reason}); "
                "pick an existing split, e.g. --config.eval_split='train[45000:]'"
            ) from None
        raise DatasetMissingError(
            f"dataset {dataset!r} (split {split!r}) is not prepared in data_dir {searched!r} "
            f"({reason}); " + PREPARE_HINT.format(dataset=dataset, data_dir=searched)
        ) from None


def _decoded_key(source, dataset: str, split: str, data_dir: Optional[str], bad_records: str) -> str:
    """The decoded-split cache key: the request, the dataset's files as they are now
    (name, size, modification: a dataset rewritten in place is decoded again) and the
    decoding code (this module, numpy and pillow)."""
    import PIL

    files = []
    folder = str(source.dataset_info.data_dir)
    for name in sorted(os.listdir(folder)):
        st = os.stat(os.path.join(folder, name))
        files.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
    with open(__file__, "rb") as f:
        code = hashlib.sha256(f.read()).hexdigest()
    parts = [
        os.path.abspath(os.path.expanduser(data_dir or "")),
        dataset,
        split,
        str(len(source)),
        bad_records,
        folder,
        *files,
        code,
        np.__version__,
        PIL.__version__,
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _decode_chunk(source, start: int, stop: int, bad_records: str):
    images, labels, skipped = [], [], 0
    try:
        records = source.__getitems__(list(range(start, stop)))
    except Exception:
        records = None
    if records is None:  # a bad record in the chunk: go one by one
        records = []
        for i in range(start, stop):
            try:
                records.append(source[i])
            except Exception as e:
                if bad_records != "skip":
                    raise ValueError(
                        f"record {i} could not be decoded ({type(e).__name__}: {first_line(e, limit=120)}); "
                        "set --config.bad_records=skip to count and skip such records"
                    ) from None
                skipped += 1
    for r in records:
        images.append(np.asarray(r["image"], np.uint8))
        labels.append(int(r["label"]))
    return images, labels, skipped


def load_in_memory(
    dataset: str,
    split: str,
    data_dir: Optional[str],
    cache_dir: Optional[str] = None,
    bad_records: str = "error",
    threads: int = 8,
    chunk: int = 1000,
) -> InMemoryDataset:
    """Decodes a whole tfds split into memory (cached as .npz under ``cache_dir``)."""
    if bad_records not in ("error", "skip"):
        raise ValueError(f"bad_records={bad_records!r}: expected 'error' or 'skip'")
    source = _data_source(dataset, split, data_dir)
    num_classes = int(source.dataset_info.features["label"].num_classes)
    cache_path = None
    if cache_dir:
        key = _decoded_key(source, dataset, split, data_dir, bad_records)
        cache_path = os.path.join(os.path.expanduser(cache_dir), f"{dataset}-{key}.npz")
        if os.path.exists(cache_path):
            try:
                with np.load(cache_path) as f:
                    return InMemoryDataset(f["images"], f["labels"], num_classes, int(f["skipped"]))
            except Exception:
                pass  # a broken cache file is rebuilt below
    n = len(source)
    bounds = [(s, min(s + chunk, n)) for s in range(0, n, chunk)]
    parts = [None] * len(bounds)
    # a progress bar on stderr: the first decode of CIFAR-10 takes a minute or more
    with (
        concurrent.futures.ThreadPoolExecutor(threads) as pool,
        tqdm.tqdm(
            total=n, desc=f"Decoding {dataset} {split}", unit="img", mininterval=1.0, disable=n < 2 * chunk
        ) as bar,
    ):
        futures = {
            pool.submit(_decode_chunk, source, lo, hi, bad_records): i for i, (lo, hi) in enumerate(bounds)
        }
        for future in concurrent.futures.as_completed(futures):
            i = futures[future]
            parts[i] = future.result()
            bar.update(bounds[i][1] - bounds[i][0])
    images = np.stack([im for p in parts for im in p[0]]) if n else np.zeros((0, 1, 1, 3), np.uint8)
    labels = np.asarray([lb for p in parts for lb in p[1]], np.int32)
    skipped = sum(p[2] for p in parts)
    if cache_path:
        os.makedirs(os.path.dirname(cache_path), exist_ok=True)
        write_atomic(cache_path, lambda f: np.savez(f, images=images, labels=labels, skipped=skipped))
    return InMemoryDataset(images, labels, num_classes, skipped)


def synthetic(
    num_examples: int, image_size: int, num_classes: int, seed: int = 0, split_seed: int = 0
) -> InMemoryDataset:
    """A learnable synthetic dataset: each class is a noisy colour/brightness pattern.
    The class patterns depend on ``seed`` only; ``split_seed`` draws other examples
    of the same classes (a held-out split)."""
    prototypes = np.random.RandomState(seed).randint(0, 256, (num_classes, 1, 1, 3)).astype(np.float32)
    rng = np.random.RandomState([seed, split_seed + 1])
    labels = rng.randint(0, num_classes, num_examples).astype(np.int32)
    gradient = np.linspace(-40, 40, image_size, dtype=np.float32)[None, :, None, None]
    noise = rng.normal(0, 30, (num_examples, image_size, image_size, 3)).astype(np.float32)
    images = prototypes[labels] + gradient * (labels[:, None, None, None] % 2 * 2 - 1) + noise
    return InMemoryDataset(np.clip(images, 0, 255).astype(np.uint8), labels, num_classes)
