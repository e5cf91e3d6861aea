"""FID of one checkpoint's generator as trained, beside what `catgan export` can make of it, on the same
seeds in one run: with standing BatchNorm statistics (--standing-stats), and for each --average-from STEP
also averaged with the run's checkpoints from STEP on (and with those of the runs it was started from,
--average-with RUN), then given standing statistics.

    python benchmarks/export_fid.py runs/dcgan-64/checkpoints/best.pt --data data/faces/cats-64 --n 2000
    python benchmarks/export_fid.py runs/dcgan-64 --data data/faces/cats-64 --average-from 18000 21000

FID and KID are measured where a choice may be made (catgan.metrics.selection: picking the span to
average is one): the self-supervised space against the held-out faces (DATA's `cats-S-holdout` sibling;
without one, DATA itself, with a note), never Inception nor a network the discriminator uses.

An EMA generator's BatchNorm buffers are copies of the live G's (catgan.train.update_ema): the statistics
of other weights. catgan.models.base.standing_stats re-estimates them for the weights themselves.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import time
from pathlib import Path

import torch

from catgan.checkpoint import load_checkpoint, saved_configs
from catgan.export import average_checkpoints
from catgan.generate import generate_images, load_generator
from catgan.metrics.evaluate import FIDEvaluator
from catgan.metrics.selection import check_selection_space
from catgan.models.base import standing_stats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a run folder or one checkpoint file (RUN/checkpoints/best.pt)")
    p.add_argument("--data", required=True, help="the prepared training faces (FID: their held-out sibling)")
    p.add_argument("--n", type=int, default=2000, help="samples per FID (seeds 0..n-1)")
    p.add_argument("--batches", type=int, default=100, help="standing-statistics batches of 64 latents")
    also = "also: averaged from STEP, + standing"
    p.add_argument("--average-from", type=int, nargs="+", default=[], metavar="STEP", help=also)
    p.add_argument("--average-with", action="append", default=[], metavar="RUN", help="the parent run(s)")
    p.add_argument("--no-ema", action="store_true", help="the raw G instead of its EMA copy")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.average_with and not args.average_from:
        p.error("--average-with needs --average-from STEP")
    if args.threads:
        torch.set_num_threads(args.threads)

    trained = load_generator(run=args.run, ema=not args.no_ema, device=args.device)
    variants = {"as trained": trained}

    def with_standing(weights: dict[str, torch.Tensor] | None = None):
        G = copy.deepcopy(trained.G)
        if weights is not None:
            G.load_state_dict(weights)
        standing_stats(G, trained.model, batches=args.batches)
        return dataclasses.replace(trained, G=G)

    variants[f"standing ({args.batches} x 64)"] = with_standing()
    ckpt = Path(trained.info["checkpoint"])
    state = load_checkpoint(ckpt) if args.average_from else {}
    for first in args.average_from:
        weights, steps = average_checkpoints(ckpt, state, trained.info["ema"], first, args.average_with)
        variants[f"average {steps[0]}-{steps[-1]} ({len(steps)}) + standing"] = with_standing(weights)
    evaluator = FIDEvaluator(args.data, n=args.n, device=args.device)  # selfsup, held-out faces
    critic = saved_configs(state or load_checkpoint(ckpt), ckpt)[0].discriminator  # the run's D
    check_selection_space(evaluator.extractor, critic, "choosing what to average")
    print(f"FID and KID in the {evaluator.label}")

    rows = {}
    for name, gen in variants.items():
        start = time.perf_counter()
        m = evaluator(lambda seeds, gen=gen: generate_images(gen, seeds))
        rows[name] = {"fid": m["fid"], "kid_mean": m["kid_mean"], "seconds": time.perf_counter() - start}
        print(f"{name:>36}: FID-{args.n} {m['fid']:.2f}  KID x1000 {1000 * m['kid_mean']:.2f}", flush=True)
    base = rows["as trained"]["fid"]
    which = "EMA" if trained.info.get("ema") else "raw G"
    for name, row in list(rows.items())[1:]:
        print(f"{name} / as trained FID: {row['fid'] / base:.3f} ({trained.name}, {which})")
    print(json.dumps({"generator": trained.name, "n": args.n, "rows": rows}))


if __name__ == "__main__":
    main()
