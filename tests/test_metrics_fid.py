"""Pure metric functions: FID against a closed form, KID's unbiased estimator, the accumulator, PR/NN."""

from __future__ import annotations

import numpy as np
import pytest

from catgan.errors import CatganError
from catgan.metrics.fid import (
    FID,
    FeatureAccumulator,
    feature_stats,
    fid_from_features,
    frechet_distance,
    kid,
    mmd2_unbiased,
)
from catgan.metrics.memorisation import nearest, quantiles, space_report
from catgan.metrics.prdc import knn_radii, precision_recall


def _random_cov(rng: np.random.Generator, d: int, rank: int | None = None) -> np.ndarray:
    a = rng.normal(size=(d, rank or d))
    return a @ a.T / d


def _fid_scipy(mu1, s1, mu2, s2) -> float:
    """pytorch-fid's formula with scipy's sqrtm."""
    linalg = pytest.importorskip("scipy.linalg")
    covmean = linalg.sqrtm(s1 @ s2).real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize("d", [1, 2, 5, 16, 64])
@pytest.mark.parametrize("seed", range(4))
def test_frechet_distance_matches_scipy_sqrtm(d, seed):
    rng = np.random.default_rng(seed)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = _random_cov(rng, d), _random_cov(rng, d)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(
        _fid_scipy(mu1, s1, mu2, s2), rel=1e-6, abs=1e-8
    )


def test_frechet_distance_closed_forms():
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2 for standard deviations s1, s2.
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-2.0]), np.array([[9.0]])) == (
        pytest.approx(9.0 + 1.0)
    )
    # Commuting (diagonal) covariances: sum of squared differences of the standard deviations.
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.0])
    expected = 4.0 + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(np.zeros(3), np.diag(a), np.full(3, 2 / np.sqrt(3)), np.diag(b)) == (
        pytest.approx(expected)
    )


def test_frechet_distance_of_identical_stats_is_zero_even_when_singular():
    rng = np.random.default_rng(0)
    mu, s = rng.normal(size=32), _random_cov(rng, 32, rank=5)  # rank-deficient, as with N < D
    assert frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-7)
    assert frechet_distance(mu, s, mu + 1, s) == pytest.approx(32.0, rel=1e-6)


def test_frechet_distance_is_symmetric_and_nonnegative():
    rng = np.random.default_rng(1)
    for _ in range(10):
        mu1, mu2, s1, s2 = rng.normal(size=8), rng.normal(size=8), _random_cov(rng, 8, 3), _random_cov(rng, 8)
        f12, f21 = frechet_distance(mu1, s1, mu2, s2), frechet_distance(mu2, s2, mu1, s1)
        assert f12 >= 0 and f12 == pytest.approx(f21, rel=1e-6)


def test_fid_from_features_of_same_samples_is_zero_and_grows_with_shift():
    f = np.random.default_rng(2).normal(size=(100, 10))
    assert fid_from_features(f, f) == pytest.approx(0.0, abs=1e-9)
    shifts = [fid_from_features(f, f + s) for s in (0.1, 0.5, 1.0, 2.0)]
    assert shifts == sorted(shifts) and shifts[-1] == pytest.approx(40.0)


def test_frechet_distance_rejects_mismatched_shapes():
    with pytest.raises(CatganError, match="mismatched statistics"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_feature_stats_needs_two_rows():
    with pytest.raises(CatganError, match="at least 2"):
        feature_stats(np.zeros((1, 4)))


def _mmd2_by_definition(x, y):
    k = lambda a, b: (a @ b / len(a) + 1) ** 3  # noqa: E731
    m = len(x)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


@pytest.mark.parametrize("seed", range(3))
def test_mmd2_unbiased_matches_definition(seed):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(7, 4)), rng.normal(1.0, size=(7, 4))
    assert mmd2_unbiased(x, y) == pytest.approx(_mmd2_by_definition(x, y), rel=1e-10)


def test_kid_is_unbiased_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(3)
    f1, f2 = rng.normal(size=(400, 16)), rng.normal(size=(400, 16))
    mean, std = kid(f1, f2, subsets=50, subset_size=100)
    assert abs(mean) < 3 * std / np.sqrt(50) + 1e-3  # centred on 0: can be slightly negative
    shifted, _ = kid(f1, f2 + 0.5, subsets=50, subset_size=100)
    assert shifted > 10 * max(abs(mean), 1e-4)


def test_kid_same_seed_same_value_and_small_sets():
    rng = np.random.default_rng(4)
    f1, f2 = rng.normal(size=(30, 8)), rng.normal(size=(20, 8))
    assert kid(f1, f2, subsets=5, subset_size=1000, seed=1) == kid(
        f1, f2, subsets=5, subset_size=1000, seed=1
    )
    with pytest.raises(CatganError, match="feature sizes differ"):
        kid(f1, np.zeros((20, 9)))
    with pytest.raises(CatganError, match="subsets"):
        kid(f1, f2, subsets=0)


