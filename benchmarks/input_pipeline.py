"""Images/s of the streaming (grain) training pipeline, beside its single-process limit.

Builds an ImageNet-like prepared tfds dataset (``inception_jax.data.imagenet_like``:
JPEGs of 500x375 at quality 90 made from the CIFAR copy) if it is not there, then
measures at ``--image-size``:

* the limit: decode + random-resized crop + resize + flip of the same records in this
  one process, no grain, no batching;
* the training pipeline (``StreamingLoader``, train=True) with each ``--workers`` count,
  batches taken as fast as they come (after two warm-up batches).

    python benchmarks/input_pipeline.py --workers 1,2 --json results.json

``--json PATH`` writes ``[{"workers": n, "img_per_s": x, "limit_img_per_s": y}, ...]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from inception_jax.data import imagenet_like, streaming, transforms  # noqa: E402


def limit(data_dir: str, size: int, n: int) -> float:
    """Single-process images/s of decode + train transform (the pipeline's own work)."""
    src = streaming._open_source("imagenet2012", "train", data_dir)
    src[0]  # open the files
    t = time.perf_counter()
    for i in range(n):
        image = np.asarray(src[i % len(src)]["image"], np.uint8)
        transforms.train_transform(image, size, np.random.default_rng([0, 0, i]))
    return n / (time.perf_counter() - t)


def pipeline(data_dir: str, size: int, batch: int, workers: int, batches: int) -> float:
    loader = streaming.StreamingLoader(
        "imagenet2012", "train", data_dir, size, batch, train=True, workers=workers
    )
    it = loader.iterator()
    try:
        for _ in range(2):  # worker start-up is not throughput
            next(it)
        t = time.perf_counter()
        for _ in range(batches):
            next(it)
        return batches * batch / (time.perf_counter() - t)
    finally:
        it.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data-dir", default=os.path.join("/tmp", "inception_jax_imagenet_like"))
    p.add_argument(
        "--cifar-dir",
        default=os.path.expanduser(os.environ.get("INCEPTION_JAX_CIFAR_DIR", "~/tensorflow_datasets")),
        help="a prepared tfds data directory holding cifar10",
    )
    p.add_argument("--num-train", type=int, default=2000)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--batches", type=int, default=25, help="timed batches per workers count")
    p.add_argument("--limit-images", type=int, default=400)
    p.add_argument("--workers", default="1,2")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", default="")
    args = p.parse_args()

    t = time.perf_counter()
    path = imagenet_like.build(args.data_dir, args.cifar_dir, args.num_train, 200)
    files = [os.path.join(path, f) for f in os.listdir(path) if "train.array_record" in f]
    mean_kb = sum(os.path.getsize(f) for f in files) / args.num_train / 1024
    print(
        f"dataset: {path} ({args.num_train} train JPEGs 500x375 q90, {mean_kb:.0f} KB a record; "
        f"{time.perf_counter() - t:.1f} s to build or open)"
    )
    # this machine's speed drifts by +-20% within minutes: measure in rounds that
    # alternate the limit and each workers count, and report medians
    workers = [int(x) for x in args.workers.split(",")]
    limits, rates = [], {w: [] for w in workers}
    for r in range(args.rounds):
        limits.append(limit(args.data_dir, args.image_size, args.limit_images))
        for w in workers:
            rates[w].append(pipeline(args.data_dir, args.image_size, args.batch_size, w, args.batches))
        print(
            f"round {r + 1}: limit {limits[-1]:,.0f} img/s; "
            + "; ".join(f"workers {w}: {rates[w][-1]:,.0f}" for w in workers)
        )
    one = float(np.median(limits))
    print(f"limit (1 process, decode + crop + resize + flip at {args.image_size}, median): {one:,.0f} img/s")
    rows = []
    for w in workers:
        rate = float(np.median(rates[w]))
        rows.append({"workers": w, "img_per_s": round(rate, 1), "limit_img_per_s": round(one, 1)})
        goal = 0.9 * max(w, 1) * one
        print(
            f"workers {w} (median): {rate:,.0f} img/s = {rate / (max(w, 1) * one):.2f} x workers x limit "
            f"(goal >= 0.90, {goal:,.0f} img/s)"
        )
    print(
        f"cores to feed googlenet at 13,000 img/s on one GPU: {13000 / one:.0f} "
        f"(13,000 / the single-process limit of {one:,.0f} img/s)"
    )
    print(f"host cores here: {os.cpu_count()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
