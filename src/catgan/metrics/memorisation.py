"""Memorisation: how close each sample is to its nearest training face, against how close held-out
real faces are.

A generator that copies its training set puts samples at (near) zero distance from a training face;
a generator that is as novel as new photos gives samples whose nearest-neighbour distances look like
those of held-out real faces. Distances are measured in Inception-feature space and in pixel space
(images area-downsampled to 32 px, so a one-pixel shift does not hide a copy).

`copy_rate` is the share of samples closer to a training face than all but 1% of held-out real
faces are (their 1st percentile): about 0.01 for a novel generator, near 1 for a copying one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from catgan.errors import CatganError

PIXEL_SIZE = 32
QUANTILES = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75)


def pixel_vectors(images: torch.Tensor, size: int = PIXEL_SIZE) -> np.ndarray:
    """uint8 (N, 3, H, W) -> float32 (N, 3 * size * size) in [0, 1], area-downsampled to size x size."""
    x = images.to(torch.float32) / 255.0
    if x.shape[-1] > size:
        x = F.interpolate(x, size=(size, size), mode="area")
    return x.reshape(len(x), -1).cpu().numpy()


def nearest(query: np.ndarray, ref: np.ndarray, exclude_self: bool = False, chunk: int = 1024):
    """For each row of (Q, D) query, its nearest row of (R, D) ref -> distances (Q,), indices (Q,).

    exclude_self=True (query is ref): skip the identical index, a leave-one-out neighbour.
    """
    q, r = torch.from_numpy(np.asarray(query, np.float32)), torch.from_numpy(np.asarray(ref, np.float32))
    if q.ndim != 2 or r.ndim != 2 or q.shape[1] != r.shape[1]:
        raise CatganError(f"nearest neighbours need (N, D) arrays of one D, got {q.shape} and {r.shape}")
    if len(r) < 1 + exclude_self:
        raise CatganError(f"nearest neighbours need at least {1 + exclude_self} reference rows, got {len(r)}")
    dist, idx = np.empty(len(q), np.float64), np.empty(len(q), np.int64)
    for i in range(0, len(q), chunk):
        d = torch.cdist(q[i : i + chunk], r)  # (B, R), float32: copies land within ~1e-3 of 0
        if exclude_self:
            rows = torch.arange(len(d))
            d[rows, rows + i] = float("inf")
        best = d.min(dim=1)
        dist[i : i + chunk], idx[i : i + chunk] = best.values.numpy(), best.indices.numpy()
    return dist, idx


def quantiles(values: np.ndarray) -> dict[str, float]:
    """{"min": ..., "q01": ..., "q05": ..., "q25": ..., "median": ..., "q75": ...}."""
    names = {0.0: "min", 0.5: "median"}
    return {names.get(q, f"q{round(q * 100):02d}"): float(np.quantile(values, q)) for q in QUANTILES}


@dataclass(frozen=True)
class SpaceReport:
    """Nearest-training-face distances in one space, for samples and for held-out real faces."""

    samples: np.ndarray  # (N,) distance of each sample to its nearest training face
    nearest_index: np.ndarray  # (N,) index of that training face
    heldout: np.ndarray  # (H,) the same for held-out (or leave-one-out) real faces

    @property
    def copies(self) -> int:
        """Samples closer to a training face than all but 1% of held-out real faces are to theirs."""
        return int((self.samples < np.quantile(self.heldout, 0.01)).sum())

    @property
    def copy_rate(self) -> float:
        return self.copies / len(self.samples)

    def summary(self) -> dict:
        return {
            "samples": quantiles(self.samples),
            "real_heldout": quantiles(self.heldout),
            "copies": self.copies,
            "copy_rate": self.copy_rate,
            "median_ratio": float(np.median(self.samples) / max(np.median(self.heldout), 1e-12)),
        }


def space_report(
    samples: np.ndarray, train: np.ndarray, heldout: np.ndarray | None = None, max_heldout: int = 2000
) -> SpaceReport:
    """Nearest-neighbour distances of (N, D) samples into (T, D) train, and of held-out real rows.

    heldout=None: up to `max_heldout` training faces' distances to their nearest *other* training face
    (leave-one-out) stand in for held-out faces.
    """
    dist, idx = nearest(samples, train)
    if heldout is None:
        held = nearest(train[:max_heldout], train, exclude_self=True)[0]
    else:
        held = nearest(heldout, train)[0]
    return SpaceReport(samples=dist, nearest_index=idx, heldout=held)


def save_closest_pairs(
    samples: torch.Tensor, train: torch.Tensor, report: SpaceReport, path: Path, k: int = 16
) -> Path:
    """PNG of the k samples closest to a training face: each sample above its nearest training face.

    Written atomically; an unwritable `path` is a CatganError.
    """
    from PIL import Image

    from catgan.checkpoint import atomic_write

    order = np.argsort(report.samples)[:k]
    top = samples[torch.from_numpy(order)]  # (k, 3, H, W)
    bottom = train[torch.from_numpy(report.nearest_index[order])]
    grid = torch.cat([torch.cat(list(top), dim=2), torch.cat(list(bottom), dim=2)], dim=1)  # (3, 2H, kW)
    image = Image.fromarray(grid.permute(1, 2, 0).cpu().numpy())
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG"), "closest pairs image")
