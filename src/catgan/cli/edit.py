"""`catgan edit`: move a cat (a projected latent or a seed) along a named latent direction, or morph it
into a seed's cat; PNG strips and GIFs. `--list` prints the generator's directions and what they move."""

from __future__ import annotations

import argparse
from pathlib import Path

from catgan.cli.options import command, load_source, nonneg_int, positive_float, positive_int, source_options
from catgan.errors import CatganError


def add_edit(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub,
        "edit",
        help="Edit a cat along a latent direction (SeFa, named by what it measurably changes), or morph it.",
        epilog=(
            "Directions are found without labels (closed-form factorisation of G's first layer) and named\n"
            "by the image measure each moves most (fur brightness, fur warmth, eye contrast, ...), else\n"
            "'direction K'. Amounts are in standard deviations of the latent. The directions are cached\n"
            "beside the output as directions-SHA.json (SHA: the generator's), or in --cache FILE.\n\n"
            "examples:\n"
            "  catgan edit --list\n"
            "  catgan edit --seed 5 --direction 'fur brightness' --out strip.png --gif strip.gif\n"
            "  catgan edit --latent out/tom.latent.safetensors --direction 3 --amounts -2,0,2 --out tom.png\n"
            "  catgan edit --latent out/tom.latent.safetensors --morph-to 42 --frames 8 --out morph.png\n"
        ),
        run=run_edit,
    )
    source_options(p)
    start = p.add_mutually_exclusive_group()
    start.add_argument("--latent", metavar="FILE", help="a projected cat: NAME.latent.safetensors")
    start.add_argument("--seed", type=nonneg_int, help="start from this seed's cat instead")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--list", action="store_true", help="print the directions and what they move")
    what.add_argument("--direction", metavar="NAME|K", help="a direction's index or name (see --list)")
    what.add_argument("--morph-to", type=nonneg_int, metavar="SEED", help="morph into this seed's cat")
    p.add_argument("--amounts", default="-3,-1.5,0,1.5,3", help="how far to move, in latent std units")
    p.add_argument("--frames", type=positive_int, default=8, help="frames of a morph (strip and GIF)")
    p.add_argument("--out", metavar="FILE", help="the strip: .png or .jpg")
    p.add_argument("--gif", metavar="FILE", help="an animated .gif (there and back, looping)")
    p.add_argument("--fps", type=positive_float, default=10.0, help="GIF frames per second")
    p.add_argument("--count", type=positive_int, default=10, help="directions found (largest first)")
    p.add_argument("--cache", metavar="FILE", help="directions cache file (default: beside the output)")
    p.add_argument("--any-generator", action="store_true", help="take a latent projected into another G")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")


def _check_outputs(args: argparse.Namespace) -> None:
    from catgan.images import check_gif_fps, image_format

    if not (args.out or args.gif):
        raise CatganError("give --out STRIP.png and/or --gif FILE.gif (or --list)")
    if args.out:
        image_format(args.out)
    if args.gif:
        if Path(args.gif).suffix.lower() != ".gif":
            raise CatganError(f"--gif {args.gif}: use a .gif file name")
        check_gif_fps(args.fps)


def run_edit(args: argparse.Namespace) -> int:
    from catgan.projection import directions as dirs

    if not args.list:
        if args.direction is None and args.morph_to is None:
            raise CatganError("say what to do: --direction NAME|K, --morph-to SEED, or --list")
        if args.latent is None and args.seed is None:
            raise CatganError("say which cat: --latent FILE.latent.safetensors or --seed N")
        _check_outputs(args)
    amounts = dirs.parse_amounts(args.amounts)
    if args.morph_to is not None and args.frames < 2:
        raise CatganError(f"--frames {args.frames}: a morph needs at least 2")
    gen = load_source(args)
    cfg = dirs.DirectionConfig(count=args.count)
    if args.list:
        found = dirs.cached_directions(gen, args.cache, cfg)
        print(f"directions of {gen.name} (sha256 {gen.sha256[:12]}), SeFa, named by measurement:")
        for d in found.items:
            print(d.summary())
        return 0
    z = _start_latent(args, gen)
    if args.morph_to is not None:
        return _morph(args, gen, z)
    cache = args.cache or dirs.default_cache(args.out or args.gif, gen.sha256)
    found = dirs.cached_directions(gen, cache, cfg)
    direction = found.find(args.direction)
    return _strip(args, gen, z, direction, amounts, found.latent_std)


def _start_latent(args: argparse.Namespace, gen):
    from catgan.projection.latent_file import latent_for
    from catgan.sampling import latents_from_seeds

    if args.latent is not None:
        return latent_for(args.latent, gen, strict=not args.any_generator)  # (1, z_dim)
    return latents_from_seeds(gen.model, [args.seed])  # (1, z_dim)


def _write(args: argparse.Namespace, frames, gif_frames, what: str) -> None:
    from catgan.images import make_grid, save_gif, save_image

    if args.out:
        path = save_image(make_grid(frames, nrow=len(frames)), args.out)
        print(f"wrote {path}: {what}")
    if args.gif:
        path = save_gif(gif_frames, args.gif, fps=args.fps)
        print(f"wrote {path}: {len(gif_frames)} frames, {what}")


def _strip(args, gen, z, direction, amounts: list[float], std: float) -> int:
    import torch

    from catgan.generate import generate_from_latents
    from catgan.projection.directions import edit_latents

    frames = generate_from_latents(gen, edit_latents(z, direction, amounts, std))  # (A, 3, H, W)
    lo, hi = min(amounts), max(amounts)
    sweep = torch.linspace(lo, hi, 16).tolist()
    gif = generate_from_latents(gen, edit_latents(z, direction, sweep, std))  # (16, 3, H, W)
    gif = torch.cat([gif, gif.flip(0)[1:-1]])  # there and back: loops without a jump
    _write(args, frames, gif, f"direction {direction.index} ({direction.label}) at {args.amounts}")
    return 0


def _morph(args, gen, z) -> int:
    import torch

    from catgan.generate import generate_from_latents
    from catgan.projection.directions import morph_latents
    from catgan.sampling import latents_from_seeds

    target = latents_from_seeds(gen.model, [args.morph_to])  # (1, z_dim)
    frames = generate_from_latents(gen, morph_latents(z, target, args.frames))  # (F, 3, H, W)
    gif = torch.cat([frames, frames.flip(0)[1:-1]]) if len(frames) > 2 else frames
    _write(args, frames, gif, f"morph into seed {args.morph_to} in {args.frames} frames")
    return 0
