"""FID and KID: pure functions of features, plus a running accumulator (torchmetrics style).

FID (Heusel et al. 2017): ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) between Gaussians fitted to
two feature sets. KID (Binkowski et al. 2018): the unbiased MMD^2 with the cubic polynomial kernel
k(x, y) = (x.y / d + 1)^3, averaged over random subsets (as StyleGAN and torch-fidelity compute it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from catgan.errors import CatganError


def _check_features(f: np.ndarray, name: str, min_rows: int = 2) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    if f.ndim != 2:
        raise CatganError(f"{name} must be (N, D) features, got shape {f.shape}")
    if len(f) < min_rows:
        raise CatganError(f"{name} needs at least {min_rows} feature rows, got {len(f)}")
    return f


def feature_stats(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) features -> mean (D,) and unbiased covariance (D, D), float64."""
    f = _check_features(f, "features")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def sqrt_psd(s: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite (D, D) matrix (round-off eigenvalues < 0 -> 0).

    Computed with torch, so it uses torch's thread setting (numpy's BLAS would take every core).
    """
    t = torch.from_numpy(np.asarray(s, np.float64))
    w, v = torch.linalg.eigh((t + t.T) / 2)
    return ((v * w.clamp(min=0).sqrt()) @ v.T).numpy()


def _sum_sqrt_eig(m: torch.Tensor) -> float:
    """sum_i sqrt(lambda_i) of a symmetric PSD matrix: the trace of its square root."""
    return float(torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum())


def _check_stats(mu1, sigma1, mu2, sigma2):
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = (
        np.atleast_2d(np.asarray(sigma1, np.float64)),
        np.atleast_2d(np.asarray(sigma2, np.float64)),
    )
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise CatganError(
            f"mismatched statistics: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}"
        )
    return mu1, sigma1, mu2, sigma2


def frechet_distance(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    sqrt_sigma1: np.ndarray | None = None,
) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    tr((S1 S2)^(1/2)) = sum of sqrt(eigenvalues of S1^(1/2) S2 S1^(1/2)): that matrix is symmetric PSD,
    so two symmetric eigensolvers replace scipy's `sqrtm` (20x slower here, with complex round-off), and
    singular covariances (fewer samples than dimensions) are fine. Pass `sqrt_sigma1` (sqrt_psd(sigma1))
    to reuse it across calls against one reference.
    """
    mu1, sigma1, mu2, sigma2 = _check_stats(mu1, sigma1, mu2, sigma2)
    root1 = torch.from_numpy(sqrt_psd(sigma1) if sqrt_sigma1 is None else np.asarray(sqrt_sigma1, np.float64))
    tr_covmean = _sum_sqrt_eig(root1 @ torch.from_numpy(sigma2) @ root1)  # (D, D)
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean, 0.0))


def frechet_distance_features(
    mu1: np.ndarray, sigma1: np.ndarray, f2: np.ndarray, sqrt_sigma1: np.ndarray | None = None
) -> float:
    """Fréchet distance between N(mu1, sigma1) and the Gaussian fitted to (N, D) features f2.

    With N <= D, S2 = A^T A / (N - 1) for the centred rows A (N, D), and S1 S2 has the same non-zero
    eigenvalues as A S1 A^T / (N - 1), an (N, N) symmetric PSD matrix: exact and much cheaper.
    """
    f2 = _check_features(f2, "features")
    mu2, sigma2 = feature_stats(f2)
    if len(f2) > f2.shape[1]:
        return frechet_distance(mu1, sigma1, mu2, sigma2, sqrt_sigma1)
    mu1, sigma1, mu2, sigma2 = _check_stats(mu1, sigma1, mu2, sigma2)
    a = torch.from_numpy(f2 - mu2)  # (N, D)
    tr_covmean = _sum_sqrt_eig(a @ torch.from_numpy(sigma1) @ a.T / (len(f2) - 1))  # (N, N)
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean, 0.0))


