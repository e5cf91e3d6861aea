"""Reference statistics of a real dataset, cached on disk.

Features of every image of a prepared dataset are computed once and kept as `.npz` (features (N, 2048)
float32, mean, covariance) under a key made of the dataset's content hash, its image size, the resize
method and the extractor. A changed, added or removed image changes the hash, so the statistics are
recomputed; a cache file written for other content is never read. The extractor's name (which says its
feature space and precision) and, for a subset, `reference_n` and its seed are part of the key.

Every feature pass goes through `feature_pass`, which shows a progress bar with the time left (tqdm on a
terminal; on a log file or pipe, a line at the start, at each quarter and at the end: catgan.progress).
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
from typing import Any, Protocol

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
    # (N,) int64 ImageNet top-1 classes, where the extractor has a classifier (the class-leak check)
    classes: np.ndarray | None = None

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


PASS_CHUNK = 256  # images per extractor call in a feature pass: fine-grained progress, bounded memory


def _in_chunks(fn: Callable[[torch.Tensor], Any], images: torch.Tensor, desc: str, progress: bool) -> list:
    """fn over chunks of PASS_CHUNK images, with a progress bar and the time left (catgan.progress: on a
    terminal a tqdm bar, elsewhere a line at the start, at each quarter and at the end); fn's results in
    order."""
    from catgan.progress import progress_pass

    n, out = len(images), []
    with progress_pass(desc, n, "images", enabled=progress) as bar:
        for start in range(0, n, PASS_CHUNK):
            out.append(fn(images[start : start + PASS_CHUNK]))
            bar.update(min(PASS_CHUNK, n - start))
    return out


def feature_pass(
    extractor: Extractor, images: torch.Tensor, desc: str = "features", progress: bool = True
) -> np.ndarray:
    """extractor.features over uint8 (N, 3, H, W) -> float64 (N, D), with progress unless progress=False."""
    parts = _in_chunks(lambda x: np.asarray(extractor.features(x), dtype=np.float64), images, desc, progress)
    return np.concatenate(parts)


def feature_class_pass(
    extractor: Any, images: torch.Tensor, desc: str = "features", progress: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """extractor.features_and_classes in one pass: float64 (N, D) features and int64 (N,) top-1 classes."""
    parts = _in_chunks(extractor.features_and_classes, images, desc, progress)
    return np.concatenate([f for f, _ in parts]).astype(np.float64), np.concatenate([c for _, c in parts])


def reference_subset(n_total: int, reference_n: int | None, seed: int) -> torch.Tensor | None:
    """Sorted indices of a seeded random subset of `reference_n` of `n_total` images; None = all of them."""
    if reference_n is None or reference_n == n_total:
        return None
    if not isinstance(reference_n, int) or not 2 <= reference_n <= n_total:
        raise CatganError(
            f"reference_n must be an int in [2, {n_total}] (the reference's size), got {reference_n!r}; "
            "omit it to use every image"
        )
    order = torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))
    return order[:reference_n].sort().values


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
                classes=z["classes"] if "classes" in z.files else None,
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
            extra = {} if stats.classes is None else {"classes": stats.classes}
            arrays = {"features": stats.features, "mu": stats.mu, "sigma": stats.sigma, **extra}
            np.savez(f, **arrays, meta=json.dumps(key_fields))
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
    reference_n: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> ReferenceStats:
    """Features and statistics of the images of the prepared dataset `data`, from cache when valid.

    images: the dataset already loaded (uint8 (N, 3, H, W)), to skip reading it again on a cache miss.
    cache_dir=None: default_cache_dir(). The cache is keyed by content, so any folder name works.
    log: told in one line when the features are computed (a cache miss: minutes on a CPU), not on a hit.
    reference_n: score against a random subset of this many images (seeded by `seed`), for a faster
    first pass; its FID is noisier and biased upwards at small n (benchmarks/reference_n.py measures it).
    progress: a progress bar with the time left during the feature pass.
    """
    from catgan.data.dataset import dataset_fingerprint, load_dataset, resolve

    folder = resolve(data, image_size)
    fingerprint = dataset_fingerprint(folder)
    if images is None:
        images = load_dataset(folder, image_size)
    if len(images) < 2:
        raise CatganError(f"dataset {folder} holds {len(images)} image(s); FID needs at least 2")
    size = int(images.shape[-1])
    subset = reference_subset(len(images), reference_n, seed)
    key_fields = {
        "fingerprint": fingerprint,
        "image_size": size,
        "resize": extractor.resize,
        "extractor": extractor.name,
        "version": CACHE_VERSION,
    }
    if subset is not None:  # only subsets add fields: the cache files of full references stay valid
        key_fields.update(reference_n=len(subset), seed=seed)
    classifier = getattr(extractor, "classifier", None) is not None
    if classifier:  # the class-leak check's top-1 classes come from the same pass and cache file
        key_fields["classifier"] = extractor.classifier_name  # type: ignore[attr-defined]
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = cache_key(fingerprint, size, extractor.resize, extractor.name + (" +classes" if classifier else ""))
    if subset is not None:
        key = f"{key}-n{len(subset)}-s{seed}"
    path = cache / f"{folder.name}-{key}.npz"
    if path.is_file() and (hit := _read(path, key_fields)) is not None:
        return hit
    if subset is not None:
        images = images[subset]  # (reference_n, 3, H, W)
    if log is not None:
        log(f"FID reference: features of the {len(images):,} images of {folder}, once (cached in {cache})")
    desc, classes = f"reference features ({folder.name})", None
    if classifier:
        features, classes = feature_class_pass(extractor, images, desc, progress)  # (N, D), (N,)
    else:
        features = feature_pass(extractor, images, desc, progress)  # (N, D)
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
        classes=classes,
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
