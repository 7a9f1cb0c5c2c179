"""FID activations: inception_jax against pytorch-fid, same weights, same images, same
machine, run alternately; prints images/s after warm-up and the whole command's
cold time.

    python benchmarks/fid_speed.py                      # 400 CIFAR-10 images, batch 50, 2048-d
    python benchmarks/fid_speed.py --images 200 --synthetic --rounds 1

Each run is a fresh Python process that reads a folder of PNGs (CIFAR-10's first
``--images`` training images at 32x32 from the tfds data directory
``$INCEPTION_JAX_CIFAR_DIR`` (default ``~/tensorflow_datasets``), or random ones with
``--synthetic`` or where there is none), loads
the FID network from one ``.pth`` in pytorch-fid's format (pytorch-fid's own
``fid_inception_v3`` with random weights and BatchNorm statistics: the real file is a
download), resizes every image to 299x299 and computes its ``--dims`` activations at
``--batch-size``:

* cold s: from launching the process to the last activation of the first pass
  (interpreter start, imports, loading the weights, compiling, reading the images).
  inception_jax's is measured twice: with an empty persistent compilation cache
  and with the one the first run filled (``--jax-cache``).
* img/s: a second pass over the same images in the same process, after warm-up.

Both run as their command lines do: pytorch-fid with ``num_workers`` = min(CPUs, 8)
data-loader processes, torch's default threads, float32 on the CPU; inception_jax
with ``backends.cpu_inference.single_arena`` (``--default-malloc``: without it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# a prepared tfds data directory holding cifar10
CIFAR = os.path.expanduser(os.environ.get("INCEPTION_JAX_CIFAR_DIR", "~/tensorflow_datasets"))


def _child(args) -> None:
    """One measured process: prints a JSON line {"cold_s", "img_s"}."""
    files = sorted(os.path.join(args.folder, f) for f in os.listdir(args.folder))
    if args.child == "torch":
        import torch
        from pytorch_fid import fid_score
        from pytorch_fid import inception as pfi

        pfi.load_state_dict_from_url = lambda *a, **k: torch.load(args.weights)  # our file, not a download
        model = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[args.dims]]).eval()
        workers = min(len(os.sched_getaffinity(0)), 8)

        def run():
            fid_score.get_activations(files, model, args.batch_size, args.dims, "cpu", workers)

    else:
        from inception_jax import fid
        from inception_jax.backends import cpu_inference

        if not args.default_malloc:
            cpu_inference.single_arena()  # as the FID command line does
        import jax

        if args.jax_cache:
            jax.config.update("jax_compilation_cache_dir", args.jax_cache)
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        net = fid.FIDNetwork.load(args.weights)

        def run():
            fid.activations(net, files, dims=args.dims, batch_size=args.batch_size)

    run()
    cold = time.time() - args.t0
    start = time.perf_counter()
    run()
    print(json.dumps({"cold_s": cold, "img_s": len(files) / (time.perf_counter() - start)}))


def _write_images(folder: str, n: int, synthetic: bool) -> str:
    import numpy as np
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    if synthetic or not os.path.isdir(CIFAR):
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        source = "synthetic 32x32"
    else:
        import tensorflow_datasets as tfds

        data = tfds.data_source("cifar10", data_dir=CIFAR, split=f"train[:{n}]")
        images = [data[i]["image"] for i in range(n)]
        source = "CIFAR-10 train 32x32"
    for i, image in enumerate(images):
        Image.fromarray(np.asarray(image)).save(os.path.join(folder, f"{i:05d}.png"))
    return source


def _write_weights(path: str) -> None:
    """pytorch-fid's fid_inception_v3 with random weights and BatchNorm statistics."""
    import torch

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from torch_refs import pytorch_fid_network

    torch.save(pytorch_fid_network().state_dict(), path)


def _measure(which: str, args, folder: str, weights: str, cache: str = "") -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", which, "--folder", folder]
    cmd += ["--weights", weights, "--dims", str(args.dims), "--batch-size", str(args.batch_size)]
    if cache:
        cmd += ["--jax-cache", cache]
    if args.default_malloc:
        cmd += ["--default-malloc"]
    env = dict(
        os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")
    )
    out = subprocess.run(cmd + ["--t0", repr(time.time())], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{which} run failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--dims", type=int, default=2048)
    p.add_argument("--rounds", type=int, default=2, help="alternations of the two")
    p.add_argument("--synthetic", action="store_true", help="random images instead of CIFAR-10")
    p.add_argument(
        "--default-malloc", action="store_true", help="inception_jax without cpu_inference.single_arena"
    )
    p.add_argument("--child", choices=("torch", "jax"), help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    p.add_argument("--weights", help=argparse.SUPPRESS)
    p.add_argument("--jax-cache", default="", help=argparse.SUPPRESS)
    p.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return _child(args)

    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "images")
        source = _write_images(folder, args.images, args.synthetic)
        weights = os.path.join(tmp, "pt_inception-2015-12-05-6726825d.pth")
        _write_weights(weights)
        rows = {"pytorch-fid": [], "inception_jax": [], "inception_jax, cache filled": []}
        for r in range(args.rounds):
            cache = os.path.join(tmp, f"cache{r}")  # empty for each round's first jax run
            rows["pytorch-fid"].append(_measure("torch", args, folder, weights))
            rows["inception_jax"].append(_measure("jax", args, folder, weights, cache))
            rows["inception_jax, cache filled"].append(_measure("jax", args, folder, weights, cache))
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]}" for k, v in rows.items()), file=sys.stderr)

    print(f"{args.images} images ({source}) resized to 299, {args.dims}-d, batch {args.batch_size}, CPU")
    print(f"{'':<30}{'img/s (each round)':>24}{'cold s (each round)':>24}")
    for name, runs in rows.items():
        speeds = "/".join(f"{r['img_s']:.2f}" for r in runs)
        colds = "/".join(f"{r['cold_s']:.1f}" for r in runs)
        print(f"{name:<30}{speeds:>24}{colds:>24}")
    medians = {k: statistics.median(r["img_s"] for r in v) for k, v in rows.items()}
    print("median img/s: " + ", ".join(f"{k} {v:.2f}" for k, v in medians.items()))


if __name__ == "__main__":
    main()