def fid_from_features(f1: np.ndarray, f2: np.ndarray) -> float:
    """FID between two (N, D) feature sets."""
    return frechet_distance_features(*feature_stats(f1), f2)


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 of (m, D) x and (m, D) y under k(a, b) = (a.b / D + 1)^3 (one KID subset)."""
    m, d = x.shape
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    off_diag = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(off_diag - 2.0 * kxy.sum() / (m * m))


def kid(
    f1: np.ndarray, f2: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID mean and std over `subsets` random subsets of min(subset_size, N1, N2) rows of each set."""
    f1, f2 = _check_features(f1, "features 1"), _check_features(f2, "features 2")
    if f1.shape[1] != f2.shape[1]:
        raise CatganError(f"feature sizes differ: {f1.shape[1]} vs {f2.shape[1]}")
    if subsets < 1 or subset_size < 2:
        raise CatganError(f"KID needs subsets >= 1 and subset_size >= 2, got {subsets} and {subset_size}")
    m = min(subset_size, len(f1), len(f2))
    rng = np.random.default_rng(seed)
    values = [
        mmd2_unbiased(f1[rng.choice(len(f1), m, replace=False)], f2[rng.choice(len(f2), m, replace=False)])
        for _ in range(subsets)
    ]
    return float(np.mean(values)), float(np.std(values))


@dataclass
class FeatureAccumulator:
    """Running sums for mean and covariance, plus the raw rows (KID, precision/recall need them).

    acc.update(features)   # (B, D), any number of times
    mu, sigma = acc.stats()
    acc.features()         # (N, D) float32, when keep=True
    """

    keep: bool = True
    n: int = 0
    _sum: np.ndarray | None = None  # (D,)
    _outer: np.ndarray | None = None  # (D, D)
    _rows: list[np.ndarray] = field(default_factory=list)

    def update(self, features: np.ndarray) -> None:
        f = np.asarray(features, dtype=np.float64)
        if f.ndim != 2:
            raise CatganError(f"features must be (B, D), got shape {f.shape}")
        if self._sum is None:
            self._sum, self._outer = np.zeros(f.shape[1]), np.zeros((f.shape[1], f.shape[1]))
        elif f.shape[1] != len(self._sum):
            raise CatganError(f"feature size changed from {len(self._sum)} to {f.shape[1]}")
        self._sum += f.sum(axis=0)
        self._outer += f.T @ f
        self.n += len(f)
        if self.keep:
            self._rows.append(f.astype(np.float32))

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean (D,) and unbiased covariance (D, D) of everything seen so far."""
        if self.n < 2 or self._sum is None or self._outer is None:
            raise CatganError(f"need at least 2 feature rows for statistics, got {self.n}")
        mu = self._sum / self.n
        sigma = (self._outer - self.n * np.outer(mu, mu)) / (self.n - 1)
        return mu, sigma

    def features(self) -> np.ndarray:
        if not self.keep:
            raise CatganError("this accumulator was made with keep=False and holds no feature rows")
        if not self._rows:
            return np.zeros((0, 0), dtype=np.float32)
        return np.concatenate(self._rows)


@dataclass
class FID:
    """FID / KID accumulator: update(features, real=...) then compute(). Reals may come pre-computed.

    fid = FID(); fid.update(real_feats, real=True); fid.update(fake_feats, real=False); fid.compute()
    """

    kid_subsets: int = 100
    kid_subset_size: int = 1000
    seed: int = 0
    real: FeatureAccumulator = field(default_factory=FeatureAccumulator)
    fake: FeatureAccumulator = field(default_factory=FeatureAccumulator)

    def update(self, features: np.ndarray, real: bool) -> None:
        (self.real if real else self.fake).update(features)

    def compute(self) -> dict[str, float]:
        fid = frechet_distance_features(*self.real.stats(), self.fake.features())
        kid_mean, kid_std = kid(
            self.real.features(), self.fake.features(), self.kid_subsets, self.kid_subset_size, self.seed
        )
        return {"fid": fid, "kid_mean": kid_mean, "kid_std": kid_std}
