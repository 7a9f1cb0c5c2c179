"""``python -m inception_jax.models``: a table of every registered model."""

from __future__ import annotations

import argparse
import json

from inception_jax.models import list_models
from inception_jax.models.stats import model_stats


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    rows = [model_stats(name) for name in list_models()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    header = f"{'model':<22}{'params':>14}{'params+aux':>14}{'GMACs':>9}{'input':>7}{'min':>5}  reference"
    print(header)
    print("-" * len(header))
    for r in rows:
        aux = f"{r['params_with_aux']:,}" if "params_with_aux" in r else "-"
        print(
            f"{r['model']:<22}{r['params']:>14,}{aux:>14}{r['macs'] / 1e9:>9.2f}"
            f"{r['input_size']:>7}{r['min_input_size']:>5}  {r['reference']}"
        )
    print("GMACs: multiply-adds of convs and dense layers, one image at the default input size.")


if __name__ == "__main__":
    main()