def test_accumulator_matches_batch_statistics():
    f = np.random.default_rng(5).normal(size=(103, 6))
    acc = FeatureAccumulator()
    for i in range(0, 103, 16):
        acc.update(f[i : i + 16])
    mu, sigma = acc.stats()
    assert acc.n == 103
    np.testing.assert_allclose(mu, f.mean(0))
    np.testing.assert_allclose(sigma, np.cov(f, rowvar=False), atol=1e-12)
    np.testing.assert_allclose(acc.features(), f.astype(np.float32))
    with pytest.raises(CatganError, match="feature size changed"):
        acc.update(np.zeros((2, 7)))


def test_fid_accumulator_compute():
    rng = np.random.default_rng(6)
    real, fake = rng.normal(size=(60, 5)), rng.normal(0.3, size=(50, 5))
    metric = FID(kid_subsets=10, kid_subset_size=20)
    metric.update(real[:30], real=True)
    metric.update(real[30:], real=True)
    metric.update(fake, real=False)
    out = metric.compute()
    assert out["fid"] == pytest.approx(fid_from_features(real, fake))
    assert out["kid_mean"] == pytest.approx(kid(real, fake, 10, 20)[0], rel=1e-5)
    with pytest.raises(CatganError, match="at least 2"):
        FID().compute()


def test_knn_radii_and_precision_recall():
    grid = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [5.0, 5.0]])
    np.testing.assert_allclose(knn_radii(grid, 1), [1, 1, 1, 1, np.hypot(4, 4)])
    rng = np.random.default_rng(7)
    real = rng.normal(size=(300, 4))
    same = precision_recall(real, rng.normal(size=(300, 4)), k=3)
    assert same["precision"] > 0.8 and same["recall"] > 0.8
    # A collapsed generator: realistic (high precision) but covers little (low recall).
    collapsed = precision_recall(real, rng.normal(scale=0.05, size=(300, 4)), k=3)
    assert collapsed["precision"] > 0.9 and collapsed["recall"] < 0.2
    far = precision_recall(real, rng.normal(10.0, size=(300, 4)), k=3)
    assert far["precision"] == 0.0 and far["coverage"] == 0.0
    with pytest.raises(CatganError, match="need more than 3"):
        precision_recall(real[:3], real, k=3)


def test_nearest_and_leave_one_out():
    ref = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    dist, idx = nearest(np.array([[0.1, 0.0], [0.0, 3.9]]), ref)
    np.testing.assert_allclose(dist, [0.1, 0.1], atol=1e-5)
    assert idx.tolist() == [0, 2]
    loo, idx = nearest(ref, ref, exclude_self=True)
    np.testing.assert_allclose(loo, [3.0, 3.0, 4.0], atol=1e-5)
    assert idx.tolist() == [1, 0, 0]
    assert set(quantiles(np.arange(101.0))) == {"min", "q01", "q05", "q25", "median", "q75"}


def test_space_report_flags_copies_not_novel_samples():
    rng = np.random.default_rng(8)
    train = rng.normal(size=(200, 8))
    copies = space_report(train[:50] + 1e-4, train)
    novel = space_report(rng.normal(size=(50, 8)), train)
    assert copies.copy_rate == 1.0 and copies.summary()["median_ratio"] < 0.01
    assert novel.copy_rate < 0.1 and 0.5 < novel.summary()["median_ratio"] < 2
    assert copies.summary()["copies"] == 50 and novel.summary()["copies"] == round(50 * novel.copy_rate)


@pytest.mark.parametrize(("n", "d"), [(5, 12), (12, 12), (30, 12)])
def test_low_rank_path_equals_full_fid(n, d):
    from catgan.metrics.fid import frechet_distance_features, sqrt_psd

    rng = np.random.default_rng(n)
    real, fake = rng.normal(size=(40, d)), rng.normal(0.2, 1.5, size=(n, d))
    mu, sigma = feature_stats(real)
    full = frechet_distance(mu, sigma, *feature_stats(fake))
    # rel 1e-6: the full path takes sqrt of round-off at zero eigenvalues (~sqrt(eps))
    assert frechet_distance_features(mu, sigma, fake) == pytest.approx(full, rel=1e-6)
    root = sqrt_psd(sigma)
    assert frechet_distance(mu, sigma, *feature_stats(fake), sqrt_sigma1=root) == pytest.approx(full)
    assert full == pytest.approx(_fid_scipy(mu, sigma, *feature_stats(fake)), rel=1e-6)
