"""FID's trace term at 2048 dims: ``fid.trace_sqrt_product`` (two symmetric
eigendecompositions) against ``scipy.linalg.sqrtm(sigma1 @ sigma2)`` (pytorch-fid's),
run alternately, median seconds of each, and the two traces' relative difference.

    python benchmarks/fid_sqrtm.py                 # 2048 dims, 3 repeats
    python benchmarks/fid_sqrtm.py --dims 512 --repeats 5

The covariances are of correlated Gaussian features (``--samples`` of them, default
10,000 as pytorch-fid advises), the second a little shifted and scaled.
"""

import argparse
import statistics
import time

import numpy as np
from scipy import linalg

from inception_jax import fid


def covariances(dims: int, samples: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((dims, dims)) / np.sqrt(dims)
    a = rng.standard_normal((samples, dims)) @ mix
    b = (rng.standard_normal((samples, dims)) @ mix) * 1.05 + 0.01
    return np.cov(a, rowvar=False), np.cov(b, rowvar=False)


def with_sqrtm(sigma1, sigma2) -> float:
    return float(np.trace(linalg.sqrtm(sigma1 @ sigma2)).real)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dims", type=int, default=2048)
    p.add_argument("--samples", type=int, default=10_000)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    sigma1, sigma2 = covariances(args.dims, args.samples)
    candidates = {"eigh (ours)": fid.trace_sqrt_product, "scipy sqrtm": with_sqrtm}
    times = {name: [] for name in candidates}
    values = {}
    for _ in range(args.repeats):
        for name, fn in candidates.items():  # alternating: drifting machine load hits both
            start = time.perf_counter()
            values[name] = fn(sigma1, sigma2)
            times[name].append(time.perf_counter() - start)
    ours, theirs = values["eigh (ours)"], values["scipy sqrtm"]
    print(f"Tr sqrt(sigma1 sigma2), {args.dims} dims, {args.samples} samples, {args.repeats} repeats")
    print(f"{'method':<14}{'median s':>10}{'min s':>9}{'max s':>9}  trace")
    for name in candidates:
        t = times[name]
        print(f"{name:<14}{statistics.median(t):>10.2f}{min(t):>9.2f}{max(t):>9.2f}  {values[name]:.10g}")
    print(f"relative difference of the traces: {abs(ours - theirs) / abs(theirs):.2e}")
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"speed-up (median): {medians['scipy sqrtm'] / medians['eigh (ours)']:.1f}x")


if __name__ == "__main__":
    main()
