"""FID of one checkpoint's generator with its BatchNorm buffers as trained, beside the same generator
with standing statistics (what `catgan export --standing-stats` ships), on the same seeds in one run.

    python benchmarks/standing_stats.py runs/dcgan-64/checkpoints/best.pt --data data/faces/cats-64 --n 2000

An EMA generator's BatchNorm buffers are copies of the live G's (catgan.train.update_ema): the statistics
of other weights. catgan.models.dcgan.standing_stats re-estimates them for the weights themselves.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import time

import torch

from catgan.generate import generate_images, load_generator
from catgan.metrics.evaluate import FIDEvaluator
from catgan.models.dcgan import standing_stats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a run folder or one checkpoint file (RUN/checkpoints/best.pt)")
    p.add_argument("--data", required=True, help="the prepared training faces (FID reference)")
    p.add_argument("--n", type=int, default=2000, help="samples per FID (seeds 0..n-1)")
    p.add_argument("--batches", type=int, default=100, help="standing-statistics batches of 64 latents")
    p.add_argument("--no-ema", action="store_true", help="the raw G instead of its EMA copy")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    trained = load_generator(run=args.run, ema=not args.no_ema, device=args.device)
    G = copy.deepcopy(trained.G)
    standing_stats(G, trained.model, batches=args.batches)
    standing = dataclasses.replace(trained, G=G)
    evaluator = FIDEvaluator(args.data, n=args.n, device=args.device)

    rows = {}
    for name, gen in (("as trained", trained), (f"standing ({args.batches} x 64)", standing)):
        start = time.perf_counter()
        m = evaluator(lambda seeds, gen=gen: generate_images(gen, seeds))
        rows[name] = {"fid": m["fid"], "kid_mean": m["kid_mean"], "seconds": time.perf_counter() - start}
        print(f"{name:>22}: FID-{args.n} {m['fid']:.2f}  KID x1000 {1000 * m['kid_mean']:.2f}", flush=True)
    base, new = (r["fid"] for r in rows.values())
    which = "EMA" if trained.info.get("ema") else "raw G"
    print(f"standing / as trained FID: {new / base:.3f} ({trained.name}, {which})")
    print(json.dumps({"generator": trained.name, "n": args.n, "rows": rows}))


if __name__ == "__main__":
    main()
