"""Orchestration: samples (a generator or a second real dataset) against a real dataset -> one dict.

    extractor = InceptionExtractor.load("cuda")
    result = evaluate(sample_fn, "data/faces/cats-64", extractor, EvalConfig(n=10000))
    result = evaluate_real("data/faces/cats-64", "data/faces/cats-64", extractor)  # the floor: halves

`sample_fn(seeds) -> uint8 (len(seeds), 3, H, W)` (e.g. a closure over catgan.generate.generate_images),
or a uint8 tensor of ready images. During training, `FIDEvaluator` keeps the extractor and the cached
reference statistics and computes FID / KID for a sample function every N steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from catgan.errors import CatganError
from catgan.metrics.catface import CatFaceDetector
from catgan.metrics.fid import fid_from_features, kid
from catgan.metrics.memorisation import pixel_vectors, save_closest_pairs, space_report
from catgan.metrics.prdc import precision_recall
from catgan.metrics.reference import Extractor, ReferenceStats, reference_stats

SampleFn = Callable[[Sequence[int]], torch.Tensor]  # seeds -> uint8 (len(seeds), 3, H, W)
DEFAULT_N = 10000


@dataclass(frozen=True)
class EvalConfig:
    n: int | None = None  # samples (None: 10000) or images per side of two real datasets (None: all)
    batch: int = 64  # images generated per call of the sample function
    seed: int = 0  # samples use seeds seed .. seed + n - 1; real subsets are drawn with it
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    k: int = 3  # k-NN manifolds for precision / recall
    catface: bool = True
    memorisation: bool = True
    pairs_png: Path | None = None  # where to draw the closest sample / training pairs
    pairs: int = 16

    def __post_init__(self) -> None:
        if self.n is not None and self.n < 2:
            raise CatganError(f"n must be >= 2 (FID needs two samples), got {self.n}")
        if self.batch < 1:
            raise CatganError(f"batch must be >= 1, got {self.batch}")


def _check_images(images: torch.Tensor, what: str) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images)
        raise CatganError(f"{what} must be uint8 images (N, 3, H, W), got {got}")
    if images.shape[1] != 3:
        raise CatganError(f"{what} must have 3 channels, got {images.shape[1]}")
    return images


def _check_size(images: torch.Tensor, size: int, what: str, data: object) -> None:
    if tuple(images.shape[-2:]) != (size, size):
        h, w = images.shape[-2:]
        raise CatganError(
            f"size mismatch: {what} are {w}x{h} but dataset {data} holds {size}x{size} images; "
            f"evaluate against a cats-{w} dataset"
        )


def draw_samples(source: SampleFn | torch.Tensor, n: int, batch: int, seed: int = 0) -> torch.Tensor:
    """n uint8 images (n, 3, H, W) on the CPU: the first n of a tensor, or seeds seed..seed+n-1."""
    if isinstance(source, torch.Tensor):
        _check_images(source, "samples")
        if n > len(source):
            raise CatganError(
                f"n={n} is larger than the {len(source)} images available; use n <= {len(source)}"
            )
        return source[:n].cpu()
    chunks = []
    for start in range(seed, seed + n, batch):
        seeds = list(range(start, min(start + batch, seed + n)))
        chunks.append(_check_images(source(seeds), "generated images").cpu())
        if len(chunks[-1]) != len(seeds):
            raise CatganError(f"the sample function returned {len(chunks[-1])} images for {len(seeds)} seeds")
    return torch.cat(chunks)


def compare(
    fake_images: torch.Tensor,
    fake_feats: np.ndarray,
    real_images: torch.Tensor,
    real: ReferenceStats | np.ndarray,
    cfg: EvalConfig,
    detector: CatFaceDetector | None = None,
) -> dict:
    """Every metric of (N, ...) fake against (M, ...) real images and their (N, D) / (M, D) features.

    real: cached ReferenceStats (its mu / sigma are used as they are) or plain (M, D) features.
    Real images double as the 'training set' for memorisation.
    """
    real_feats = real.features if isinstance(real, ReferenceStats) else np.asarray(real)
    fid = (
        real.fid(fake_feats)
        if isinstance(real, ReferenceStats)
        else fid_from_features(real_feats, fake_feats)
    )
    kid_mean, kid_std = kid(real_feats, fake_feats, cfg.kid_subsets, cfg.kid_subset_size, cfg.seed)
    out: dict = {
        "fid": fid,
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        **precision_recall(real_feats, fake_feats, k=cfg.k),
    }
    if cfg.catface:
        detector = detector or CatFaceDetector.load()
        out["catface_rate"] = detector.rate(fake_images)
        out["catface_rate_real"] = detector.rate(real_images[: max(len(fake_images), 1000)])
    if cfg.memorisation:
        inception = space_report(fake_feats, real_feats)
        pixel = space_report(pixel_vectors(fake_images), pixel_vectors(real_images))
        out["nn_distance"] = {"inception": inception.summary(), "pixel": pixel.summary()}
        out["copy_rate"] = max(inception.copy_rate, pixel.copy_rate)
        if cfg.pairs_png is not None:
            out["pairs_png"] = str(
                save_closest_pairs(fake_images, real_images, pixel, cfg.pairs_png, cfg.pairs)
            )
    return out


def _info(extractor: Extractor, cfg: EvalConfig, start: float, **extra) -> dict:
    device = getattr(extractor, "device", "cpu")
    return {
        "extractor": extractor.name,
        "resize": extractor.resize,
        "device": str(device),
        "kid_subsets": cfg.kid_subsets,
        "kid_subset_size": cfg.kid_subset_size,
        "k": cfg.k,
        **extra,
        "seconds": time.perf_counter() - start,
    }


def evaluate(
    samples: SampleFn | torch.Tensor,
    data: str | Path,
    extractor: Extractor,
    cfg: EvalConfig | None = None,
    cache_dir: str | Path | None = None,
    detector: CatFaceDetector | None = None,
    log: Callable[[str], None] | None = None,
    image_size: int | None = None,
) -> dict:
    """Generated samples against the real dataset `data` (all its images, statistics cached).

    `data` may be a folder of prepared datasets (`catgan prepare --out`): image_size picks its `cats-S`.

    Returns fid, kid_mean, kid_std, precision, recall, density, coverage, catface_rate,
    catface_rate_real, nn_distance {inception, pixel}, copy_rate, n, n_real, extractor, resize,
    device, seconds (and pairs_png when asked).
    """
    from catgan.data.dataset import load_dataset, resolve

    cfg = cfg or EvalConfig()
    start = time.perf_counter()
    folder = resolve(data, image_size)
    real_images = load_dataset(folder)  # (M, 3, S, S)
    size = int(real_images.shape[-1])
    if isinstance(samples, torch.Tensor):
        _check_size(_check_images(samples, "samples"), size, "the samples", folder)
    n = cfg.n or DEFAULT_N
    fake_images = draw_samples(samples, n, cfg.batch, cfg.seed)  # (n, 3, H, W)
    _check_size(fake_images, size, "the generated images", folder)
    reference = reference_stats(folder, extractor, cache_dir, images=real_images, log=log)
    fake_feats = extractor.features(fake_images)  # (n, D)
    result = compare(fake_images, fake_feats, real_images, reference, cfg, detector)
    return {
        **result,
        **_info(
            extractor,
            cfg,
            start,
            n=n,
            n_real=reference.n,
            data=str(folder),
            image_size=size,
            reference_cached=reference.from_cache,
        ),
    }


def evaluate_real(
    data: str | Path,
    against: str | Path,
    extractor: Extractor,
    cfg: EvalConfig | None = None,
    cache_dir: str | Path | None = None,
    detector: CatFaceDetector | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Two real datasets, n random images of each; the same dataset twice -> two disjoint halves (the floor).

    cfg.n larger than what is available (half of the images for one dataset) is an error.
    """
    from catgan.data.dataset import load_dataset, resolve

    cfg = cfg or EvalConfig()
    start = time.perf_counter()
    folder_a, folder_b = resolve(data), resolve(against)
    images_a = load_dataset(folder_a)
    stats_a = reference_stats(folder_a, extractor, cache_dir, images=images_a, log=log)
    rng = np.random.default_rng(cfg.seed)
    if folder_a.resolve() == folder_b.resolve():
        n = cfg.n or len(images_a) // 2
        if 2 * n > len(images_a):
            raise CatganError(
                f"n={n} is larger than half of dataset {folder_a} ({len(images_a)} images); "
                f"use n <= {len(images_a) // 2}"
            )
        order = rng.permutation(len(images_a))
        idx_a, idx_b = order[:n], order[n : 2 * n]
        images_b, stats_b = images_a, stats_a
    else:
        images_b = load_dataset(folder_b)
        _check_size(images_b, int(images_a.shape[-1]), f"the images of {folder_b}", folder_a)
        smallest = min(len(images_a), len(images_b))
        n = cfg.n or smallest
        if n > smallest:
            raise CatganError(
                f"n={n} is larger than the {smallest} images of the smaller dataset; use n <= {smallest}"
            )
        stats_b = reference_stats(folder_b, extractor, cache_dir, images=images_b, log=log)
        idx_a, idx_b = rng.permutation(len(images_a))[:n], rng.permutation(len(images_b))[:n]
    ta, tb = torch.from_numpy(np.sort(idx_a)), torch.from_numpy(np.sort(idx_b))
    result = compare(
        images_b[tb],
        stats_b.features[np.sort(idx_b)].astype(np.float64),
        images_a[ta],
        stats_a.features[np.sort(idx_a)].astype(np.float64),
        cfg,
        detector,
    )
    return {
        **result,
        **_info(
            extractor,
            cfg,
            start,
            n=n,
            n_real=n,
            data=str(folder_a),
            against=str(folder_b),
            image_size=int(images_a.shape[-1]),
        ),
    }


