"""What scoring against a random subset of the reference (`reference_n`) does to FID, in each space.

The full reference's features are computed once (and cached like `catgan evaluate`'s); each subset is the
one `reference_stats(..., reference_n=R, seed=S)` would draw (`reference_subset`), so the FID printed for
(R, S) is the FID a user gets with that option. The pass over the reference costs about R/N of the full
one. Generated images: the bundled model, seeds 0..n-1.

python benchmarks/reference_n.py --data DIR/cats-64 --model cats-64 --n 1000 \\
    --reference-n 500,1000,2000,4000 --repeats 3 --spaces inception,selfsup
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from catgan.metrics.fid import feature_stats, frechet_distance_features
from catgan.metrics.reference import feature_pass, reference_stats, reference_subset


def load_space(name: str):
    if name == "inception":
        from catgan.metrics.inception import InceptionExtractor

        return InceptionExtractor.load("cpu")
    from catgan.metrics.selfsup import SelfSupExtractor

    return SelfSupExtractor.load("cpu")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="a prepared dataset (the reference)")
    p.add_argument("--model", default="cats-64", help="bundled generator whose samples are scored")
    p.add_argument("--n", type=int, default=1000, help="generated images")
    p.add_argument("--reference-n", default="500,1000,2000,4000")
    p.add_argument("--repeats", type=int, default=3, help="subset seeds per size")
    p.add_argument("--spaces", default="inception,selfsup")
    p.add_argument("--cache-dir", type=Path, help="reference statistics cache (default: catgan's)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from catgan.generate import generate_images, load_generator

    fake = generate_images(load_generator(model=args.model), list(range(args.n)))  # (n, 3, S, S) uint8
    for space in args.spaces.split(","):
        extractor = load_space(space)
        t0 = time.perf_counter()
        ref = reference_stats(args.data, extractor, args.cache_dir)
        ref_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        feats = feature_pass(extractor, fake, f"{space}: {args.n} generated")  # (n, D)
        fake_s = time.perf_counter() - t0
        full = ref.fid(feats)
        print(f"\n{space} ({extractor.name}): {args.n} samples of {args.model} against {ref.n} faces")
        print(
            f"  generated pass {args.n / fake_s:.1f} img/s; reference pass "
            f"{'from cache' if ref.from_cache else f'{ref.n / ref_s:.1f} img/s'}"
        )
        print(f"| reference_n | FID mean | std over {args.repeats} seeds | vs full | pass cost |")
        print(f"| all {ref.n} | {full:.3f} | - | - | 1.00 |")
        for rn in (int(v) for v in args.reference_n.split(",")):
            if rn >= ref.n:
                continue
            fids = []
            for seed in range(args.repeats):
                idx = reference_subset(ref.n, rn, seed).numpy()
                mu, sigma = feature_stats(ref.features[idx].astype(np.float64))
                fids.append(frechet_distance_features(mu, sigma, feats))
            m, s = float(np.mean(fids)), float(np.std(fids))
            print(
                f"| {rn} | {m:.3f} | {s:.3f} | {m - full:+.3f} ({(m - full) / full:+.1%}) "
                f"| {rn / ref.n:.2f} |"
            )


if __name__ == "__main__":
    main()
