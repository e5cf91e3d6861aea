"""DDP overhead: catgan's training loop through its DDP code path on one device against the plain path.

    python benchmarks/ddp_overhead.py --threads 1                # dcgan-64, batch 64, gloo on the CPU
    python benchmarks/ddp_overhead.py --device cuda --amp        # thesis-128, batch 64, nccl on one GPU

Both variants run catgan.train.train() itself on the same uint8 dataset tensor (synthetic noise held in
memory, or --data), timed from its own metrics.jsonl after a warm-up:
- plain: train() with no distributed context, as `catgan train` runs it.
- ddp:   train() with a 1-process group (gloo on the CPU, nccl on CUDA; rendezvous on a free loopback
         port) and the context that torchrun's N-rank path uses: G and D wrapped in
         DistributedDataParallel (gradient buckets all-reduced in the backward pass), the rank-0
         checkpoint broadcast, the per-step stop-flag all-reduce and the all-reduced loss windows.

Note: `torchrun --nproc-per-node 1` does not take this path: with WORLD_SIZE=1 catgan.distributed.setup()
joins no group and train() wraps nothing, so one process under torchrun *is* the plain path. This
benchmark forces the N-rank code path with N = 1 to isolate its per-rank cost (what each of N GPUs pays
on top of the math, communication time between GPUs aside).

Rounds are interleaved (plain, ddp, then ddp, plain, ...) so a busy machine slows both alike; the report
is the median img/s of each, and the median of the per-round ratios ddp / plain (goal: overhead <= 5%).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from catgan.config import Preset, RunOptions, get_preset
from catgan.distributed import DistContext, local_device, teardown
from catgan.runtime import cpu_count
from catgan.training.loop import load_images, train


@dataclasses.dataclass(frozen=True)
class ForcedDistContext(DistContext):
    """A one-process context that still takes train()'s distributed branches (DDP wrappers, collectives).

    DistContext.enabled is `world > 1`, so with world 1 train() would skip DDP entirely; this keeps the
    N-rank code path with N = 1 (a process group must be initialised first).
    """

    @property
    def enabled(self) -> bool:
        return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def one_process_group(device: torch.device) -> Iterator[DistContext]:
    """A world-size-1 process group in this process (as torchrun would set it up), torn down after."""
    env = {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
        "LOCAL_WORLD_SIZE": "1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    backend = "nccl" if device.type == "cuda" else "gloo"
    ctx = ForcedDistContext(rank=0, world=1, local_rank=0, local_world=1)
    try:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend, rank=0, world_size=1, timeout=timedelta(seconds=300))
        yield ctx
    finally:
        teardown(ctx)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_dir_root() -> str | None:
    """/dev/shm when writable: train() writes an end checkpoint per call (~500 MB for thesis-128)."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def timed_train(
    images: torch.Tensor,
    preset: Preset,
    device: str,
    steps: int,
    warmup: int,
    log_every: int,
    threads: int | None,
    amp: bool,
    ctx: DistContext | None,
) -> float:
    """img/s of train() over `steps` steps after `warmup` (multiples of log_every), from metrics.jsonl."""
    cfg = dataclasses.replace(preset.train, epochs=10**6, max_steps=warmup + steps)
    quiet = {"sample_every": 0, "checkpoint_every": 0, "progress": False}
    with tempfile.TemporaryDirectory(prefix="catgan-ddp-", dir=run_dir_root()) as tmp:
        run = Path(tmp) / "run"
        train(
            images, preset.model, cfg, run,
            RunOptions(device=device, amp=amp, threads=threads, log_every=log_every, **quiet),
            dist_ctx=ctx, log=lambda _: None,
        )  # fmt: skip
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    t = {r["step"]: r["time"] for r in records if "img/s" in r}
    return steps * cfg.batch / (t[warmup + steps] - t[warmup])


