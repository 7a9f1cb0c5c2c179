"""Export a model as a serialized ``jax.export`` artifact (StableHLO) that checks itself.

    python -m inception_jax.export --model inception_v3 --out inception_v3.jaxexport
    python -m inception_jax.export --model googlenet --weights googlenet-1378be20.pth --out g.jaxexport

The artifact is the eval-mode forward pass with the weights inside, lowered for
``cpu``, ``cuda`` and ``tpu``, taking float32 NHWC images of a symbolic batch size
``b`` (``(b, S, S, 3)``, ``S`` the model's input size or ``--image-size``) and
returning logits ``(b, classes)``. Without ``--weights`` the model has random
weights (``--seed``); with them: a reference state_dict (``.pth``, ``.safetensors``)
or a ``save_pretrained`` directory, as :func:`inception_jax.weights.load_pretrained`
reads them. Before it writes the file the command deserializes the artifact, runs it
on the CPU at two batch sizes and compares it with the live model (relative L2 within
``--tolerance``, 1e-5).

Use it from JAX with ``jax.export.deserialize(open(path, "rb").read()).call(x)``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from inception_jax.errors import first_line

PLATFORMS = ("cpu", "cuda", "tpu")


def build(name: str, weights: Optional[str] = None, seed: int = 0) -> Tuple[Any, Any]:
    """``(model, variables)``: from ``weights`` or random (eval-mode model, no aux heads)."""
    import jax

    from inception_jax import models
    from inception_jax.train.programs import init_variables
    from inception_jax.weights import pretrained

    info = models.get_info(name)
    kw = {"aux_logits": False} if info.has_aux else {}
    if weights is not None:
        if not os.path.exists(weights):
            raise ValueError(f"--weights {weights}: no such file or directory")
        return pretrained.load_pretrained(name, weights, **kw)
    model = models.create(name, **kw)
    size = info.default_input_size
    return model, init_variables(model, jax.random.PRNGKey(seed), (1, size, size, 3))


def export_model(model, variables, image_size: int, platforms: Sequence[str] = PLATFORMS):
    """The ``jax.export.Exported`` eval forward of ``model`` with ``variables`` embedded,
    for a symbolic batch ``b`` of (b, image_size, image_size, 3) float32 images."""
    import jax
    import jax.numpy as jnp
    from jax import export

    (b,) = export.symbolic_shape("b")
    spec = jax.ShapeDtypeStruct((b, image_size, image_size, 3), jnp.float32)

    def forward(x):
        return model.apply(variables, x, train=False)

    return export.export(jax.jit(forward), platforms=tuple(platforms))(spec)


def check(blob: bytes, model, variables, image_size: int, batches=(1, 3), seed: int = 1) -> float:
    """Deserializes ``blob``, runs it on the CPU at each batch size and returns the largest
    relative L2 difference from the live model."""
    import jax
    from jax import export

    exported = export.deserialize(blob)
    worst = 0.0
    rng = np.random.RandomState(seed)
    for n in batches:
        x = rng.rand(n, image_size, image_size, 3).astype(np.float32)
        got = np.asarray(exported.call(x), np.float64)
        want = np.asarray(jax.jit(lambda x: model.apply(variables, x, train=False))(x), np.float64)
        if got.shape != want.shape:
            raise ValueError(f"the artifact returned shape {got.shape} for batch {n}, the model {want.shape}")
        worst = max(worst, float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30)))
    return worst


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m inception_jax.export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="a registered model (inception_jax.list_models())")
    parser.add_argument("--weights", default=None, help="state_dict file or save_pretrained directory")
    parser.add_argument("--out", required=True, help="the artifact to write")
    parser.add_argument("--image-size", type=int, default=0, help="input size (default: the model's)")
    parser.add_argument("--platforms", default=",".join(PLATFORMS))
    parser.add_argument("--tolerance", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0, help="random weights' seed (no --weights)")
    args = parser.parse_args(argv)

    from inception_jax import models
    from inception_jax.checkpoint.integrity import write_atomic

    try:
        if args.model not in models.list_models():
            raise ValueError(
                f"--model {args.model}: unknown; expected one of {', '.join(models.list_models())}"
            )
        info = models.get_info(args.model)
        size = args.image_size or info.default_input_size
        if size < info.min_input_size:
            raise ValueError(f"--image-size {size}: {args.model} needs at least {info.min_input_size}")
        platforms = [p.strip() for p in args.platforms.split(",") if p.strip()]
        if "cpu" not in platforms:
            raise ValueError(f"--platforms {args.platforms}: include cpu, where the artifact is checked")
        model, variables = build(args.model, args.weights, args.seed)
        exported = export_model(model, variables, size, platforms)
        blob = bytes(exported.serialize())
        out_dir = os.path.dirname(os.path.abspath(args.out))
        if not os.path.isdir(out_dir):
            raise ValueError(f"--out {args.out}: the folder {out_dir} does not exist")
        err = check(blob, model, variables, size)
        if not err <= args.tolerance:
            print(
                f"error: the exported {args.model} differs from the live model by {err:.2e} (relative L2), "
                f"more than --tolerance {args.tolerance}; nothing written",
                file=sys.stderr,
            )
            return 1
        write_atomic(args.out, blob, remedy="free disk space or pick another --out")
    except ValueError as e:
        print(f"error: {first_line(e, limit=None)}", file=sys.stderr)
        return 2
    print(
        f"wrote {args.out}: {args.model}, {len(blob) / 1e6:.1f} MB, platforms {', '.join(platforms)}, "
        f"input (b, {size}, {size}, 3) float32, output {exported.out_avals[0].str_short()}; "
        f"checked on CPU at batches 1 and 3: relative L2 {err:.1e}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
