"""`catgan serve` under load: requests/s and p50/p95 latency for 16-cat grids at 1, 4 and 16 clients.

    python benchmarks/serve_load.py                          # dcgan-64 architecture, random weights
    python benchmarks/serve_load.py --weights cats.safetensors --requests 96 --seconds 30
    python benchmarks/serve_load.py --preset tiny-16 --clients 1,4

The server runs as `catgan serve --port 0` in its own process on 127.0.0.1; this process is the load:
one keep-alive connection per client thread, each request a 16-cat grid. With unique seeds every request
is new work (the cache cannot help); with repeated seeds all ask for the same grid (the cache answers).
While each level runs, a probe asks /api/info every 0.1 s to show the event loop stays responsive.
Each level stops after --requests requests or --seconds seconds, whichever comes first. The server's
RSS is read from /proc before and after each level (the image cache is bounded at 64 MiB).
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Level:
    clients: int
    mode: str
    latencies: list[float] = field(default_factory=list)
    probe: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0
    rss_before: float = 0.0
    rss_after: float = 0.0


def export_random(preset: str, out: Path) -> Path:
    """Random weights for a preset's generator, exported as `catgan serve --weights` reads them."""
    import torch

    from catgan.checkpoint import export_generator
    from catgan.config import get_preset
    from catgan.models import build_generator

    torch.manual_seed(0)
    cfg = get_preset(preset).model
    return export_generator(
        build_generator(cfg.generator).state_dict(), cfg.generator, out, random_weights=True, preset=preset
    )


def rss_mib(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", text).group(1)) / 1024


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def get(conn: http.client.HTTPConnection, path: str) -> int:
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    return response.status


def run_level(host: str, port: int, pid: int, level: Level, n: int, seconds: float, first_seed: int) -> int:
    """Run one level; returns the next unused seed."""
    counter = itertools.count()
    lock = threading.Lock()
    done = threading.Event()
    deadline = time.monotonic() + seconds

    def client() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=120)
        try:
            while time.monotonic() < deadline:
                with lock:
                    i = next(counter)
                if i >= n:
                    return
                base = first_seed + 16 * i if level.mode == "unique" else 0
                t0 = time.perf_counter()
                status = get(conn, f"/api/grid.png?seeds={base}-{base + 15}")
                dt = time.perf_counter() - t0
                with lock:
                    if status == 200:
                        level.latencies.append(dt)
                    else:
                        level.errors += 1
        finally:
            conn.close()

    def probe() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        while not done.wait(0.1):
            t0 = time.perf_counter()
            if get(conn, "/api/info") == 200:
                level.probe.append(time.perf_counter() - t0)
        conn.close()

    level.rss_before = rss_mib(pid)
    prober = threading.Thread(target=probe, daemon=True)
    threads = [threading.Thread(target=client, daemon=True) for _ in range(level.clients)]
    start = time.perf_counter()
    prober.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    level.seconds = time.perf_counter() - start
    done.set()
    prober.join()
    level.rss_after = rss_mib(pid)
    return first_seed + 16 * next(counter)


def start_server(weights: Path, max_concurrency: int) -> tuple[subprocess.Popen, str, int]:
    cmd = [sys.executable, "-m", "catgan", "serve", "--weights", str(weights), "--port", "0", "--quiet"]
    cmd += ["--device", "cpu", "--max-concurrency", str(max_concurrency)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    m = re.search(r"http://(127\.0\.0\.1):(\d+)/", line)
    if m is None:
        proc.kill()
        raise SystemExit(f"the server did not print its URL: {line!r}")
    host, port = m.group(1), int(m.group(2))
    for _ in range(200):  # up to 20 s for the app to start answering
        try:
            conn = http.client.HTTPConnection(host, port, timeout=5)
            if get(conn, "/api/info") == 200:
                conn.close()
                return proc, host, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not answer /api/info within 20 s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--weights", help="an exported generator .safetensors (default: random --preset)")
    src.add_argument("--preset", default="dcgan-64", help="architecture for random weights")
    ap.add_argument("--clients", default="1,4,16", help="concurrent clients, one level each")
    ap.add_argument("--requests", type=int, default=64, help="most requests per level")
    ap.add_argument("--seconds", type=float, default=20.0, help="most seconds per level")
    ap.add_argument("--max-concurrency", type=int, default=2, help="the server's generation threads")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        weights = (
            Path(args.weights) if args.weights else export_random(args.preset, Path(tmp) / "g.safetensors")
        )
        proc, host, port = start_server(weights, args.max_concurrency)
        try:
            conn = http.client.HTTPConnection(host, port, timeout=120)
            get(conn, "/api/grid.png?seeds=0-15")  # warm up: first call pays for lazy inits
            conn.close()
            levels: list[Level] = []
            seed = 1_000_000  # unique seeds never repeat across levels
            for mode in ("unique", "repeated"):
                for clients in (int(c) for c in args.clients.split(",")):
                    level = Level(clients, mode)
                    seed = run_level(host, port, proc.pid, level, args.requests, args.seconds, seed)
                    levels.append(level)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()

    name = weights.name if args.weights else f"{args.preset} (random weights)"
    print(f"# catgan serve load: {name}, 16-cat grids, server --max-concurrency {args.max_concurrency}")
    print(f"# {platform.platform()}, python {platform.python_version()}, client and server on 127.0.0.1")
    print(f"# each level: at most {args.requests} requests or {args.seconds:g} s")
    head = ("seeds", "clients", "requests", "errors", "req/s", "p50 ms", "p95 ms", "info p95 ms", "RSS MiB")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for lv in levels:
        ok = len(lv.latencies)
        row = (
            lv.mode,
            str(lv.clients),
            str(ok),
            str(lv.errors),
            f"{ok / lv.seconds:.1f}",
            f"{1000 * statistics.median(lv.latencies):.1f}" if ok else "-",
            f"{1000 * percentile(lv.latencies, 95):.1f}",
            f"{1000 * percentile(lv.probe, 95):.1f}" if lv.probe else "-",
            f"{lv.rss_before:.0f} -> {lv.rss_after:.0f}",
        )
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
