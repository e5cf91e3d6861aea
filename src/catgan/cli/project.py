"""`catgan project` (photos -> aligned face, the generator's drawing, its latent) and `catgan
train-encoder` (the encoder that gives projection its first guess). The work is in catgan.projection."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from catgan.cli.options import (
    command,
    load_source,
    nonneg_int,
    note,
    positive_float,
    positive_int,
    source_options,
)


def coords(text: str) -> tuple[float, float, float, float]:
    """'X1,Y1,X2,Y2' -> four finite numbers (pixel coordinates)."""
    parts = text.split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected four numbers X1,Y1,X2,Y2 (pixels), got {text!r}")
    return values  # type: ignore[return-value]


def add_project(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub,
        "project",
        help="Draw your own cat with a generator: align its face, then find the latent that draws it.",
        epilog=(
            "For each PHOTO the face is found from PHOTO.cat beside it (the CAT dataset's landmarks: the\n"
            "alignment `catgan prepare` makes), else from --eyes (one photo), else by OpenCV's cat-face\n"
            "detector, which must find exactly one face. --aligned: the photo is already a face crop.\n"
            "Writes DIR/NAME.aligned.png, NAME.projected.png, NAME.side.png and NAME.latent.safetensors.\n"
            "The bundled models' shipped encoders give the first guess (--encoder FILE for a run's\n"
            "own, --encoder none for pure optimisation from the mean latent); --steps of Adam refine it;\n"
            "--tune N fine-tunes a copy of G around it (closer, but its latent then draws that image only\n"
            "with the tuned G). Exit status: 0 when every photo was projected, 1 when some failed (one\n"
            "line each; the others are still written), 2 for bad options.\n\n"
            "examples:\n"
            "  catgan project tom.jpg --out out/\n"
            "  catgan project tom.jpg --eyes 412,300,530,296 --out out/ --steps 300\n"
            "  catgan project CAT_00/*.jpg --model cats-128 --out out/ --tune 50\n"
            "  catgan project face.png --aligned --run runs/c64 --encoder enc.safetensors --out out/\n"
        ),
        run=run_project,
    )
    p.add_argument("photos", nargs="+", metavar="PHOTO", help="photos of cats (.jpg, .png, ...)")
    source_options(p)
    p.add_argument("--out", required=True, metavar="DIR", default=argparse.SUPPRESS, help="output folder")
    p.add_argument(
        "--encoder", default="auto", metavar="FILE",
        help="an encoder .safetensors (catgan train-encoder); auto: the shipped one of a bundled model; none",
    )  # fmt: skip
    p.add_argument("--eyes", type=coords, metavar="X1,Y1,X2,Y2", help="the cat's eyes in the photo (pixels)")
    p.add_argument(
        "--ears", type=coords, metavar="X1,Y1,X2,Y2", help="with --eyes: the outer bases of its ears (pixels)"
    )
    p.add_argument(
        "--aligned", action="store_true", help="the photos are face crops already (centre-cropped)"
    )
    p.add_argument("--steps", type=nonneg_int, default=200, help="Adam steps on the latent")
    p.add_argument(
        "--tune", type=nonneg_int, default=0, help="pivotal-tuning steps on a copy of G (0 = none)"
    )
    p.add_argument(
        "--perceptual", default="auto", choices=("auto", "lite0", "selfsup"),
        help="the perceptual distance's network; auto: lite0 when installed, else selfsup",
    )  # fmt: skip
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the early latent noise")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _names(photos: list[str]) -> list[str]:
    """Output stems, unique within the call: tom.jpg -> tom; a second tom.png -> tom-2."""
    seen: dict[str, int] = {}
    out = []
    for photo in photos:
        stem = Path(photo).name.split(".")[0] or "photo"
        seen[stem] = seen.get(stem, 0) + 1
        out.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return out


def run_project(args: argparse.Namespace) -> int:
    from catgan.errors import CatganError
    from catgan.projection.face import FaceHint
    from catgan.projection.output import write_projection
    from catgan.projection.project import ProjectConfig, Projector

    if args.eyes is not None and len(args.photos) > 1:
        raise CatganError(f"--eyes names one photo's eyes; give one PHOTO with it (got {len(args.photos)})")
    hint = FaceHint(args.eyes, args.ears, args.aligned)
    config = ProjectConfig(
        steps=args.steps, tune=args.tune, encoder=args.encoder, perceptual=args.perceptual, seed=args.seed,
        progress=not args.no_progress,
    )  # fmt: skip
    gen = load_source(args)
    projector = Projector(gen, config)
    note(
        f"start: {projector.encoder_name or 'the mean latent (no encoder)'}; "
        f"{args.steps} steps, tune {args.tune}"
    )
    failed = 0
    for photo, name in zip(args.photos, _names(args.photos), strict=True):
        try:
            result = projector.project(photo, hint)
            write_projection(result, gen, args.out, name, photo)
        except CatganError as err:  # FaceError included: one line, and on to the next photo
            failed += 1
            print(f"catgan project: {photo}: {err}", file=sys.stderr, flush=True)
            continue
        for line in result.notes:
            note(f"{photo}: note: {line}")
        losses = ", ".join(f"{k} {v:.4f}" for k, v in result.losses.items())
        print(f"{photo} -> {Path(args.out) / name}.*  ({result.seconds:.1f} s; {losses})")
    if failed:
        note(f"{failed} of {len(args.photos)} photo(s) failed")
    return 1 if failed else 0


def add_train_encoder(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub,
        "train-encoder",
        help="Train the encoder (image -> latent) that gives `catgan project` its first guess.",
        epilog=(
            "Trains on the generator's own samples (their latents are known) and, with --data, on real\n"
            "faces (reconstruction). Writes FILE.safetensors and FILE.json holding the generator's\n"
            "sha256: the encoder is refused for any other generator.\n\n"
            "examples:\n"
            "  catgan train-encoder --model cats-64 --data faces/cats-64 --out e.safetensors --minutes 9\n"
            "  catgan train-encoder --run runs/c64 --out runs/c64/encoder.safetensors --steps 2000\n"
        ),
        run=run_train_encoder,
    )
    source_options(p)
    p.add_argument("--out", required=True, metavar="FILE", default=argparse.SUPPRESS, help="FILE.safetensors")
    p.add_argument(
        "--data", metavar="DATASET", help="a prepared dataset of real faces at the generator's size"
    )
    p.add_argument("--steps", type=positive_int, default=3000, help="training steps")
    p.add_argument(
        "--minutes",
        type=positive_float,
        help="stop after this much wall time; the rate anneals over it (default: no limit)",
    )
    p.add_argument("--batch", type=positive_int, default=64, help="sample pairs per step for the latent loss")
    p.add_argument(
        "--bank", type=positive_int, default=4096, help="G's samples drawn at the start (refreshed)"
    )
    p.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate (cosine decay)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the latents and the real batches")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--threads", type=positive_int, help="CPU threads (default: torch's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_train_encoder(args: argparse.Namespace) -> int:
    import dataclasses
    import time

    import torch

    from catgan.errors import CatganError
    from catgan.projection.encoder import EncoderTrainConfig, save_encoder, train_encoder

    if Path(args.out).suffix != ".safetensors":
        raise CatganError(f"--out must end in .safetensors, got {Path(args.out).name}")
    if args.threads:
        torch.set_num_threads(args.threads)
    config = EncoderTrainConfig(
        steps=args.steps, minutes=args.minutes, batch=args.batch, bank=args.bank, lr=args.lr, seed=args.seed
    )
    gen = load_source(args)
    real = None
    if args.data:
        from catgan.data.dataset import load_dataset

        real = load_dataset(args.data, image_size=gen.model.image_size)
        note(f"real faces: {len(real)} from {args.data}")
    enc, log = train_encoder(gen, config, real, progress=not args.no_progress)
    info = {
        "trained": time.strftime("%Y-%m-%d"),
        "train_config": dataclasses.asdict(config),
        "real_faces": {"data": str(args.data), "n": len(real)} if real is not None else None,
        "log": {"steps": log.steps, "seconds": log.seconds, "first": log.first, "last": log.last},
    }
    save_encoder(enc, args.out, gen, info)
    print(
        f"wrote {args.out}: {log.steps} steps in {log.seconds:.0f} s; loss {log.first['total']:.4f} -> "
        f"{log.last['total']:.4f}"
    )
    return 0
