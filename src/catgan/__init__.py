"""catgan: learn to draw new cat faces from photos.

    import catgan
    g = catgan.load("cats-64")          # a bundled name, a .safetensors file, a run folder or a checkpoint
    x = g.generate([0, 1, 2, 3])        # uint8 (4, 3, 64, 64): the same seed -> the same cat as the CLI
    g.save_grid(range(16), "cats.png", nrow=4)
    walk = g.interpolate([3, 7, 11], frames=30)            # uint8 (30, 3, 64, 64)

    catgan.prepare(["cat-dataset.zip"], "data/faces")      # `catgan prepare`
    catgan.train("data/faces/cats-64", "runs/c64", preset="cats-64", max_steps=1000)  # `catgan train`
    catgan.evaluate("runs/c64", "data/faces/cats-64", n=2000)                         # `catgan evaluate`

Importing catgan loads nothing else (no torch): each function imports what it needs when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import torch

    from catgan.config import RunOptions
    from catgan.data.prepare import PrepareReport
    from catgan.generate import LoadedGenerator
    from catgan.training.loop import TrainResult

__all__ = ["evaluate", "load", "prepare", "train"]


def load(
    source: str | Path = "cats-64", ema: bool = True, device: str | torch.device = "cpu"
) -> LoadedGenerator:
    """A generator ready to draw, from a bundled model's name, an exported .safetensors file, a run folder
    (its latest checkpoint) or a checkpoint file; `ema` picks a run's EMA weights when it has them."""
    from catgan.generate import load as load_source
    from catgan.sources import resolve

    return load_source(resolve(source, "catgan.load:"), ema, device)


def prepare(
    sources: Sequence[str | Path],
    out: str | Path,
    sizes: Sequence[int] = (64, 128),
    image_format: str = "png",
    quality: int = 95,
    workers: int = 0,
    outliers: bool = True,
    square: str = "auto",
    progress: bool = True,
) -> PrepareReport:
    """Turn cat photos (the Kaggle CAT zip, CAT_0x folders or face crops) into one prepared dataset folder
    per size under `out`, as `catgan prepare` does (see catgan.data.prepare)."""
    from catgan.data.prepare import PrepareConfig
    from catgan.data.prepare import prepare as run_prepare

    config = PrepareConfig(
        sources=tuple(Path(s) for s in sources), out=Path(out), sizes=tuple(sizes), image_format=image_format,
        quality=quality, workers=workers, outliers=outliers, square=square, progress=progress,
    )  # fmt: skip
    return run_prepare(config)


def train(
    dataset: str | Path | torch.Tensor,
    run: str | Path,
    preset: str | None = None,
    init_from: str | Path | None = None,
    options: RunOptions | None = None,
    *,
    resume: bool = False,
    dry_run: bool = False,
    evaluator: Callable | None = None,
    log: Callable[[str], None] = print,
    dist_ctx: Any = None,
    eval_log: Callable[[str], None] | None = None,
    **overrides: Any,
) -> TrainResult:
    """Train (or continue) the run folder `run` on a prepared dataset, as `catgan train` does: the configs
    are the preset's (new runs: cats-64), the run's own when it is continued, or the --init-from source's,
    with `overrides` on top: TrainConfig fields (e.g. max_steps=1000, lr_g=2e-5) and RunOptions' cadence
    (sample_every, checkpoint_every, keep_checkpoints, eval_every, eval_n, log_every; a continued run keeps
    its recorded cadence unless overridden here or in `options`). With eval_every, FID against `dataset`
    every eval_every steps (metrics.evaluate.FIDEvaluator; `eval_log` hears about its reference features)
    unless an `evaluator` is given."""
    import dataclasses

    import torch

    from catgan.config import OUTPUT_FIELDS, TrainConfig
    from catgan.errors import CatganError
    from catgan.training.loop import train as run_train
    from catgan.training.state import resolve_configs

    known = {f.name for f in dataclasses.fields(TrainConfig)} | set(OUTPUT_FIELDS)
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise CatganError(f"catgan.train: {unknown} are not TrainConfig fields (nor RunOptions' cadence)")
    model, cfg, options = resolve_configs(run, preset, init_from, overrides, options)
    main = dist_ctx is None or dist_ctx.is_main
    from_files = not isinstance(dataset, torch.Tensor)
    if evaluator is None and options.eval_every and not dry_run and main and from_files:
        from catgan.metrics.evaluate import FIDEvaluator

        n, device = options.eval_n, options.device
        evaluator = FIDEvaluator(dataset, n=n, device=device, batch=cfg.batch, log=eval_log)
    return run_train(
        dataset, model, cfg, run, options, resume=resume, evaluator=evaluator, dry_run=dry_run,
        dist_ctx=dist_ctx, log=log, init_from=init_from,
    )  # fmt: skip


def evaluate(
    source: str | Path | LoadedGenerator | None,
    data: str | Path,
    against: str | Path | None = None,
    extractor: str = "inception",
    device: str | torch.device = "auto",
    ema: bool = True,
    fp16: bool = False,
    cache_dir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    precision: str = "auto",
    **eval_options: Any,
) -> dict:
    """Measure a generator (a source as for load(), or a loaded one) against the real dataset `data` (and
    its held-out sibling, where prepare --holdout made one), or a second real dataset `against` it (source
    None), as `catgan evaluate` does: FID, KID, precision / recall, the real-vs-real floor, cat-face
    rate, memorisation and, in Inception's space, the class-leak check; in the feature space `extractor`
    ("inception" or "selfsup", metrics.features). precision: Inception's (auto, fp32, bf16).
    eval_options: EvalConfig fields (n, batch, seed, reference_n, holdout, class_leak, catface, ...)."""
    from catgan.generate import LoadedGenerator, generate_images
    from catgan.generate import load as load_source
    from catgan.metrics.evaluate import EvalConfig, evaluate_real
    from catgan.metrics.evaluate import evaluate as run_evaluate
    from catgan.metrics.features import load_extractor
    from catgan.runtime import resolve_device
    from catgan.sources import resolve

    cfg = EvalConfig(**eval_options)
    dev = resolve_device(device)
    classes = cfg.class_leak and against is None
    features = load_extractor(extractor, dev, cfg.batch, fp16, precision, classes)
    if against is not None:
        return evaluate_real(data, against, features, cfg, cache_dir, log=log)
    gen = (
        source if isinstance(source, LoadedGenerator) else load_source(resolve(source or "cats-64"), ema, dev)
    )
    sample_fn = lambda seeds: generate_images(gen, seeds, batch=cfg.batch)  # noqa: E731
    result = run_evaluate(sample_fn, data, features, cfg, cache_dir, log=log, image_size=gen.model.image_size)
    return {**result, "generator": gen.name}
