"""Prepare a tfds dataset in ArrayRecord format (needs TensorFlow: the ``prepare`` extra).

    pip install -e '.[prepare]'
    python -m inception_jax.data.prepare --dataset cifar10 --data_dir ~/tensorflow_datasets
    # ImageNet: put the manual download (ILSVRC2012_img_{train,val}.tar) in
    # <data_dir>/downloads/manual first, then --dataset imagenet2012

Training itself reads the result with ``tfds.data_source`` and never imports TensorFlow.
"""

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--dataset", required=True, help="tfds name, e.g. cifar10, imagenet2012")
    parser.add_argument("--data_dir", required=True, help="where to write the prepared dataset")
    args = parser.parse_args(argv)
    try:
        import tensorflow  # noqa: F401  (tfds needs it to prepare)
    except ImportError:
        print("error: preparing a dataset needs TensorFlow: pip install -e '.[prepare]'", file=sys.stderr)
        return 2
    import tensorflow_datasets as tfds

    builder = tfds.builder(args.dataset, data_dir=args.data_dir, file_format="array_record")
    builder.download_and_prepare(file_format="array_record")
    print(f"prepared {args.dataset} in {builder.data_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
