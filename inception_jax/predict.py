"""Top-k ImageNet classes of images with pretrained weights.

    python -m inception_jax.predict --model googlenet --weights googlenet-1378be20.pth cat.jpg
    python -m inception_jax.predict --model inception_v3 --json --top 5 a.jpg b.png

Each image goes through the weights' reference eval transform
(:func:`inception_jax.weights.preprocess`) and the model in eval mode; the
softmax of the logits gives the probabilities. ``--weights`` takes a
``.pth``/``.pt``/``.bin``/``.safetensors`` state_dict of the reference model or a
``save_pretrained`` directory; without it the public weights are taken from the
torch hub / Hugging Face caches (downloaded when online). ``--json`` prints
``[{"image": path, "top5": [{"index": i, "label": name, "prob": p}, ...]}, ...]``
(the key is ``top<K>``). Bad input (missing or undecodable image, unknown model,
weights for another model) prints one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

EXIT_BAD_INPUT = 2


def _fail(message: str) -> int:
    print(f"predict: error: {' '.join(str(message).split())}", file=sys.stderr)
    return EXIT_BAD_INPUT


class _ArgumentError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line (instead of usage + message), exit status 2
        raise _ArgumentError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m inception_jax.predict",
        description="Top-k ImageNet classes of images with pretrained Inception weights.",
    )
    parser.add_argument(
        "--model",
        required=True,
        help="googlenet, inception_v3, inception_v4, inception_resnet_v2, bn_inception",
    )
    parser.add_argument(
        "--weights",
        default=None,
        help=".pth/.pt/.bin/.safetensors state_dict or a save_pretrained "
        "directory (default: the public weights from the download cache)",
    )
    parser.add_argument("--top", type=int, default=5, help="classes per image (default 5)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    parser.add_argument(
        "--no-download",
        action="store_true",
        help="without --weights: only use cached weights, never download",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    return parser


@functools.lru_cache(maxsize=1)
def _softmax_jit():
    import jax

    def probs(model, variables, x):
        return jax.nn.softmax(model.apply(variables, x, train=False), axis=-1)

    return jax.jit(probs, static_argnums=0)  # compiled once per (model, input shape)


def predict(
    model, variables, batch: np.ndarray, top: int, batch_size: int = 16, label_offset: int = 0
) -> list[list[dict[str, Any]]]:
    """Top-``top`` (index, label, prob) of each preprocessed image in ``batch``."""
    from inception_jax.weights import imagenet_classes

    classes = imagenet_classes()
    apply = functools.partial(_softmax_jit(), model)
    probs = []
    for start in range(0, len(batch), batch_size):
        chunk = batch[start : start + batch_size]
        n = len(chunk)
        if n < batch_size and len(batch) > batch_size:  # one compiled shape
            chunk = np.concatenate([chunk, np.zeros((batch_size - n,) + chunk.shape[1:], chunk.dtype)])
        probs.append(np.asarray(apply(variables, chunk))[:n])
    probs = np.concatenate(probs).astype(np.float64)
    results = []
    for p in probs:
        order = np.argsort(-p, kind="stable")[:top]
        rows = []
        for i in order:
            idx = int(i) - label_offset
            label = classes[idx] if 0 <= idx < len(classes) else ("background" if idx < 0 else f"class {idx}")
            rows.append({"index": idx, "label": label, "prob": float(p[i])})
        results.append(rows)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except _ArgumentError as e:
        return _fail(f"{e} (see --help)")

    from inception_jax import models
    from inception_jax.weights import load_pretrained, preprocess, pretrained_config

    try:
        info = models.get_info(args.model)
        if args.top < 1 or args.batch_size < 1:
            raise ValueError(f"--top and --batch-size must be positive, got {args.top} and {args.batch_size}")
        cfg = pretrained_config(args.model)
        if cfg.source == "pytorch-fid":
            raise ValueError(
                f"{args.model} is the FID feature network (1008 outputs of the 2015 TensorFlow "
                "graph, not named here); score images with python -m inception_jax.fid"
            )
        batch = preprocess(list(args.images), cfg)
        model, variables = load_pretrained(args.model, args.weights, download=not args.no_download)
        if model.num_classes != cfg.num_classes:
            raise ValueError(
                f"the weights have {model.num_classes} classes, not the "
                f"{cfg.num_classes} ImageNet classes of {info.name}; predict needs "
                "ImageNet weights"
            )
        results = predict(
            model, variables, batch, min(args.top, model.num_classes), args.batch_size, cfg.label_offset
        )
    except ValueError as e:
        return _fail(str(e))

    key = f"top{args.top}"
    if args.json:
        print(json.dumps([{"image": path, key: rows} for path, rows in zip(args.images, results)], indent=2))
        return 0
    for path, rows in zip(args.images, results):
        print(path)
        for rank, row in enumerate(rows, 1):
            print(f"  {rank}. {row['prob']:7.2%}  {row['label']} ({row['index']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
