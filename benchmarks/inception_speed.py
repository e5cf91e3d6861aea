"""Inception-v3 feature throughput (img/s) for FID/KID, and what bf16 does to FID, measured side by side.

Rows, on the same images in one run: the TorchScript network as loaded (the extractor before issue 34),
frozen + channels_last in fp32, and frozen under bf16 autocast (what precision="auto" picks on CPUs with
native bf16). With --data, the FID between two disjoint halves of real faces is computed from fp32 and from
bf16 features, and the FID between the fp32 and bf16 features of the same faces.

python benchmarks/inception_speed.py --device cpu --threads 2 --batch 32 --n 64
python benchmarks/inception_speed.py --n 64 --data DIR/cats-64 --fid-n 500
python benchmarks/inception_speed.py --n 256 --selfsup      # the self-supervised encoder's row too
python benchmarks/inception_speed.py --device cuda --batch 256 --n 4096 --fp16
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from catgan.metrics.fid import fid_from_features
from catgan.metrics.inception import InceptionExtractor, extractor_path
from catgan.runtime import cpu_has_native_bf16


def as_loaded(device: str, batch: int) -> InceptionExtractor:
    """The extractor as it was before freezing: the TorchScript module straight from torch.jit.load."""
    model = torch.jit.load(str(extractor_path()), map_location=device).eval()
    return InceptionExtractor(model=model, device=torch.device(device), batch=batch)


def img_per_s(extractor, images: torch.Tensor) -> float:
    extractor.features(images[: extractor.batch])  # warm-up (freezing's first-call optimisation, allocator)
    if extractor.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    extractor.features(images)
    if extractor.device.type == "cuda":
        torch.cuda.synchronize()
    return len(images) / (time.perf_counter() - start)


def fid_change(fp32: InceptionExtractor, bf16: InceptionExtractor, data: Path, n: int) -> None:
    """FID of two real halves in each precision, and fp32 vs bf16 features of the same faces."""
    from catgan.data.dataset import load_dataset

    faces = load_dataset(data)
    idx = torch.randperm(len(faces), generator=torch.Generator().manual_seed(0))[: 2 * n]
    a, b = faces[idx[:n]], faces[idx[n:]]
    feats = {name: (e.features(a), e.features(b)) for name, e in (("fp32", fp32), ("bf16", bf16))}
    f32, f16 = (fid_from_features(*feats[k]) for k in ("fp32", "bf16"))
    rel = np.linalg.norm(feats["bf16"][0] - feats["fp32"][0]) / np.linalg.norm(feats["fp32"][0])
    print(
        f"FID real half vs half (n={n} each, {data}): fp32 {f32:.3f}  bf16 {f16:.3f}  "
        f"change {f16 - f32:+.3f} ({(f16 - f32) / f32:+.2%})"
    )
    print(
        f"FID fp32 vs bf16 features of the same {n} faces: "
        f"{fid_from_features(feats['fp32'][0], feats['bf16'][0]):.4f}; relative feature difference {rel:.2%}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--n", type=int, default=64, help="images timed per row (after one warm-up batch)")
    p.add_argument("--size", type=int, default=64, help="input image size before the 299 px resize")
    p.add_argument("--fp16", action="store_true", help="half-precision weights (CUDA)")
    p.add_argument("--data", type=Path, help="a prepared dataset: also measure the FID change of bf16")
    p.add_argument("--fid-n", type=int, default=500, help="faces per half for the FID change")
    p.add_argument("--selfsup", action="store_true", help="also time the self-supervised encoder")
    p.add_argument("--selfsup-weights", type=Path, help="its .safetensors (default: the shipped one)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    images = torch.randint(0, 256, (args.n, 3, args.size, args.size), dtype=torch.uint8)
    rows = {"as loaded (fp32)": as_loaded(args.device, args.batch)}
    rows["frozen + channels_last fp32"] = InceptionExtractor.load(
        args.device, batch=args.batch, precision="fp32"
    )
    if args.fp16:
        rows["frozen fp16 weights"] = InceptionExtractor.load(args.device, fp16=True, batch=args.batch)
    else:
        rows["frozen + channels_last bf16 autocast"] = InceptionExtractor.load(
            args.device, batch=args.batch, precision="bf16"
        )
    print(
        f"device={args.device} threads={torch.get_num_threads()} batch={args.batch} n={args.n} "
        f"size={args.size} cpu={torch.backends.cpu.get_cpu_capability()} native_bf16={cpu_has_native_bf16()}"
    )
    if args.selfsup:
        from catgan.metrics.selfsup import SelfSupExtractor

        rows["selfsup encoder (fp32)"] = SelfSupExtractor.load(args.device, path=args.selfsup_weights)
    speeds = {label: img_per_s(e, images) for label, e in rows.items()}
    base = speeds["as loaded (fp32)"]
    for label, v in speeds.items():
        print(f"| {label:<38} | {v:7.1f} img/s | {v / base:5.2f}x |")
    if args.data is not None and not args.fp16:
        fid_change(
            rows["frozen + channels_last fp32"],
            rows["frozen + channels_last bf16 autocast"],
            args.data,
            args.fid_n,
        )


if __name__ == "__main__":
    main()
