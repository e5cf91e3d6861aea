"""catgan's training loop with Adam fused (catgan's default) against torch's default Adam, side by side.

    python benchmarks/fused_adam.py --data data/faces/cats-64 --preset cats-64 --steps 40 --rounds 2 --amp

`catgan.train.train()` itself runs `--steps` steps per variant, rounds interleaved (fused then default,
then default then fused, ...); img/s is the median of its metrics windows after the first (warm-up).
Without a prepared dataset it trains on random uint8 images (speed does not depend on them).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
from unittest import mock

import torch

from catgan.config import RunOptions, get_preset
from catgan.data.dataset import load_dataset
from catgan.training.loop import train


def _img_s(data: torch.Tensor, preset_name: str, steps: int, fused: bool, device: str, amp: bool) -> float:
    preset = get_preset(preset_name)
    cfg = dataclasses.replace(preset.train, epochs=0, max_steps=steps)
    adam = torch.optim.Adam
    default_adam = lambda *args, fused=None, **kwargs: adam(*args, **kwargs)  # noqa: E731 (torch's default)
    optimizer = adam if fused else default_adam
    with tempfile.TemporaryDirectory() as tmp, mock.patch("torch.optim.Adam", optimizer):
        run = f"{tmp}/run"
        train(
            data,
            preset.model,
            cfg,
            run,
            RunOptions(device=device, amp=amp, progress=False, sample_every=0, checkpoint_every=0),
            log=lambda _: None,
        )
        rows = [json.loads(line) for line in open(f"{tmp}/run/metrics.jsonl")]
    rates = [r["img/s"] for r in rows if "img/s" in r][1:]  # the first window holds the warm-up
    return statistics.median(rates)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cats-64")
    p.add_argument("--data", help="a prepared dataset folder (default: random images)")
    p.add_argument("--steps", type=int, default=40, help="steps per variant and round (>= 20: 10 per window)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", action="store_true", help="bf16 autocast, as catgan train --amp")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = get_preset(args.preset)
    size, batch = preset.model.image_size, preset.train.batch
    if args.data:
        data = load_dataset(args.data, image_size=size)[: batch * (args.steps + 1)]  # (N, 3, S, S) uint8
    else:
        data = torch.randint(0, 256, (batch * (args.steps + 1), 3, size, size), dtype=torch.uint8)
    results: dict[str, list[float]] = {"fused": [], "default": []}
    for r in range(args.rounds):
        for name in ("fused", "default") if r % 2 == 0 else ("default", "fused"):
            rate = _img_s(data, args.preset, args.steps, name == "fused", args.device, args.amp)
            results[name].append(rate)
            print(f"round {r}: {name} {results[name][-1]:.1f} img/s", flush=True)
    fused, default = (statistics.median(results[k]) for k in ("fused", "default"))
    ratio = fused / default
    print(f"{args.preset} on {args.device}: fused {fused:.1f} img/s, default {default:.1f} ({ratio:.3f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
