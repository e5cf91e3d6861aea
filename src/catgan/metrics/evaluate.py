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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from catgan.errors import CatganError
from catgan.metrics.catface import CatFaceDetector
from catgan.metrics.classleak import class_leak
from catgan.metrics.fid import fid_from_features, kid
from catgan.metrics.memorisation import pixel_vectors, save_closest_pairs, space_report
from catgan.metrics.prdc import precision_recall
from catgan.metrics.reference import (
    Extractor,
    ReferenceStats,
    feature_class_pass,
    feature_pass,
    reference_stats,
)

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
    reference_n: int | None = None  # score against a seeded subset of this many training faces
    holdout: bool = True  # also score against the dataset's held-out sibling, where there is one
    class_leak: bool = True  # the class-leak check, where the extractor has a classifier (Inception)
    floor: bool = True  # the real-vs-real floor beside each FID

    def __post_init__(self) -> None:
        """Everything the metrics need of these numbers, checked before any work (an Inception pass
        takes minutes on a CPU): FID needs 2 samples, KID subsets of 2, precision/recall k + 1."""
        for name, least in (("k", 1), ("kid_subsets", 1), ("kid_subset_size", 2), ("batch", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise CatganError(f"{name} must be a whole number >= {least}, got {value!r}")
        if self.n is not None and (isinstance(self.n, bool) or not isinstance(self.n, int)):
            raise CatganError(f"n must be a whole number, got {self.n!r}")
        if self.n is not None and self.n < self.min_n:
            raise CatganError(f"n must be >= {self.min_n} ({self.needs}), got {self.n}")

    @property
    def min_n(self) -> int:
        """The fewest samples (and real images) every metric can be computed on."""
        return max(2, self.k + 1)

    @property
    def needs(self) -> str:
        return f"FID needs 2 samples, KID 2 per subset, precision/recall with k={self.k} need {self.k + 1}"

    def check_real(self, count: int, what: object) -> None:
        """Refuse a real image set too small for the metrics, before any feature pass."""
        if count < self.min_n:
            raise CatganError(f"{what} holds {count} images; the metrics need >= {self.min_n} ({self.needs})")


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
    from catgan.progress import progress_pass

    chunks = []
    with progress_pass("drawing samples", n, "images") as bar:
        for start in range(seed, seed + n, batch):
            seeds = list(range(start, min(start + batch, seed + n)))
            chunks.append(_check_images(source(seeds), "generated images").cpu())
            if (got := len(chunks[-1])) != len(seeds):
                raise CatganError(f"the sample function returned {got} images for {len(seeds)} seeds")
            bar.update(len(seeds))
    return torch.cat(chunks)


def fid_kid(fake_feats: np.ndarray, real: ReferenceStats | np.ndarray, cfg: EvalConfig) -> dict:
    """{"fid", "kid_mean", "kid_std"} of (N, D) fake features against cached ReferenceStats (their mu and
    sigma as they are) or plain (M, D) real features: what both `compare` and FIDEvaluator report."""
    real_feats = real.features if isinstance(real, ReferenceStats) else np.asarray(real)
    if isinstance(real, ReferenceStats):
        fid = real.fid(fake_feats)
    else:
        fid = fid_from_features(real_feats, fake_feats)
    kid_mean, kid_std = kid(real_feats, fake_feats, cfg.kid_subsets, cfg.kid_subset_size, cfg.seed)
    return {"fid": fid, "kid_mean": kid_mean, "kid_std": kid_std}


def compare(
    fake_images: torch.Tensor,
    fake_feats: np.ndarray,
    real_images: torch.Tensor,
    real: ReferenceStats | np.ndarray,
    cfg: EvalConfig,
    detector: CatFaceDetector | None = None,
    space: str = "inception",
) -> dict:
    """Every metric of (N, ...) fake against (M, ...) real images and their (N, D) / (M, D) features.

    real: cached ReferenceStats (its mu / sigma are used as they are) or plain (M, D) features.
    Real images double as the 'training set' for memorisation; `space` names the features' space there.
    """
    real_feats = real.features if isinstance(real, ReferenceStats) else np.asarray(real)
    out: dict = {**fid_kid(fake_feats, real, cfg), **precision_recall(real_feats, fake_feats, k=cfg.k)}
    if cfg.catface:
        detector = detector or CatFaceDetector.load()
        out["catface_rate"] = detector.rate(fake_images, "cat-face detector (samples)")
        out["catface_rate_real"] = detector.rate(
            real_images[: max(len(fake_images), 1000)], "cat-face detector (real)"
        )
    if cfg.memorisation:
        feats = space_report(fake_feats, real_feats)
        pixel = space_report(pixel_vectors(fake_images), pixel_vectors(real_images))
        out["nn_distance"] = {space: feats.summary(), "pixel": pixel.summary()}
        out["copy_rate"] = max(feats.copy_rate, pixel.copy_rate)
        if cfg.pairs_png is not None:
            out["pairs_png"] = str(
                save_closest_pairs(fake_images, real_images, pixel, cfg.pairs_png, cfg.pairs)
            )
    return out


def _space(extractor: Extractor) -> str:
    """The short name of an extractor's feature space ("inception", "selfsup"), else its full name."""
    return getattr(extractor, "space", None) or extractor.name


def _info(extractor: Extractor, cfg: EvalConfig, start: float, **extra) -> dict:
    device = getattr(extractor, "device", "cpu")
    return {
        "features": _space(extractor),
        "extractor": extractor.name,
        "resize": extractor.resize,
        "device": str(device),
        "kid_subsets": cfg.kid_subsets,
        "kid_subset_size": cfg.kid_subset_size,
        "k": cfg.k,
        **extra,
        "seconds": time.perf_counter() - start,
    }


def real_floor(reference: ReferenceStats, n: int, seed: int = 0) -> dict | None:
    """The real-vs-real floor: FID between two disjoint random halves of a reference's features, each of
    min(n, N // 2) faces (None below 2 a side). A perfect generator scores about this at that n."""
    k = min(n, reference.n // 2)
    if k < 2:
        return None
    order = np.random.default_rng(seed).permutation(reference.n)
    a, b = reference.features[order[:k]], reference.features[order[k : 2 * k]]  # (k, D) each
    fid = fid_from_features(a.astype(np.float64), b.astype(np.float64))
    return {"fid": fid, "n_per_half": int(k), "of": reference.n}


def sample_features(
    extractor: Extractor, images: torch.Tensor, classes: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """(N, D) features of generated images, and their (N,) ImageNet top-1 classes from the same pass
    when `classes` and the extractor has a classifier; with a progress bar."""
    if classes and getattr(extractor, "classifier", None) is not None:
        return feature_class_pass(extractor, images, "sample features")
    return feature_pass(extractor, images, "sample features"), None


def _leak(reference: ReferenceStats, fake_classes: np.ndarray | None, extractor: Extractor) -> dict | None:
    if fake_classes is None or reference.classes is None:
        return None
    return class_leak(reference.classes, fake_classes, extractor.classifier_name).as_json()  # type: ignore[attr-defined]


def _against_holdout(
    folder: Path,
    fake_feats: np.ndarray,
    fake_classes: np.ndarray | None,
    extractor: Extractor,
    cfg: EvalConfig,
    cache_dir: str | Path | None,
    log: Callable[[str], None] | None,
    size: int,
) -> tuple[dict | None, str | None]:
    """The samples' scores against `folder`'s held-out sibling: (block, None), (None, the line saying why
    there is none), or (None, None) for a dataset prepared without --holdout."""
    from catgan.data.dataset import load_dataset
    from catgan.data.split import holdout_folder

    held = holdout_folder(folder)
    if held is None:
        return None, None
    if not (held / "dataset.json").is_file():
        return None, f"no held-out report: {held}, which {folder}/dataset.json records, is missing"
    try:
        images = load_dataset(held)  # (M, 3, S, S); an empty folder: one CatganError line
    except CatganError as err:
        return None, f"no held-out report: {err}"
    if len(images) < cfg.min_n:
        return None, f"no held-out report: {held} holds {len(images)} images, the metrics need >= {cfg.min_n}"
    _check_size(images, size, "the held-out faces", folder)
    stats = reference_stats(held, extractor, cache_dir, images=images, log=log)
    block = {
        "data": str(held),
        "n_real": stats.n,
        **fid_kid(fake_feats, stats, cfg),
        **precision_recall(stats.features, fake_feats, k=cfg.k),
        "reference_cached": stats.from_cache,
    }
    if cfg.floor:
        block["floor"] = real_floor(stats, len(fake_feats), cfg.seed)
    if cfg.class_leak and (leak := _leak(stats, fake_classes, extractor)) is not None:
        block["class_leak"] = leak
    return block, None


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
    """Generated samples against the real dataset `data` (all its images, statistics cached) and, where
    `data` has a held-out sibling (prepare --holdout), against the held-out faces too.

    `data` may be a folder of prepared datasets (`catgan prepare --out`): image_size picks its `cats-S`.

    Returns fid, kid_mean, kid_std, precision, recall, density, coverage, catface_rate,
    catface_rate_real, nn_distance {SPACE, pixel}, copy_rate, floor (the real-vs-real FID of two halves
    of the reference at that n), class_leak (Inception: the ImageNet top-1 histograms of the same pass),
    holdout (the same scores against the held-out faces; None without them, holdout_note saying why
    where they were expected), n, n_real, features, extractor, resize, device, seconds (and pairs_png).
    """
    from catgan.data.dataset import load_dataset, resolve

    cfg = cfg or EvalConfig()
    start = time.perf_counter()
    folder = resolve(data, image_size)
    real_images = load_dataset(folder)  # (M, 3, S, S)
    cfg.check_real(len(real_images), f"dataset {folder}")  # before any feature pass
    size = int(real_images.shape[-1])
    if isinstance(samples, torch.Tensor):
        _check_size(_check_images(samples, "samples"), size, "the samples", folder)
    n = cfg.n or DEFAULT_N
    fake_images = draw_samples(samples, n, cfg.batch, cfg.seed)  # (n, 3, H, W)
    _check_size(fake_images, size, "the generated images", folder)
    reference = reference_stats(
        folder, extractor, cache_dir, images=real_images, log=log, reference_n=cfg.reference_n, seed=cfg.seed
    )
    fake_feats, fake_classes = sample_features(extractor, fake_images, cfg.class_leak)  # (n, D), (n,)
    result = compare(fake_images, fake_feats, real_images, reference, cfg, detector, _space(extractor))
    if cfg.floor:
        result["floor"] = real_floor(reference, n, cfg.seed)
    if cfg.class_leak and (leak := _leak(reference, fake_classes, extractor)) is not None:
        result["class_leak"] = leak
    if cfg.holdout:
        held, why = _against_holdout(folder, fake_feats, fake_classes, extractor, cfg, cache_dir, log, size)
        result["holdout"] = held
        if why is not None:
            result["holdout_note"] = why
            if log is not None:
                log(why)
    return {
        **result,
        **_info(
            extractor,
            cfg,
            start,
            n=n,
            n_real=reference.n,
            reference_n=cfg.reference_n,
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
    rng = np.random.default_rng(cfg.seed)
    same = folder_a.resolve() == folder_b.resolve()
    if same:
        n = cfg.n or len(images_a) // 2
        if 2 * n > len(images_a):
            raise CatganError(
                f"n={n} is larger than half of dataset {folder_a} ({len(images_a)} images); "
                f"use n <= {len(images_a) // 2}"
            )
        images_b = images_a
    else:
        images_b = load_dataset(folder_b)
        _check_size(images_b, int(images_a.shape[-1]), f"the images of {folder_b}", folder_a)
        smallest = min(len(images_a), len(images_b))
        n = cfg.n or smallest
        if n > smallest:
            raise CatganError(
                f"n={n} is larger than the {smallest} images of the smaller dataset; use n <= {smallest}"
            )
    cfg.check_real(n, "each side of the comparison")
    stats_a = reference_stats(folder_a, extractor, cache_dir, images=images_a, log=log)  # checked: now work
    if same:
        order = rng.permutation(len(images_a))
        idx_a, idx_b = order[:n], order[n : 2 * n]
        stats_b = stats_a
    else:
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
        _space(extractor),
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
        # {"fid": ..., "kid_mean": ..., "kid_std": ..., "n": 2000, "extractor": ..., "space": ..., ...}

    By default it measures what may choose checkpoints (metrics.selection): the self-supervised space,
    on the dataset's held-out sibling (`cats-S-holdout`) where there is one, else on the training faces
    with a note to `log`. holdout=False measures on `data` itself; `extractor` picks another space (for
    reporting: training refuses Inception and the discriminator's own networks for choosing best.pt).
    The same seeds are used at every call, so successive values differ only by the generator.
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
        log: Callable[[str], None] | None = None,  # told about the faces used and the reference pass
        holdout: bool = True,
    ) -> None:
        from catgan.data.dataset import load_dataset, resolve
        from catgan.metrics.features import load_extractor
        from catgan.metrics.selection import SELECTION_SPACE, say, selection_folder
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
        self.folder = resolve(data)
        if holdout:
            self.folder, why = selection_folder(self.folder)
            if why:
                say(log, why)
        self.extractor = extractor or load_extractor(SELECTION_SPACE, resolve_device(str(device)), batch)
        images = load_dataset(self.folder)
        self.image_size = int(images.shape[-1])
        self.reference = reference_stats(self.folder, self.extractor, cache_dir, images=images, log=log)
        space = getattr(self.extractor, "space", self.extractor.name)
        self.label = f"{space} space, against {self.folder.name} ({self.reference.n} faces)"

    def __call__(self, sample_fn: SampleFn | torch.Tensor) -> dict:
        start = time.perf_counter()
        fake = draw_samples(sample_fn, self.cfg.n, self.cfg.batch, self.cfg.seed)
        _check_size(fake, self.image_size, "the generated images", self.folder)
        feats = feature_pass(self.extractor, fake, "sample features")  # (n, D)
        return {
            **fid_kid(feats, self.reference, self.cfg),
            **_info(self.extractor, self.cfg, start, n=self.cfg.n, n_real=self.reference.n),
            "data": str(self.folder),
        }


def _floor_text(floor: dict) -> str:
    halves = f"two halves of {floor['n_per_half']:,} of the {floor['of']:,} faces"
    return f"{floor['fid']:.2f} (real vs real: {halves})"


def _leak_rows(leak: dict, prefix: str) -> list[tuple[str, str]]:
    js = f"{leak['js_distance']:.3f} (ImageNet top-1 histograms; 0 = same)"
    cats = f"{leak['cat_share']:.3f} (real faces {leak['cat_share_real']:.3f})"
    return [(f"{prefix}class leak: JS distance", js), (f"{prefix}class leak: cat share", cats)]


def _holdout_rows(result: dict) -> list[tuple[str, str]]:
    held = result.get("holdout")
    if not held:
        note = result.get("holdout_note")
        return [("held-out faces", note)] if note else []
    kid = f"{1000 * held['kid_mean']:.2f} +- {1000 * held['kid_std']:.2f}"
    rows = [
        ("held-out: FID", f"{held['fid']:.2f} against the {held['n_real']:,} faces of {held['data']}"),
        ("held-out: KID x 1000", kid),
        ("held-out: precision / recall", f"{held['precision']:.3f} / {held['recall']:.3f}"),
    ]
    if held.get("floor"):
        rows.append(("held-out: FID floor", _floor_text(held["floor"])))
    if held.get("class_leak"):
        rows += _leak_rows(held["class_leak"], "held-out: ")
    return rows


def format_table(result: dict) -> str:
    """The headline numbers as an aligned two-column table, with what they were measured on; below it, at
    n < 10,000, the line saying FID there is not comparable to FID-10k (metrics.caveat)."""
    from catgan.metrics.caveat import fid_caveat

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
    if result.get("floor"):
        lines.append(("FID floor", _floor_text(result["floor"])))
    if result.get("class_leak"):
        lines += _leak_rows(result["class_leak"], "")
    nn = result.get("nn_distance", {})
    space = next((k for k in nn if k != "pixel"), None)
    for name in (space, "pixel"):
        if name in nn:
            s, h = nn[name]["samples"]["median"], nn[name]["real_heldout"]["median"]
            lines.append((f"NN distance {name} (median)", f"{s:.3f} (real held-out {h:.3f})"))
    if space in nn and "pixel" in nn:  # 4 decimals resolve 1 in 10,000 samples
        inc, pix = nn[space], nn["pixel"]
        rates = f"{inc['copy_rate']:.4f} / {pix['copy_rate']:.4f}"
        lines.append(
            (f"copy rate ({space} / pixel)", f"{rates} ({inc['copies']} / {pix['copies']} of {result['n']})")
        )
    lines += _holdout_rows(result)
    n_real = result.get("n_real")
    lines += [
        ("n", f"{result.get('n')}" + (f" vs {n_real} real" if n_real is not None else "")),
        ("extractor", result.get("extractor", "")),
        ("resize", result.get("resize", "")),
        ("device", result.get("device", "")),
        ("seconds", f"{result.get('seconds', 0):.1f}"),
    ]
    width = max(len(label) for label, _ in lines)
    table = "\n".join(f"{label:<{width}}  {value}" for label, value in lines)
    caveat = fid_caveat(int(result["n"]), result.get("features", "inception")) if "n" in result else None
    return table + (f"\n{caveat}" if caveat else "")
