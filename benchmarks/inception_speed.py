"""Inception-v3 feature throughput (img/s) for FID/KID: uint8 64 px images -> 299 px -> (N, 2048).

python benchmarks/inception_speed.py --device cpu --threads 2 --batch 32 --n 128
python benchmarks/inception_speed.py --device cuda --batch 256 --n 4096 --fp16
"""

from __future__ import annotations

import argparse
import time

import torch

from catgan.metrics.inception import InceptionExtractor


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--n", type=int, default=128, help="images timed (after one warm-up batch)")
    p.add_argument("--size", type=int, default=64, help="input image size before the 299 px resize")
    p.add_argument("--fp16", action="store_true", help="half-precision weights (CUDA)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    extractor = InceptionExtractor.load(args.device, fp16=args.fp16, batch=args.batch)
    images = torch.randint(0, 256, (args.n, 3, args.size, args.size), dtype=torch.uint8)
    extractor.features(images[: args.batch])  # warm-up (cuDNN autotune, allocator)
    if extractor.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    extractor.features(images)
    if extractor.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    print(
        f"device={args.device} threads={torch.get_num_threads()} batch={args.batch} fp16={args.fp16} "
        f"n={args.n} size={args.size}: {args.n / seconds:.1f} img/s ({seconds:.1f} s)"
    )


if __name__ == "__main__":
    main()
