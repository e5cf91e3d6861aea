"""`catgan generate` and `catgan interpolate`: images by seed from a generator source."""

from __future__ import annotations

import argparse

from catgan.cli.options import (
    command,
    drawing_options,
    load_source,
    positive_float,
    positive_int,
    source_options,
)
from catgan.errors import CatganError

MAX_GRID = 10_000  # images in one --out grid (1 GB at 128 px with the grid); --out-dir streams any number


def add_generate(sub: argparse._SubParsersAction) -> None:
    p = command(
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
        run=run_generate,
    )
    source_options(p)
    p.add_argument("--seeds", default="0-63", help="seeds: numbers and ranges, e.g. 0-63,70,80-82")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", metavar="FILE", default=argparse.SUPPRESS, help="one grid image (.png or .jpg)")
    out.add_argument(
        "--out-dir", metavar="DIR", default=argparse.SUPPRESS, help="one PNG per seed: DIR/seed000012.png"
    )
    p.add_argument(
        "--nrow", type=positive_int, default=argparse.SUPPRESS, help="images per grid row (default: ~square)"
    )
    drawing_options(p)


def run_generate(args: argparse.Namespace) -> int:
    from catgan.generate import generate_images
    from catgan.images import image_format, make_grid, save_image
    from catgan.sampling import format_seeds, parse_seeds

    seeds = parse_seeds(args.seeds)
    out, out_dir = getattr(args, "out", None), getattr(args, "out_dir", None)
    if out:
        image_format(out)  # a bad suffix fails before any work
        if len(seeds) > MAX_GRID:  # a grid holds every image (and itself) in memory
            raise CatganError(
                f"--out draws one grid of all {len(seeds):,} seeds, at most {MAX_GRID:,}; "
                "use --out-dir DIR for one file per seed (written as it goes)"
            )
    gen = load_source(args)
    if out_dir:
        written = _write_per_seed(gen, seeds, out_dir, args.batch, args.truncation)
        print(f"wrote {written} images to {out_dir}/ (seed{seeds[0]:06d}.png ...)")
        return 0
    images = generate_images(gen, seeds, batch=args.batch, truncation=args.truncation)  # (N, 3, H, W)
    path = save_image(make_grid(images, nrow=getattr(args, "nrow", None)), out)
    print(f"wrote {path}: {len(seeds)} cats, seeds {format_seeds(seeds)}")
    return 0


def _write_per_seed(gen, seeds: list[int], out_dir: str, batch: int, truncation: float) -> int:
    """One PNG per seed, each batch written before the next is drawn (memory stays flat for a million
    seeds), with a progress bar on a terminal (stderr)."""
    import sys

    from tqdm import tqdm

    from catgan.generate import iter_images
    from catgan.images import save_images

    batches = iter_images(gen, seeds, batch=batch, truncation=truncation)  # checks before any work
    written = 0
    with tqdm(total=len(seeds), unit="img", desc="generate", disable=not sys.stderr.isatty()) as bar:
        for chunk, images in batches:  # (B, 3, H, W) uint8
            written += len(save_images(images, chunk, out_dir))
            bar.update(len(chunk))
    return written


def add_interpolate(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub,
        "interpolate",
        help="Walk between the seeds' cats: spherical interpolation of their latents, as a GIF or a strip.",
        epilog=(
            "The walk passes exactly through each seed's cat, in the order given. A .gif animates\n"
            "(looping forever); a .png or .jpg lays the frames out in rows of --nrow.\n\n"
            "examples:\n"
            "  catgan interpolate --seeds 3,7,11 --frames 60 --out walk.gif\n"
            "  catgan interpolate --run runs/cats64 --seeds 3,7,11 --frames 60 --loop --out walk.gif\n"
            "  catgan interpolate --seeds 3,7,11 --frames 60 --scale 4 --out walk-256.gif   # 256 px frames\n"
            "  catgan interpolate --weights cats.safetensors --seeds 0,1 --frames 8 --out strip.png\n"
        ),
        run=run_interpolate,
    )
    source_options(p)
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
        "--scale",
        type=positive_int,
        default=1,
        metavar="N",
        help="enlarge every frame N times (nearest neighbour: each pixel an N x N block), e.g. 4 for "
        "256 px frames of a 64 px model",
    )
    p.add_argument(
        "--nrow", type=positive_int, default=argparse.SUPPRESS, help="frames per row of a .png (default: all)"
    )
    drawing_options(p)


def run_interpolate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from catgan.generate import generate_from_latents
    from catgan.images import check_gif_fps, check_scale, image_format, save_animation, upscale
    from catgan.sampling import check_interpolation, interpolation_latents, parse_seeds

    seeds = parse_seeds(args.seeds)
    check_interpolation(len(seeds), args.frames)
    check_scale(args.scale)
    if Path(args.out).suffix.lower() == ".gif":
        check_gif_fps(args.fps)  # a bad value fails before any work
    else:
        image_format(args.out)  # a bad suffix fails before any work
    gen = load_source(args)
    z = interpolation_latents(
        gen.model,
        seeds,
        args.frames,
        loop=args.loop,
        spherical=not args.linear,
        truncation=args.truncation,
    )  # (frames, z_dim)
    frames = upscale(generate_from_latents(gen, z, batch=args.batch), args.scale)  # (frames, 3, sH, sW) uint8
    path = save_animation(frames, args.out, fps=args.fps, nrow=getattr(args, "nrow", None))
    print(f"wrote {path}: {args.frames} frames through seeds {','.join(map(str, seeds))}")
    return 0
