"""`catgan prepare` speed: photos/s with 1 worker and with all cores, side by side, and peak memory.

    python benchmarks/prepare_speed.py                        # the real landmark photos in ../shared
    python benchmarks/prepare_speed.py --source DIR --sizes 64,128 --repeat 3

Each run is a fresh process preparing into a temporary folder; its peak RSS is the whole process tree
(main + workers), sampled every 20 ms from /proc. The time includes starting the worker pool.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "cat-landmarks"


def _tree_rss_mib() -> float:
    """Resident memory of this process and all its descendants (Linux /proc), in MiB."""
    total, todo = 0, [os.getpid()]
    while todo:
        pid = todo.pop()
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            total += int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("VmRSS:")))
            for task in Path(f"/proc/{pid}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, StopIteration, ValueError):
            continue
    return total / 1024


class PeakTreeRSS(threading.Thread):
    """Samples the process tree's total RSS every 20 ms; `.peak` is the highest seen."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self.stop = 0.0, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.02):
            self.peak = max(self.peak, _tree_rss_mib())


def one_run(source: str, sizes: tuple[int, ...], workers: int) -> dict:
    """Prepare once in this process; returns timings and peak RSS (MiB)."""
    from catgan.data.prepare import PrepareConfig, prepare

    sampler = PeakTreeRSS()
    sampler.start()
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        report = prepare(
            PrepareConfig((Path(source),), Path(out), sizes=sizes, workers=workers, progress=False)
        )
        seconds = time.perf_counter() - start
    sampler.stop.set()
    sampler.join()
    photos = sum(report.kinds.values())
    return {
        "workers": report.workers,
        "photos": photos,
        "seconds": seconds,
        "photos_per_s": photos / seconds,
        "kept": report.kept,
        "rss_tree_mib": sampler.peak,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default=str(DEFAULT_SOURCE), help="a prepare SOURCE (folder or zip)")
    ap.add_argument("--sizes", default="64,128")
    ap.add_argument("--repeat", type=int, default=3, help="runs per setting; the fastest is reported")
    ap.add_argument("--workers", type=int, default=0, help="the 'all cores' setting (0 = all cores)")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # internal: one run
    args = ap.parse_args()
    sizes = tuple(int(s) for s in args.sizes.split(","))
    if args.one is not None:
        print(json.dumps(one_run(args.source, sizes, args.one)))
        return
    if not Path(args.source).exists():
        sys.exit(f"source {args.source} not found (the real data lives in ../shared/data)")

    cores = len(os.sched_getaffinity(0))  # as catgan.runtime.cpu_count, without importing torch here
    all_cores = args.workers or cores
    results = {}
    for workers in (1, all_cores):
        runs = []
        for _ in range(args.repeat):
            cmd = [
                sys.executable,
                __file__,
                "--source",
                args.source,
                "--sizes",
                args.sizes,
                "--one",
                str(workers),
            ]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
        results[workers] = min(runs, key=lambda r: r["seconds"])
    one, many = results[1], results[all_cores]
    print(f"source: {args.source}  sizes: {args.sizes}  best of {args.repeat}")
    load = os.getloadavg()[0]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs visible, {cores} usable, load {load:.1f}")
    print(f"{'workers':>8} {'photos':>7} {'seconds':>8} {'photos/s':>9} {'peak RSS (main + workers)':>26}")
    for r in (one, many):
        print(
            f"{r['workers']:>8} {r['photos']:>7} {r['seconds']:>8.2f} {r['photos_per_s']:>9.1f} "
            f"{r['rss_tree_mib']:>23.0f} MiB"
        )
    print(f"speed-up with {many['workers']} workers: {many['photos_per_s'] / one['photos_per_s']:.2f}x")


if __name__ == "__main__":
    main()
