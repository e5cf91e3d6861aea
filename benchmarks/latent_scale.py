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

from catgan.data.dataset import load_dataset, resolve
from catgan.generate import generate_from_latents, load_generator
from catgan.metrics.evaluate import EvalConfig, compare
from catgan.metrics.inception import InceptionExtractor
from catgan.metrics.reference import reference_stats
from catgan.sampling import latents_from_seeds


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
    folder = resolve(args.data, gen.model.image_size)
    real_images = load_dataset(folder)  # (M, 3, S, S), read once for every scale
    extractor = InceptionExtractor.load(args.device)
    reference = reference_stats(folder, extractor, images=real_images)  # cached after the first run
    cfg = EvalConfig(n=args.n, catface=False, memorisation=False)
    z = latents_from_seeds(gen.model, list(range(args.n)))  # (n, z_dim): seeds 0..n-1, as generate draws
    rows = {}
    for s in args.scales:
        start = time.perf_counter()
        images = generate_from_latents(gen, z * s)  # (n, 3, H, W) uint8
        m = compare(images, extractor.features(images), real_images, reference, cfg)  # as `catgan evaluate`
        rows[f"{s:g}"] = {**m, "seconds": time.perf_counter() - start}
        print(
            f"s = {s:<5g} FID-{args.n} {m['fid']:.2f}  KID x1000 {1000 * m['kid_mean']:.2f}  "
            f"precision {m['precision']:.3f}  recall {m['recall']:.3f}",
            flush=True,
        )
    print(json.dumps({"generator": gen.name, "n": args.n, "rows": rows}))


if __name__ == "__main__":
    main()
