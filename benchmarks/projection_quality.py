"""How well `catgan project` reconstructs faces the encoder never saw: PSNR, the perceptual distance and
the self-supervised feature distance for encoder only, optimisation only, both, both + pivotal tuning,
against the best of N random samples (nearest by the perceptual distance) and another real face; and the
seconds per photo of encoder + refinement, one photo at a time as `catgan project` runs.

    python benchmarks/projection_quality.py --model cats-64 --data DIR/cats-64-holdout --n 32 \
        --out runs/projection-64.json

The faces are the first n of the folder (sorted names). Quality runs invert the n faces as one batch
(each face independently: projection.invert); the timing runs project single faces. --grid PNG draws the
first --grid-n faces, one per row: the face, then each method's drawing in the table's order.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

import catgan
from catgan.data.dataset import load_dataset
from catgan.images import make_grid, save_image
from catgan.metrics.selfsup import SelfSupExtractor
from catgan.projection.project import ProjectConfig, Projector, psnr, to_float


def scores(images: torch.Tensor, faces: torch.Tensor, projector: Projector, selfsup) -> dict[str, float]:
    """Mean PSNR (dB), perceptual distance and self-supervised feature L2 of uint8 images vs faces."""
    with torch.no_grad():
        perc = projector.distance.distance(to_float(images), to_float(faces))
    fa, fb = selfsup.features(images), selfsup.features(faces)
    return {
        "psnr": round(float(psnr(images, faces).mean()), 3),
        "perceptual": round(float(perc.mean()), 4),
        "selfsup_l2": round(float(np.linalg.norm(fa - fb, axis=1).mean()), 4),
    }


def best_of_samples(gen, faces: torch.Tensor, projector: Projector, n: int, chunk: int = 500) -> torch.Tensor:
    """uint8 (B, 3, S, S): for each face the nearest of seeds 0..n-1's samples by the perceptual distance."""
    target = projector.distance.embed(to_float(faces))  # (B, D)
    best = torch.full((len(faces),), float("inf"))
    best_seed = torch.zeros(len(faces), dtype=torch.long)
    for start in range(0, n, chunk):
        seeds = list(range(start, min(n, start + chunk)))
        e = projector.distance.embed(to_float(gen.generate(seeds)))  # (C, D)
        d = torch.cdist(target, e).pow(2)  # (B, C) == perceptual distances
        value, idx = d.min(dim=1)
        better = value < best
        best[better], best_seed[better] = value[better], idx[better] + start
    return gen.generate(best_seed.tolist())


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    gen = catgan.load(args.model)
    faces = load_dataset(args.data, image_size=gen.model.image_size)[: args.n]  # (n, 3, S, S)
    selfsup = SelfSupExtractor.load()
    results: dict[str, dict] = {}
    seconds: dict[str, float] = {}
    drawn: list[torch.Tensor] = [faces[: args.grid_n]]  # uint8 (k, 3, S, S) per column of --grid
    configs = {
        "encoder only": ProjectConfig(steps=0, encoder=args.encoder, perceptual=args.perceptual),
        "optimisation only": ProjectConfig(steps=args.steps, encoder="none", perceptual=args.perceptual),
        "encoder + optimisation": ProjectConfig(
            steps=args.steps, encoder=args.encoder, perceptual=args.perceptual
        ),
        f"encoder + optimisation + tune {args.tune}": ProjectConfig(
            steps=args.steps, tune=args.tune, encoder=args.encoder, perceptual=args.perceptual
        ),
    }
    projector = None
    for name, cfg in configs.items():
        projector = Projector(gen, cfg)
        t0 = time.perf_counter()
        out = projector.invert_faces(faces)
        seconds[name] = round((time.perf_counter() - t0) / len(faces), 3)
        results[name] = scores(out["image"], faces, projector, selfsup)
        drawn.append(out["image"][: args.grid_n])
        print(name, results[name], f"{seconds[name]} s/face in a batch", flush=True)
    t0 = time.perf_counter()
    nearest = best_of_samples(gen, faces, projector, args.samples)
    results[f"best of {args.samples} samples"] = scores(nearest, faces, projector, selfsup)
    seconds[f"best of {args.samples} samples"] = round(time.perf_counter() - t0, 1)
    drawn.append(nearest[: args.grid_n])
    if args.grid:  # rows: faces; columns: the face, then each method
        save_image(make_grid(torch.stack(drawn, dim=1).flatten(0, 1), nrow=len(drawn)), args.grid)
    results["another real face"] = scores(faces.roll(1, 0), faces, projector, selfsup)
    timing = single_photo_seconds(gen, faces[: args.timing_n], args)
    return {
        "model": args.model, "data": str(args.data), "n": len(faces), "steps": args.steps, "tune": args.tune,
        "perceptual": projector.distance.name, "encoder": projector.encoder_name, "results": results,
        "batch_seconds_per_face": seconds, "single_photo_seconds": timing, "threads": args.threads,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread(s)",
        "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
    }  # fmt: skip


def single_photo_seconds(gen, faces: torch.Tensor, args: argparse.Namespace) -> dict[str, float]:
    """Median seconds of projector.project(face) (encoder + args.steps), one face at a time."""
    if len(faces) == 0:  # --timing-n 0: quality only
        return {"n": 0}
    projector = Projector(
        gen, ProjectConfig(steps=args.steps, encoder=args.encoder, perceptual=args.perceptual)
    )
    times: list[float] = []
    for face in faces:
        t0 = time.perf_counter()
        projector.project(face)
        times.append(time.perf_counter() - t0)
    return {"median": round(float(np.median(times)), 2), "min": round(min(times), 2), "n": len(times)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cats-64", help="a bundled model, exported file or run")
    p.add_argument("--data", required=True, help="held-out faces at the model's size (cats-S-holdout)")
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--tune", type=int, default=50)
    p.add_argument("--encoder", default="auto")
    p.add_argument("--perceptual", default="auto")
    p.add_argument("--samples", type=int, default=10_000)
    p.add_argument("--timing-n", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path)
    p.add_argument("--grid", type=Path, help="a PNG/JPEG of the first --grid-n faces and their drawings")
    p.add_argument("--grid-n", type=int, default=8)
    args = p.parse_args()
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
