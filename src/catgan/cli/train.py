"""`catgan train` (catgan.train) and `catgan info` (a preset's parameters and FLOPs)."""

from __future__ import annotations

import argparse

from catgan.cli.options import beta, command, nonneg_float, nonneg_int, note, positive_float, positive_int

_TRAIN_EPILOG = """examples:
  catgan train data/faces/cats-64 --preset cats-64 --run runs/cats64
  catgan train data/faces/cats-64 --run runs/cats64 --epochs 50      # continue that run to epoch 50
  catgan train data/faces/cats-64 --run runs/cats64 --max-steps 30000 --lr-decay-steps 6000  # then anneal
  catgan train data/faces/cats-64 --preset cats-64 --run runs/c64 --device cuda --amp --compile
  catgan train data/faces/cats-64 --run runs/c64-aug --init-from runs/cats64 --flip --max-steps 32000
  catgan train data/my-cats/cats-64 --run runs/mine --init-from cats-64 --lr-g 2e-5 --max-steps 23000
  catgan train data/faces/cats-16 --preset tiny-16 --run runs/toy --max-steps 100 --dry-run
  torchrun --nproc-per-node 4 -m catgan train data/faces/cats-64 --preset cats-64 --run-dir runs/ddp

Options left out take the preset's value (or, when continuing a run, the run's own). Re-running into a
run folder continues it exactly where it stopped, on the data it records (--allow-new-data: on other
data, on purpose); a folder that is not a catgan run and not empty is refused. Only the stopping point
(--epochs, --max-steps), the logging cadence and a learning-rate decay that has not started yet
(--lr-decay-steps) may change.
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


def add_train(sub: argparse._SubParsersAction) -> None:
    def opt(group, *names: str, **kwargs) -> None:
        """An option that, when not given, leaves the preset's (or the run's) value: no default shown."""
        group.add_argument(*names, default=argparse.SUPPRESS, **kwargs)

    what = "Train a GAN on a prepared dataset (or continue a run)."
    p = command(sub, "train", what, _TRAIN_EPILOG, run_train)
    p.add_argument("dataset", help="a prepared dataset folder (from `catgan prepare`)")
    opt(
        p,
        "--preset",
        metavar="NAME",
        help="model + training preset (new runs: cats-64; `catgan info --list`)",
    )
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
    opt(g, "--loss", metavar="NAME", help="GAN loss, e.g. hinge (a wrong name lists the others)")
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
    o = p.add_argument_group("output (in steps; left out: the run's own, for a new run the default)")
    for name, kind, text in _OUTPUT_OPTIONS:
        opt(o, name, type=kind, help=text)
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
        "--allow-new-data",
        action="store_true",
        help="continue a run on other data than it was trained on (e.g. fine-tuning), with a note",
    )
    r.add_argument(
        "--dist-timeout", type=positive_float, default=900, help="torchrun: seconds a rank waits for another"
    )
    r.add_argument("--dry-run", action="store_true", help="check the data and print the config, then exit")


# RunOptions' cadence (config.OUTPUT_FIELDS): option, type, help
_OUTPUT_OPTIONS = (
    ("--sample-every", nonneg_int, "steps between sample grids (0: at the start and end only; default 500)"),
    ("--checkpoint-every", nonneg_int, "steps between checkpoints (0: at the end only; default 500)"),
    ("--keep", positive_int, "step checkpoints to keep, the newest (default 3)"),
    (
        "--eval-every",
        nonneg_int,
        "steps between FID evaluations in the selfsup space on held-out faces, "
        "which pick RUN/checkpoints/best.pt (0: off, the default)",
    ),
    ("--eval-n", positive_int, "generated images per FID evaluation (default 2000)"),
    ("--log-every", positive_int, "steps per metrics.jsonl line (default 10)"),
)
# TrainConfig and RunOptions cadence fields -> their options' dest (given only when on the command line)
_TRAIN_OPTIONS = {
    **{f: f for f in ("epochs", "max_steps", "batch", "lr_d", "lr_g", "lr_decay_steps", "beta1", "loss")},
    **{f: f for f in ("label_smoothing", "ema", "diffaug", "flip", "seed", "d_warmup")},
    **{"r1_gamma": "r1", "sync_batchnorm": "sync_bn"},
    **{f: f for f in ("sample_every", "checkpoint_every", "eval_every", "eval_n", "log_every")},
    "keep_checkpoints": "keep",
}


def run_train(args: argparse.Namespace) -> int:
    import catgan
    from catgan import distributed
    from catgan.config import RunOptions
    from catgan.runtime import resolve_device

    given = {field: getattr(args, dest) for field, dest in _TRAIN_OPTIONS.items() if hasattr(args, dest)}
    ctx = distributed.env_context()
    device = distributed.local_device(args.device, ctx)
    ctx = distributed.setup(resolve_device(device), timeout_s=args.dist_timeout)
    options = RunOptions(
        device=device, amp=args.amp, compile=args.compile, threads=args.threads,
        progress=not args.no_progress, allow_new_data=args.allow_new_data,
    )  # fmt: skip
    finished = False
    try:
        catgan.train(
            args.dataset, args.run, getattr(args, "preset", None), args.init_from, options,
            resume=args.resume, dry_run=args.dry_run, dist_ctx=ctx, eval_log=note, **given,
        )  # fmt: skip
        finished = True
    finally:
        distributed.teardown(ctx, finished=finished)
    return 0


def add_info(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub,
        "info",
        "Parameters and analytic FLOPs of a preset's networks.",
        "examples:\n  catgan info --preset thesis-128\n  catgan info --preset dcgan-64 --layers\n"
        "  catgan info --list\n",
        run_info,
    )
    p.add_argument("--preset", metavar="NAME", default="cats-64", help="preset to describe")
    p.add_argument("--list", action="store_true", help="list every preset with its description")
    p.add_argument("--layers", action="store_true", help="also print every layer of G and D")


def run_info(args: argparse.Namespace) -> int:
    from catgan.config import dumps, get_preset, presets
    from catgan.models import build_discriminator, build_generator, model_info

    if args.list:
        for name, preset in presets().items():
            print(f"{name:16} {preset.description}")
        return 0
    preset = get_preset(args.preset)
    info = model_info(preset.model.generator, preset.model.discriminator)
    print(f"{preset.name}: {preset.description}")
    frozen = info["d_frozen_params"] > 0
    print(f"  G parameters      {info['g_params']:>14,}")
    print(f"  D parameters      {info['d_params']:>14,}")
    if frozen:
        print(f"    trainable       {info['d_trainable_params']:>14,}")
        print(f"    frozen          {info['d_frozen_params']:>14,} (never in the optimizer)")
    print(f"  G forward         {info['g_gflop']:>10.3f} GFLOP / image")
    print(f"  D forward         {info['d_gflop']:>10.3f} GFLOP / image")
    if frozen:
        print(f"    trainable       {info['d_trainable_gflop']:>10.3f} GFLOP / image")
        print(f"    frozen          {info['d_frozen_gflop']:>10.3f} GFLOP / image")
    print(f"  training step     {info['step_gflop']:>10.3f} GFLOP / image (D and G updates, fwd + bwd)")
    print(f"    in G            {info['step_g_gflop']:>10.3f} GFLOP / image")
    if frozen:
        print(f"    in D trainable  {info['step_d_trainable_gflop']:>10.3f} GFLOP / image")
        print(
            f"    in D frozen     {info['step_d_frozen_gflop']:>10.3f} GFLOP / image (forward on reals and "
            "fakes, forward and backward to the input for G)"
        )
    else:
        print(f"    in D            {info['step_d_trainable_gflop']:>10.3f} GFLOP / image")
    if args.layers:
        print(build_generator(preset.model.generator))
        print(build_discriminator(preset.model.discriminator))
        print(dumps(model=preset.model, train=preset.train))
    return 0
