"""FID, KID, precision and recall of one generator with its latents scaled by s, on the same seeds in one
run: s < 1 is truncation (towards the mode: precision up, recall down), s > 1 draws wider than training.

    python benchmarks/latent_scale.py --model cats-128 --data data/faces/cats-128 --scales 0.9 1 1.15 1.3
    python benchmarks/latent_scale.py --run runs/cats64 --data data/faces/cats-64 --n 2000

Seed i's latent is the one `catgan generate` draws for it, times s. Precision and recall (k = 3) depend on
n; compare rows of one run only.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from catgan.generate import generate_from_latents, latents_from_seeds, load_generator
from catgan.metrics.evaluate import FIDEvaluator
from catgan.metrics.fid import kid
from catgan.metrics.prdc import precision_recall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--run", help="a run folder or one checkpoint file")
    src.add_argument("--weights", help="an exported .safetensors generator")
    src.add_argument("--model", help="a bundled model by name (none given: the default)")
    p.add_argument("--data", required=True, help="the prepared training faces (the reference)")
    p.add_argument("--n", type=int, default=2000, help="samples per scale (seeds 0..n-1)")
    p.add_argument("--scales", type=float, nargs="+", default=[0.9, 1.0, 1.15, 1.3], metavar="S")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if any(s <= 0 for s in args.scales):
        p.error(f"scales must be > 0, got {args.scales}")
    if args.threads:
        torch.set_num_threads(args.threads)

    gen = load_generator(run=args.run, weights=args.weights, model=args.model, device=args.device)
    evaluator = FIDEvaluator(args.data, device=args.device)  # the extractor and the cached reference
    real = evaluator.reference.features  # (M, 2048)
    z = latents_from_seeds(gen.model, list(range(args.n)))  # (n, z_dim): seeds 0..n-1, as generate draws
    rows = {}
    for s in args.scales:
        start = time.perf_counter()
        images = generate_from_latents(gen, z * s)  # (n, 3, H, W) uint8
        feats = evaluator.extractor.features(images)  # (n, 2048)
        fid, kid_mean = evaluator.reference.fid(feats), kid(real, feats)[0]
        pr = precision_recall(real, feats)
        rows[f"{s:g}"] = {
            "fid": fid,
            "kid_mean": kid_mean,
            "precision": pr["precision"],
            "recall": pr["recall"],
            "seconds": time.perf_counter() - start,
        }
        print(
            f"s = {s:<5g} FID-{args.n} {fid:.2f}  KID x1000 {1000 * kid_mean:.2f}  "
            f"precision {pr['precision']:.3f}  recall {pr['recall']:.3f}",
            flush=True,
        )
    print(json.dumps({"generator": gen.name, "n": args.n, "rows": rows}))


if __name__ == "__main__":
    main()
