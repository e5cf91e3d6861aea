"""Reference statistics of a real dataset, cached on disk.

Features of every image of a prepared dataset are computed once and kept as `.npz` (features (N, 2048)
float32, mean, covariance) under a key made of the dataset's content hash, its image size, the resize
method and the extractor. A changed, added or removed image changes the hash, so the statistics are
recomputed; a cache file written for other content is never read.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from catgan.errors import CatganError
from catgan.metrics.fid import feature_stats, frechet_distance_features, sqrt_psd

CACHE_VERSION = 1


class Extractor(Protocol):
    """What the metrics need of a feature extractor (InceptionExtractor, or a stand-in in tests)."""

    name: str
    resize: str

    def features(self, images: torch.Tensor) -> np.ndarray: ...  # uint8 (N, 3, H, W) -> (N, D)


@dataclass(frozen=True)
class ReferenceStats:
    features: np.ndarray  # (N, D) float32, in the dataset's sorted file order
    mu: np.ndarray  # (D,) float64
    sigma: np.ndarray  # (D, D) float64
    fingerprint: str  # the dataset's content hash
    image_size: int
    extractor: str
    resize: str
    cache_file: Path | None = None  # where it was read from or written to
    from_cache: bool = False

    @property
    def n(self) -> int:
        return len(self.features)

    @functools.cached_property
    def sqrt_sigma(self) -> np.ndarray:
        """sigma^(1/2) (D, D), computed once per loaded reference and reused by every FID against it."""
        return sqrt_psd(self.sigma)

    def fid(self, features: np.ndarray) -> float:
        """FID of (N, D) features against this reference."""
        return frechet_distance_features(self.mu, self.sigma, features, self.sqrt_sigma)


def default_cache_dir() -> Path:
    """$CATGAN_CACHE/reference, else $XDG_CACHE_HOME/catgan/reference, else ~/.cache/catgan/reference."""
    if os.environ.get("CATGAN_CACHE"):
        return Path(os.environ["CATGAN_CACHE"]) / "reference"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "catgan" / "reference"


def cache_key(fingerprint: str, image_size: int, resize: str, extractor: str) -> str:
    """A short hex key for one (content, size, resize, extractor) combination."""
    text = json.dumps([CACHE_VERSION, fingerprint, image_size, resize, extractor])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _read(path: Path, key_fields: dict) -> ReferenceStats | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta != key_fields:
                return None
            return ReferenceStats(
                features=z["features"],
                mu=z["mu"],
                sigma=z["sigma"],
                cache_file=path,
                from_cache=True,
                **{k: meta[k] for k in ("fingerprint", "image_size", "extractor", "resize")},
            )
    except (OSError, ValueError, KeyError):
        return None  # unreadable or foreign: recompute and overwrite


def _write(path: Path, stats: ReferenceStats, key_fields: dict) -> None:
    """Write to a temporary file and rename, so a crash never leaves half a cache file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, features=stats.features, mu=stats.mu, sigma=stats.sigma, meta=json.dumps(key_fields))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def reference_stats(
    data: str | Path,
    extractor: Extractor,
    cache_dir: str | Path | None = None,
    images: torch.Tensor | None = None,
    image_size: int | None = None,
    log: Callable[[str], None] | None = None,
) -> ReferenceStats:
    """Features and statistics of every image of the prepared dataset `data`, from cache when valid.

    images: the dataset already loaded (uint8 (N, 3, H, W)), to skip reading it again on a cache miss.
    cache_dir=None: default_cache_dir(). The cache is keyed by content, so any folder name works.
    log: told in one line when the features are computed (a cache miss: minutes on a CPU), not on a hit.
    """
    from catgan.data.dataset import dataset_fingerprint, load_dataset, resolve

    folder = resolve(data, image_size)
    fingerprint = dataset_fingerprint(folder)
    if images is None:
        images = load_dataset(folder, image_size)
    if len(images) < 2:
        raise CatganError(f"dataset {folder} holds {len(images)} image(s); FID needs at least 2")
    size = int(images.shape[-1])
    key_fields = {
        "fingerprint": fingerprint,
        "image_size": size,
        "resize": extractor.resize,
        "extractor": extractor.name,
        "version": CACHE_VERSION,
    }
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache / f"{folder.name}-{cache_key(fingerprint, size, extractor.resize, extractor.name)}.npz"
    if path.is_file() and (hit := _read(path, key_fields)) is not None:
        return hit
    if log is not None:
        log(f"FID reference: features of the {len(images):,} images of {folder}, once (cached in {cache})")
    features = np.asarray(extractor.features(images), dtype=np.float64)  # (N, D)
    mu, sigma = feature_stats(features)
    stats = ReferenceStats(
        features=features.astype(np.float32),
        mu=mu,
        sigma=sigma,
        fingerprint=fingerprint,
        image_size=size,
        extractor=extractor.name,
        resize=extractor.resize,
        cache_file=path,
        from_cache=False,
    )
    try:
        _write(path, stats, key_fields)
    except OSError as err:  # the cache only saves time: an unwritable one must not lose the features
        warnings.warn(
            f"could not cache reference statistics in {path.parent} ({err.strerror or err}); "
            "they will be computed again next time (set --cache-dir or $CATGAN_CACHE)",
            stacklevel=2,
        )
        stats = dataclasses.replace(stats, cache_file=None)
    return stats
