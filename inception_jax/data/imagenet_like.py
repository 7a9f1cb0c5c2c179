"""An ImageNet-like prepared tfds dataset, built without TensorFlow, for benchmarks and tests.

It is written as ``imagenet2012`` (tfds's own features: JPEG ``image``, ``label`` of
1000 classes, ``file_name``; splits ``train`` and ``validation``), so the ImageNet
configs read it unchanged with ``--config.data_dir=DIR``. The images are CIFAR-10
records of ``--cifar_dir`` resized to 500x375 (bicubic), with mild noise so that the
JPEGs (quality 90) cost about as much to decode as photographs; labels are CIFAR's.

    python -m inception_jax.data.imagenet_like --data_dir /tmp/imagenet_like \\
        --cifar_dir ~/tensorflow_datasets --train 2000 --validation 200

tfds writes it (ArrayRecord) with no TensorFlow because the images are handed over
already encoded.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from typing import Optional

import numpy as np

WIDTH, HEIGHT, QUALITY = 500, 375, 90


def _jpeg(image: np.ndarray, rng: np.random.Generator) -> io.BytesIO:
    from PIL import Image

    big = np.asarray(Image.fromarray(image).resize((WIDTH, HEIGHT), Image.BICUBIC), np.float32)
    big += rng.normal(0.0, 6.0, big.shape).astype(np.float32)
    buf = io.BytesIO()
    Image.fromarray(np.clip(big, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=QUALITY)
    buf.seek(0)
    return buf


def build(
    data_dir: str, cifar_dir: str, num_train: int = 2000, num_validation: int = 200, seed: int = 0
) -> str:
    """Writes ``imagenet2012`` into ``data_dir`` (kept if already there with the same
    sizes) and returns the dataset's directory."""
    import tensorflow_datasets as tfds

    from inception_jax.data.source import _data_source

    cifar = _data_source("cifar10", "train", cifar_dir)
    if num_train + num_validation > len(cifar):
        raise ValueError(
            f"num_train + num_validation = {num_train + num_validation}: the CIFAR copy has "
            f"{len(cifar)} records; ask for fewer"
        )
    base = tfds.builder_cls("imagenet2012")

    class ImagenetLike(base, skip_registration=True):
        name = "imagenet2012"
        # a one-part module name: tfds then skips locating the builder's source file in
        # the package, which needs importlib_resources, a module tfds does not install
        __module__ = "imagenet_like"

        def _split_generators(self, dl_manager):
            return {
                "train": self._generate_examples(0, num_train),
                "validation": self._generate_examples(num_train, num_train + num_validation),
            }

        def _generate_examples(self, start, stop):  # noqa: D401  (tfds's signature is free)
            rng = np.random.default_rng([seed, start])
            for i in range(start, stop):
                record = cifar[i]
                yield (
                    f"{i:06d}",
                    {
                        "image": _jpeg(np.asarray(record["image"], np.uint8), rng),
                        "label": int(record["label"]),
                        "file_name": f"cifar_{i:06d}.JPEG",
                    },
                )

    builder = ImagenetLike(data_dir=os.path.expanduser(data_dir), file_format="array_record")
    if builder.is_prepared():
        splits = builder.info.splits
        if splits["train"].num_examples == num_train and splits["validation"].num_examples == num_validation:
            return builder.data_dir
        raise ValueError(
            f"data_dir {data_dir!r} already holds an imagenet2012 of other sizes; pick another --data_dir"
        )
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=os.path.join(data_dir, "unused"))
    )
    return builder.data_dir


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--data_dir", required=True, help="where to write imagenet2012/")
    parser.add_argument("--cifar_dir", required=True, help="a tfds data_dir holding a prepared cifar10")
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--validation", type=int, default=200)
    args = parser.parse_args(argv)
    try:
        path = build(args.data_dir, args.cifar_dir, args.train, args.validation)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