class FIDEvaluator:
    """FID / KID of a sample function against a dataset's cached statistics, for use during training.

        evaluator = FIDEvaluator("data/faces/cats-64", n=2000, device="cuda")   # loads + caches once
        metrics = evaluator(lambda seeds: generate_images(gen, seeds))  # gen: a LoadedGenerator
        # {"fid": ..., "kid_mean": ..., "kid_std": ..., "n": 2000, "extractor": ..., "resize": ..., ...}

    The same seeds are used at every call, so successive values differ only by the generator.
    The first use of a dataset computes features of all its images (seconds on a GPU, ~15-20 min for
    7k images on a 2-core CPU); later runs read them from the cache.
    """

    def __init__(
        self,
        data: str | Path,
        n: int = 2000,  # samples per evaluation
        device: str | torch.device = "auto",
        cache_dir: str | Path | None = None,
        batch: int = 64,
        extractor: Extractor | None = None,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        seed: int = 0,
        log: Callable[[str], None] | None = None,  # told when the reference features are computed
    ) -> None:
        from catgan.data.dataset import load_dataset, resolve
        from catgan.metrics.inception import InceptionExtractor
        from catgan.runtime import resolve_device

        self.cfg = EvalConfig(
            n=n,
            batch=batch,
            seed=seed,
            kid_subsets=kid_subsets,
            kid_subset_size=kid_subset_size,
            catface=False,
            memorisation=False,
        )
        self.extractor = extractor or InceptionExtractor.load(resolve_device(str(device)), batch=batch)
        self.folder = resolve(data)
        images = load_dataset(self.folder)
        self.image_size = int(images.shape[-1])
        self.reference = reference_stats(self.folder, self.extractor, cache_dir, images=images, log=log)

    def __call__(self, sample_fn: SampleFn | torch.Tensor) -> dict:
        start = time.perf_counter()
        fake = draw_samples(sample_fn, self.cfg.n, self.cfg.batch, self.cfg.seed)
        _check_size(fake, self.image_size, "the generated images", self.folder)
        feats = self.extractor.features(fake)  # (n, D)
        kid_mean, kid_std = kid(
            self.reference.features, feats, self.cfg.kid_subsets, self.cfg.kid_subset_size, self.cfg.seed
        )
        return {
            "fid": self.reference.fid(feats),
            "kid_mean": kid_mean,
            "kid_std": kid_std,
            **_info(self.extractor, self.cfg, start, n=self.cfg.n, n_real=self.reference.n),
        }


