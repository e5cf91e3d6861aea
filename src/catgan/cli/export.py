"""`catgan export`: a run's generator as one .safetensors file (catgan.export)."""

from __future__ import annotations

import argparse

from catgan.cli.options import RUN_HELP, command, ema, ema_option, nonneg_int


def add_export(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub,
        "export",
        help="Save a run's generator as one .safetensors file (weights + config + hash), to share or bundle.",
        epilog=(
            "The file holds the generator's weights (the EMA copy when the run has one), its config,\n"
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
        run=run_export,
    )
    need = {"required": True, "default": argparse.SUPPRESS}
    p.add_argument("--run", metavar="RUN", help=RUN_HELP, **need)
    p.add_argument("--out", metavar="FILE", help="output file, NAME.safetensors", **need)
    p.add_argument("--fp16", action="store_true", help="store float16 weights (half the size)")
    ema_option(p, "export the EMA generator when the run has one (the default); --no-ema: the raw G")
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


def run_export(args: argparse.Namespace) -> int:
    from catgan.export import export_run
    from catgan.generate import load_generator

    path = export_run(
        args.run,
        args.out,
        ema=ema(args),
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
