"""`catgan restore`: repair a damaged cat photo through the generator (a mask of damaged pixels, noise, or
a face too small), and paste the restored face back. The work is in catgan.projection.restore."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from catgan.cli.options import command, load_source, nonneg_int, note, positive_float, source_options


def add_restore(sub: argparse._SubParsersAction) -> None:
    from catgan.cli.project import coords

    p = command(
        sub,
        "restore",
        help="Repair a damaged cat photo through the generator: inpaint a mask, denoise, or upscale.",
        epilog=(
            "The face is found as `catgan project` finds it (PHOTO.cat, --eyes, or the detector). The\n"
            "projection ignores the damaged pixels (--mask MASK.png: the photo's size, white = damaged),\n"
            "models the noise as a low-pass in the loss (--denoise), or compares G's drawing shrunk by\n"
            "--factor with the photo's face (--upscale: a 64 px face restored with a 128 px generator);\n"
            "the restored face is pasted back with a feathered edge. Writes DIR/NAME.restored.png (the\n"
            "photo; --upscale: enlarged by --factor), NAME.face.png and NAME.side.png (damaged | restored).\n"
            "Exit status 1 when some photos failed (one line each; the others are still written).\n\n"
            "examples:\n"
            "  catgan restore tom.jpg --mask tom-scratches.png --out out/\n"
            "  catgan restore grainy.jpg --denoise --model cats-128 --out out/\n"
            "  catgan restore small.jpg --upscale --model cats-128 --out out/\n"
        ),
        run=run_restore,
    )
    p.add_argument("photos", nargs="+", metavar="PHOTO", help="photos of cats (one with --mask or --eyes)")
    source_options(p)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--mask", metavar="MASK.png", help="white where the photo is damaged; the photo's size")
    what.add_argument("--denoise", action="store_true", help="remove noise (a low-pass in the loss)")
    what.add_argument("--upscale", action="store_true", help="restore a face at G's size from a smaller one")
    p.add_argument("--out", required=True, metavar="DIR", default=argparse.SUPPRESS, help="output folder")
    p.add_argument("--factor", type=int, choices=(2, 4), default=2, help="--upscale: G's size / the face's")
    p.add_argument("--blur", type=positive_float, default=1.0, help="--denoise: low-pass std in pixels")
    p.add_argument("--eyes", type=coords, metavar="X1,Y1,X2,Y2", help="the cat's eyes in the photo (pixels)")
    p.add_argument("--ears", type=coords, metavar="X1,Y1,X2,Y2", help="with --eyes: its outer ear bases")
    p.add_argument("--aligned", action="store_true", help="the photos are face crops already")
    p.add_argument("--steps", type=nonneg_int, default=200, help="Adam steps on the latent")
    p.add_argument("--encoder", default="auto", metavar="FILE", help="as for catgan project")
    p.add_argument(
        "--perceptual", default="auto", choices=("auto", "lite0", "selfsup"), help="as for project"
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_restore(args: argparse.Namespace) -> int:
    from catgan.errors import CatganError
    from catgan.images import save_image
    from catgan.projection.face import FaceHint
    from catgan.projection.output import side_by_side
    from catgan.projection.project import ProjectConfig, Projector
    from catgan.projection.restore import RestoreConfig, restore_photo

    if (args.mask or args.eyes is not None) and len(args.photos) > 1:
        raise CatganError(f"--mask and --eyes describe one photo; give one PHOTO (got {len(args.photos)})")
    mode = "mask" if args.mask else "denoise" if args.denoise else "upscale"
    config = RestoreConfig(mode, factor=args.factor, blur=args.blur)
    hint = FaceHint(args.eyes, args.ears, args.aligned)
    gen = load_source(args)
    if mode == "upscale" and gen.model.image_size // args.factor < 16:
        raise CatganError(f"--upscale: {gen.name} draws {gen.model.image_size} px, too small to upscale into")
    projector = Projector(
        gen, ProjectConfig(steps=args.steps, encoder=args.encoder, perceptual=args.perceptual,
                           progress=not args.no_progress),
    )  # fmt: skip
    out, failed = Path(args.out), 0
    for photo in args.photos:
        name = Path(photo).name.split(".")[0] or "photo"
        try:
            r = restore_photo(projector, photo, config, args.mask, hint)
        except CatganError as err:
            failed += 1
            print(f"catgan restore: {photo}: {err}", file=sys.stderr, flush=True)
            continue
        import torch
        import torch.nn.functional as F

        damaged = r["damaged"]
        if damaged.shape[-1] != r["face"].shape[-1]:  # upscale: the small face, enlarged for the side view
            damaged = F.interpolate(damaged[None].float(), size=r["face"].shape[-1], mode="nearest")[0].byte()
        save_image(torch.from_numpy(r["photo"]).permute(2, 0, 1).contiguous(), out / f"{name}.restored.png")
        save_image(r["face"], out / f"{name}.face.png")
        save_image(side_by_side(damaged, r["face"]), out / f"{name}.side.png")
        for line in r["notes"]:
            note(f"{photo}: note: {line}")
        print(f"{photo} -> {out / name}.restored.png, .face.png, .side.png ({mode})")
    if failed:
        note(f"{failed} of {len(args.photos)} photo(s) failed")
    return 1 if failed else 0