def round_up(n: int, k: int) -> int:
    return max(k, -(-n // k) * k)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument(
        "--preset", help="default: dcgan-64 on the CPU, thesis-128 on CUDA (batch from the preset)"
    )
    p.add_argument("--batch", type=int, help="override the preset's batch")
    p.add_argument("--data", help="a prepared dataset folder (default: synthetic uint8 noise in memory)")
    p.add_argument("--steps", type=int, help="timed steps per variant and round (cpu 4, cuda 60)")
    p.add_argument("--warmup", type=int, help="untimed steps first (cpu 1, cuda 10)")
    p.add_argument(
        "--log-every", type=int, help="train()'s metrics window (cpu 1, cuda 10 = the CLI default)"
    )
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of both variants (default 3)")
    p.add_argument("--threads", type=int, help="CPU threads (default: every core)")
    p.add_argument("--amp", action="store_true", help="bf16 autocast, as `catgan train --amp`")
    args = p.parse_args(argv)

    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available on this machine")
    preset = get_preset(args.preset or ("thesis-128" if cuda else "dcgan-64"))
    if args.batch:
        preset = dataclasses.replace(preset, train=dataclasses.replace(preset.train, batch=args.batch))
    batch, size = preset.train.batch, preset.model.image_size
    log_every = args.log_every or (10 if cuda else 1)
    warmup = round_up(args.warmup or (10 if cuda else 1), log_every)
    steps = round_up(args.steps or (60 if cuda else 4), log_every)
    threads = args.threads or cpu_count()
    torch.set_num_threads(threads)
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")

    if args.data:
        images = load_images(args.data, size)  # (N, 3, S, S) uint8, read once for every call
    else:
        gen = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (batch * 8, 3, size, size), dtype=torch.uint8, generator=gen)

    machine = torch.cuda.get_device_name(device) if cuda else (platform.processor() or "cpu")
    print(f"# {preset.name}, batch {batch}, {size} px, {len(images)} images ({args.data or 'synthetic'})")
    print(f"# {machine}, torch {torch.__version__}, {threads} threads, amp {args.amp}")
    print(f"# {steps} timed steps after {warmup} warm-up, log_every {log_every}, {args.rounds} round(s)")

    def plain() -> float:
        return timed_train(images, preset, str(device), steps, warmup, log_every, threads, args.amp, None)

    def ddp() -> float:
        with one_process_group(device) as ctx:
            dev = local_device(device.type, ctx)  # "cuda" -> "cuda:LOCAL_RANK", as `catgan train` does
            return timed_train(images, preset, dev, steps, warmup, log_every, threads, args.amp, ctx)

    rates: dict[str, list[float]] = {"plain": [], "ddp": []}
    ratios = []
    t0 = time.perf_counter()
    for r in range(args.rounds):
        order = [("plain", plain), ("ddp", ddp)]
        if r % 2:
            order.reverse()  # alternate which goes first, so neither always follows the other
        got = {name: fn() for name, fn in order}
        for name, v in got.items():
            rates[name].append(v)
        ratios.append(got["ddp"] / got["plain"])
        print(
            f"round {r + 1}: plain {got['plain']:.2f} img/s, ddp {got['ddp']:.2f} img/s, "
            f"ddp/plain {ratios[-1]:.3f}",
            flush=True,
        )

    print("\n| path  | median img/s | range (rounds) |\n|-------|-------------:|---------------:|")
    for name, values in rates.items():
        print(f"| {name:<5} | {statistics.median(values):12.2f} | {min(values):.2f}-{max(values):.2f} |")
    med = {name: statistics.median(values) for name, values in rates.items()}
    ratio = statistics.median(ratios)
    print(
        f"\nddp / plain: {med['ddp'] / med['plain']:.3f} (of the medians), {ratio:.3f} (median of the "
        f"per-round ratios, range {min(ratios):.3f}-{max(ratios):.3f})"
    )
    print(
        f"DDP overhead: {1 - ratio:+.1%} of throughput (goal <= 5%): "
        f"{'met' if 1 - ratio <= 0.05 else 'NOT met'}; {time.perf_counter() - t0:.0f} s in all"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