def config_dict(cfg: EvalConfig) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}


def format_table(result: dict) -> str:
    """The headline numbers as an aligned two-column table, with what they were measured on."""
    rows = [
        ("FID", "fid", "{:.2f}"),
        ("KID x 1000", None, None),
        ("precision", "precision", "{:.3f}"),
        ("recall", "recall", "{:.3f}"),
        ("density", "density", "{:.3f}"),
        ("coverage", "coverage", "{:.3f}"),
        ("cat-face rate", "catface_rate", "{:.3f}"),
        ("cat-face rate (real)", "catface_rate_real", "{:.3f}"),
    ]
    lines = []
    for label, key, fmt in rows:
        if key is None and "kid_mean" in result:
            lines.append((label, f"{1000 * result['kid_mean']:.2f} +- {1000 * result['kid_std']:.2f}"))
        elif key in result:
            lines.append((label, fmt.format(result[key])))
    nn = result.get("nn_distance", {})
    for space in ("inception", "pixel"):
        if space in nn:
            s, h = nn[space]["samples"]["median"], nn[space]["real_heldout"]["median"]
            lines.append((f"NN distance {space} (median)", f"{s:.3f} (real held-out {h:.3f})"))
    if "inception" in nn and "pixel" in nn:  # 4 decimals resolve 1 in 10,000 samples
        inc, pix = nn["inception"], nn["pixel"]
        rates = f"{inc['copy_rate']:.4f} / {pix['copy_rate']:.4f}"
        lines.append(
            ("copy rate (inception / pixel)", f"{rates} ({inc['copies']} / {pix['copies']} of {result['n']})")
        )
    n_real = result.get("n_real")
    lines += [
        ("n", f"{result.get('n')}" + (f" vs {n_real} real" if n_real is not None else "")),
        ("extractor", result.get("extractor", "")),
        ("resize", result.get("resize", "")),
        ("device", result.get("device", "")),
        ("seconds", f"{result.get('seconds', 0):.1f}"),
    ]
    width = max(len(label) for label, _ in lines)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in lines)
