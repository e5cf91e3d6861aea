"""Precision and recall on k-NN feature manifolds (Kynkäänniemi et al. 2019), plus density and coverage
(Naeem et al. 2020) from the same distances.

Each set's manifold is the union of balls around its points, each ball reaching the point's k-th
nearest neighbour in the same set. Precision: share of fake points inside the real manifold (are
samples realistic?). Recall: share of real points inside the fake manifold (is the variety covered?).
"""

from __future__ import annotations

import numpy as np
import torch

from catgan.errors import CatganError


def pairwise_distances(x: np.ndarray, y: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Euclidean distances (N, M) between rows of (N, D) x and (M, D) y, float64, computed in row chunks."""
    xt, yt = torch.from_numpy(np.asarray(x, np.float64)), torch.from_numpy(np.asarray(y, np.float64))
    return torch.cat([torch.cdist(xt[i : i + chunk], yt) for i in range(0, len(xt), chunk)]).numpy()


def knn_radii(f: np.ndarray, k: int) -> np.ndarray:
    """(N,) distance from each row of (N, D) f to its k-th nearest other row."""
    if len(f) <= k:
        raise CatganError(f"k-NN radii with k={k} need more than {k} points, got {len(f)}")
    radii = np.empty(len(f))
    for i in range(0, len(f), 2048):  # chunks keep memory at (2048, N)
        d = pairwise_distances(f[i : i + 2048], f)  # (B, N); each row's own point is at distance 0
        radii[i : i + 2048] = np.partition(d, k, axis=1)[:, k]
    return radii


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> dict[str, float]:
    """Precision, recall, density and coverage of (N, D) fake against (M, D) real features."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise CatganError(
            f"precision/recall need (N, D) features of one D, got {real.shape} and {fake.shape}"
        )
    if k < 1:
        raise CatganError(f"k must be >= 1, got {k}")
    real_r, fake_r = knn_radii(real, k), knn_radii(fake, k)  # (M,), (N,)
    in_real = np.zeros(len(fake), bool)  # fake n inside the real manifold
    in_fake = np.zeros(len(real), bool)  # real m inside the fake manifold
    balls = np.zeros(len(fake))  # how many real balls contain fake n
    nearest_fake = np.full(len(real), np.inf)  # real m's distance to its nearest fake
    for i in range(0, len(fake), 2048):  # chunks keep memory at (2048, M)
        d = pairwise_distances(fake[i : i + 2048], real)  # (B, M)
        inside = d <= real_r[None, :]
        in_real[i : i + 2048] = inside.any(axis=1)
        balls[i : i + 2048] = inside.sum(axis=1)
        in_fake |= (d <= fake_r[i : i + 2048, None]).any(axis=0)
        nearest_fake = np.minimum(nearest_fake, d.min(axis=0))
    return {
        "precision": float(in_real.mean()),
        "recall": float(in_fake.mean()),
        "density": float(balls.mean() / k),
        "coverage": float((nearest_fake <= real_r).mean()),
    }
