"""How long reading a ~100 MB state_dict takes: ``inception_jax.weights.load_torch_file``
(no torch) against ``torch.load(weights_only=True)``, for both ``torch.save`` formats.

    python benchmarks/torch_file_load.py [--repeats 5]

The state_dict is torchvision's inception_v3 (27M parameters, random weights, 109 MB),
saved to a temporary directory in the zip format and in the legacy format (the format of
pytorch-fid's weights file). Each reader runs ``--repeats`` times, alternating, after
one untimed read each (the file then sits in the page cache); the median is printed.
torch's import time is not counted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import torch
    import torchvision

    from inception_jax.weights import files

    state_dict = torchvision.models.inception_v3(weights=None, init_weights=False).state_dict()
    readers = {
        "torch.load(weights_only=True)": lambda p: torch.load(p, weights_only=True),
        "load_torch_file (no torch)": files.load_torch_file,
    }
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, zipped in (("zip", True), ("legacy", False)):
            path = os.path.join(tmp, f"{fmt}.pth")
            torch.save(state_dict, path, _use_new_zipfile_serialization=zipped)
            times: dict[str, list[float]] = {name: [] for name in readers}
            for read in readers.values():
                read(path)
            for _ in range(args.repeats):
                for name, read in readers.items():
                    start = time.perf_counter()
                    read(path)
                    times[name].append(time.perf_counter() - start)
            size = os.path.getsize(path) / 1e6
            for name, t in times.items():
                print(f"{fmt:6s} {size:6.1f} MB  {name:30s} median {statistics.median(t) * 1e3:7.1f} ms")


if __name__ == "__main__":
    main()
