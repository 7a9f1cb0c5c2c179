"""Precision, recall, density and coverage of generated samples, from k-NN balls in a
feature space (the FID network's 2048-d pool features in :mod:`inception_jax.evaluation`).

Each point's ball is centred on it with the radius of its k-th nearest neighbour in its
own set (itself not counted).

* precision (Kynkäänniemi et al. 2019): the fraction of fake points inside some real ball;
* recall: the fraction of real points inside some fake ball;
* density (Naeem et al. 2020): the number of real balls holding a fake point, summed
  over the fake points and divided by k times their number;
* coverage: the fraction of real balls holding at least one fake point.

Inside a ball means ``distance <= radius`` for precision and recall, as the paper and
its code (and the ADM evaluator, which adapts that code) have it; ``distance < radius``
for density and coverage, as Naeem et al.'s ``prdc`` has it. The two differ only where a
distance equals a radius exactly (duplicated points).

Distances are float64 Euclidean distances of the features shifted by the real mean
(which changes no distance, and keeps ``|x|^2 - 2 x.y + |y|^2`` from cancelling where the
points lie close together far from the origin), taken a block of rows at a time, so
memory stays at ``block_elements`` distances (256 MiB by default) whatever the number
of points; the cost is three N x N x D matrix products.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, Iterator, Tuple

import numpy as np

from inception_jax.fid import FIDError, _progress

MANIFOLD_METRICS = ("precision", "recall", "density", "coverage")
BLOCK_ELEMENTS = 1 << 25  # float64 distances held at once: 256 MiB


def _as_features(name: str, x) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim != 2:
        raise FIDError(f"{name} features of shape {x.shape}: expected (N, D)")
    return x


def _row_blocks(rows: int, cols: int, block_elements: int) -> Iterator[Tuple[int, int]]:
    step = max(1, block_elements // max(cols, 1))
    for start in range(0, rows, step):
        yield start, min(rows, start + step)


def _squared_distances(x: np.ndarray, y: np.ndarray, x_sq: np.ndarray, y_sq: np.ndarray) -> np.ndarray:
    # |x|^2 - 2 x.y + |y|^2: one matrix product; clipped, as rounding can go below 0
    d = x @ y.T
    d *= -2.0
    d += x_sq[:, None]
    d += y_sq[None, :]
    return np.maximum(d, 0.0, out=d)


def knn_radii(
    features,
    nearest_k: int = 3,
    block_elements: int = BLOCK_ELEMENTS,
    progress: Callable[[int], None] = lambda n: None,
) -> np.ndarray:
    """The squared distance from each point to its ``nearest_k``-th nearest neighbour
    in ``features`` (itself not counted: the (k+1)-th smallest distance, itself at 0)."""
    x = _as_features("the", features)
    n = len(x)
    if not 1 <= nearest_k < n:
        raise FIDError(f"nearest_k={nearest_k}: needs 1 <= k < the number of points ({n}); lower --nearest-k")
    x = x - x.mean(axis=0)  # distances stay; |x|^2 - 2 x.y + |y|^2 then cancels less
    sq = np.einsum("ij,ij->i", x, x)
    radii = np.empty(n)
    for start, stop in _row_blocks(n, n, block_elements):
        d = _squared_distances(x[start:stop], x, sq[start:stop], sq)
        rows = np.arange(stop - start)
        d[rows, rows + start] = 0.0  # a point's distance to itself, without the rounding
        radii[start:stop] = np.partition(d, nearest_k, axis=1)[:, nearest_k]
        progress(stop - start)
    return radii


def manifold_metrics(
    real,
    fake,
    nearest_k: int = 3,
    metrics: Iterable[str] = MANIFOLD_METRICS,
    block_elements: int = BLOCK_ELEMENTS,
    progress: bool = False,
) -> Dict[str, float]:
    """``{name: value}`` for each of ``metrics`` (precision, recall, density, coverage)
    of the ``fake`` features against the ``real`` ones, with k = ``nearest_k``."""
    metrics = tuple(metrics)
    unknown = [m for m in metrics if m not in MANIFOLD_METRICS]
    if unknown:
        raise FIDError(f"metrics {', '.join(unknown)}: expected some of {', '.join(MANIFOLD_METRICS)}")
    real, fake = _as_features("real", real), _as_features("fake", fake)
    if real.shape[1] != fake.shape[1]:
        raise FIDError(
            f"real features of {real.shape[1]} dims, fake of {fake.shape[1]}: compute both with one network"
        )
    centre = real.mean(axis=0)  # distances stay; |x|^2 - 2 x.y + |y|^2 then cancels less
    real, fake = real - centre, fake - centre
    n_real, n_fake = len(real), len(fake)
    need_fake_radii = "recall" in metrics
    bar = _progress(n_real + n_fake * (2 if need_fake_radii else 1), progress, "k-NN distances", "row")
    try:
        real_radii = knn_radii(real, nearest_k, block_elements, bar)
        fake_radii = knn_radii(fake, nearest_k, block_elements, bar) if need_fake_radii else None
        real_sq, fake_sq = np.einsum("ij,ij->i", real, real), np.einsum("ij,ij->i", fake, fake)
        fake_in_real_ball = np.zeros(n_fake, bool)  # precision
        real_in_fake_ball = np.zeros(n_real, bool)  # recall
        balls_holding = 0  # density: (fake point, real ball) pairs, open balls
        nearest_fake = np.full(n_real, np.inf)  # coverage
        for start, stop in _row_blocks(n_fake, n_real, block_elements):
            d = _squared_distances(fake[start:stop], real, fake_sq[start:stop], real_sq)
            fake_in_real_ball[start:stop] = (d <= real_radii[None, :]).any(axis=1)
            if fake_radii is not None:
                real_in_fake_ball |= (d <= fake_radii[start:stop, None]).any(axis=0)
            balls_holding += int(np.count_nonzero(d < real_radii[None, :]))
            np.minimum(nearest_fake, d.min(axis=0), out=nearest_fake)
            bar(stop - start)
    finally:
        bar(None)
    values = {
        "precision": float(fake_in_real_ball.mean()),
        "recall": float(real_in_fake_ball.mean()),
        "density": balls_holding / (nearest_k * n_fake),
        "coverage": float((nearest_fake < real_radii).mean()),
    }
    return {m: values[m] for m in metrics}
