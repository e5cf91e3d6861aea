"""The class-leak check: how far generated images' ImageNet top-1 class histogram is from the real faces'.

Kynkäänniemi et al. (ICLR 2023) showed that Inception FID falls when generated images merely match the
ImageNet class histogram of the real ones, which a discriminator built on an ImageNet network can learn
to do. This module reports, for two sets of top-1 classes over ImageNet's 1,000 classes:
- `js_distance`: the Jensen-Shannon distance of the two histograms (sqrt of the JS divergence in bits:
  0 for identical histograms, 1 for disjoint ones), and
- `cat_share` / `cat_share_real`: the share of each set whose top-1 class is one of ImageNet's domestic
  cats, classes 281-285 (tabby, tiger cat, Persian, Siamese, Egyptian cat).

Where the classes come from: the Inception TorchScript file FID uses ends at pool3 and holds no classifier
(no fc weights, no logits), so `InceptionExtractor.features_and_classes` runs the bundled ImageNet
EfficientNet-Lite0 classifier (`catgan.backbones`) on the very 299 px batch Inception sees, in the same
pass over the images. Note that this is a network a Projected-GAN discriminator uses: a leak towards its
classes shows here first.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from catgan.errors import CatganError

N_CLASSES = 1000
CAT_CLASSES = (281, 282, 283, 284, 285)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def class_histogram(top1: np.ndarray, n_classes: int = N_CLASSES) -> np.ndarray:
    """(N,) integer classes -> (n_classes,) float64 shares summing to 1."""
    top1 = np.asarray(top1)
    if top1.ndim != 1 or len(top1) == 0 or not np.issubdtype(top1.dtype, np.integer):
        raise CatganError(f"expected a non-empty 1-d array of integer classes, got {top1.dtype} {top1.shape}")
    if top1.min() < 0 or top1.max() >= n_classes:
        raise CatganError(f"classes must be in [0, {n_classes}), got {top1.min()}..{top1.max()}")
    return np.bincount(top1, minlength=n_classes).astype(np.float64) / len(top1)


def js_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between two probability vectors of the same length."""
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        nz = a > 0  # 0 log 0 = 0; where a > 0, m > 0 too
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return float(np.sqrt(max(0.0, 0.5 * kl(p) + 0.5 * kl(q))))


def cat_share(top1: np.ndarray) -> float:
    """The share of images whose top-1 ImageNet class is a domestic cat (281-285)."""
    return float(np.isin(np.asarray(top1), CAT_CLASSES).mean())


@dataclass(frozen=True)
class ClassLeak:
    js_distance: float  # 0 = the same class histogram as the real faces
    cat_share: float  # generated images landing in ImageNet's cat classes
    cat_share_real: float
    n: int
    n_real: int
    classifier: str

    def as_json(self) -> dict:
        return asdict(self)


def class_leak(real_top1: np.ndarray, fake_top1: np.ndarray, classifier: str) -> ClassLeak:
    """The class-leak report of generated top-1 classes against real ones (each (N,) ints in [0, 1000))."""
    p, q = class_histogram(real_top1), class_histogram(fake_top1)
    return ClassLeak(
        js_distance=js_distance(p, q),
        cat_share=cat_share(fake_top1),
        cat_share_real=cat_share(real_top1),
        n=len(fake_top1),
        n_real=len(real_top1),
        classifier=classifier,
    )
