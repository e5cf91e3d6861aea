"""What a learned 2x upsampler is worth: FID at 128 px of 64 px cats made bigger, side by side in one run.

Rows (each scored against the full-size reference of the prepared dataset, the same n seeds or faces):
  real                     n real full-size faces (they are in the reference, so this is a floor)
  real, bicubic            the same faces' half-size pictures, bicubic-upsampled
  real, UPSAMPLER          ... through each learned upsampler
  BASE, bicubic            the base generator's samples (seeds 0..n-1), bicubic-upsampled
  BASE, UPSAMPLER          ... through each learned upsampler (what `catgan cascade` ships)
  MODEL                    each --compare generator at full size (e.g. the bundled cats-128)

    python benchmarks/upsampler_fid.py --data data/faces --base cats-64 --upsampler runs/up/a0 runs/up/a0.01 \
        --compare cats-128 --n 1000 --out runs/eval/upsampler-fid.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from catgan.data.dataset import to_float, to_uint8
from catgan.generate import generate_images, load_generator
from catgan.metrics.inception import InceptionExtractor
from catgan.metrics.reference import reference_stats
from catgan.models.upsampler import Upsampler
from catgan.upsample import latest_state, load_pairs


@torch.no_grad()
def upsample(images: torch.Tensor, net: Upsampler | None, batch: int = 100) -> torch.Tensor:
    """uint8 (N, 3, S, S) -> uint8 (N, 3, 2S, 2S), by `net` or (None) bicubic."""
    out = []
    for chunk in images.split(batch):
        x = to_float(chunk)  # (B, 3, S, S) in [-1, 1]
        y = F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False) if net is None else net(x)
        out.append(to_uint8(y))
    return torch.cat(out)


def _load(source: str):
    """A bundled model's name or an exported .safetensors file."""
    return load_generator(weights=source) if source.endswith(".safetensors") else load_generator(model=source)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="prepared folder with cats-64 and cats-128")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--base", default="cats-64", help="a half-size generator (bundled name or .safetensors)")
    p.add_argument("--upsampler", nargs="*", default=[], help="train-upsampler runs or checkpoints")
    p.add_argument("--compare", nargs="*", default=[], help="full-size generators to score beside them")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    ext = InceptionExtractor.load("cpu", batch=50)
    ref = reference_stats(args.data, ext, image_size=args.size)
    low, high = load_pairs(args.data, args.size)
    pick = torch.from_numpy(np.random.default_rng(0).permutation(len(high))[: args.n])
    nets = {}
    for source in args.upsampler:
        path, state = latest_state(source)
        cfg = state["upsampler_config"]
        net = Upsampler(cfg["channels"], cfg["blocks"])
        net.load_state_dict(state["U"])
        nets[f"{Path(source).name}@{state['step']}"] = net.eval()
    base_name = Path(args.base).stem
    samples = generate_images(_load(args.base), list(range(args.n)))  # uint8 (n, 3, S/2, S/2)
    rows = {"real": high[pick], "real, bicubic": upsample(low[pick], None)}
    rows |= {f"real, {name}": upsample(low[pick], net) for name, net in nets.items()}
    rows[f"{base_name}, bicubic"] = upsample(samples, None)
    rows |= {f"{base_name}, {name}": upsample(samples, net) for name, net in nets.items()}
    for model in args.compare:
        rows[Path(model).stem] = generate_images(_load(model), list(range(args.n)))
    result = {"n": args.n, "reference": str(ref.cache_file), "extractor": ext.name, "fid": {}}
    for name, images in rows.items():
        result["fid"][name] = ref.fid(ext.features(images))
        seconds = time.perf_counter() - start
        print(f"{name:40s} FID (n={args.n}) {result['fid'][name]:7.2f}  ({seconds:.0f} s)", flush=True)
    result["seconds"] = time.perf_counter() - start
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
