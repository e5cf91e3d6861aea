"""Validate a feature space the way Heusel et al. (2017) validated FID: the Fréchet distance between real
faces and distorted real faces should grow steadily with the distortion's strength.

Reference: `--n-ref` training faces. Distorted: `--n` held-out faces (`is_holdout(source, 0.1)`: faces the
self-supervised encoder never saw), undistorted at level 0 (the real-vs-real floor), then Gaussian noise,
Gaussian blur, black rectangles, swirl, salt-and-pepper, and mixing in non-cat images: synthetic textures
(band-limited random colour noise: smooth blobs of colour, no object). Also real vs uniform-noise images
(the ceiling). Both spaces see the same images; features are cached per space and size in --out, so a
rerun (or adding a space) only computes what is missing. Writes results.json and one figure per size.

python benchmarks/selfsup_validate.py --data DIR --sizes 64,128 --spaces inception,selfsup \\
    --n 200 --n-ref 400 --out docs/runs/2026-12-02-selfsup/validation --cache /tmp/validation
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from catgan.metrics.fid import fid_from_features

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_selfsup import split_faces  # noqa: E402

# Three strengths per distortion, mild to strong (at 64 px; sizes in px scale with the image).
LEVELS: dict[str, tuple[float, ...]] = {
    "gaussian noise (sigma, of 255)": (8.0, 24.0, 64.0),
    "blur (sigma, px at 64)": (0.5, 1.0, 2.0),
    "black rectangles (count, side S/4)": (1, 3, 8),
    "swirl (strength)": (1.0, 3.0, 8.0),
    "salt and pepper (share of pixels)": (0.02, 0.08, 0.25),
    "non-cat textures mixed in (share)": (0.1, 0.3, 0.6),
}


def _noise(x: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
    return (x.float() + torch.randn(x.shape, generator=gen) * sigma).round().clamp(0, 255).to(torch.uint8)


def _blur(x: torch.Tensor, sigma64: float, gen: torch.Generator) -> torch.Tensor:
    sigma = sigma64 * x.shape[-1] / 64
    r = max(1, math.ceil(3 * sigma))
    k = torch.exp(-(torch.arange(-r, r + 1.0) ** 2) / (2 * sigma**2))
    k = (k / k.sum()).view(1, 1, 1, -1).repeat(3, 1, 1, 1)  # (3, 1, 1, 2r+1)
    y = F.pad(x.float(), (r, r, r, r), mode="replicate")
    y = F.conv2d(F.conv2d(y, k, groups=3), k.transpose(2, 3), groups=3)  # separable
    return y.round().clamp(0, 255).to(torch.uint8)


def _rectangles(x: torch.Tensor, count: float, gen: torch.Generator) -> torch.Tensor:
    y, s = x.clone(), x.shape[-1]
    side = s // 4
    for _ in range(int(count)):
        top, left = torch.randint(0, s - side + 1, (2, len(x)), generator=gen)
        for i in range(len(x)):
            y[i, :, top[i] : top[i] + side, left[i] : left[i] + side] = 0
    return y


def _swirl(x: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    """scikit-image's swirl about the centre, radius S/2: angle = strength * exp(-r / (radius / ln 2))."""
    s = x.shape[-1]
    coords = torch.linspace(-1, 1, s)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")  # (S, S) each
    rho, theta = torch.sqrt(xx**2 + yy**2), torch.atan2(yy, xx)
    theta = theta + strength * torch.exp(-rho * math.log(2))  # radius 1 = S/2 in these units
    grid = torch.stack([rho * torch.cos(theta), rho * torch.sin(theta)], dim=-1)  # (S, S, 2)
    y = F.grid_sample(x.float(), grid.expand(len(x), s, s, 2), align_corners=True, padding_mode="reflection")
    return y.round().clamp(0, 255).to(torch.uint8)


def _salt_pepper(x: torch.Tensor, share: float, gen: torch.Generator) -> torch.Tensor:
    hit = torch.rand((len(x), 1, *x.shape[-2:]), generator=gen) < share  # (B, 1, S, S)
    salt = torch.rand((len(x), 1, *x.shape[-2:]), generator=gen) < 0.5
    return torch.where(hit, torch.where(salt, 255, 0).to(torch.uint8).expand_as(x), x)


def textures(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """Non-cat images: random colour noise at 1/8 of the size, bicubically enlarged (smooth colour blobs)."""
    low = torch.rand((n, 3, max(2, size // 8), max(2, size // 8)), generator=gen)
    y = F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    return (y * 255).round().clamp(0, 255).to(torch.uint8)


def _mix(x: torch.Tensor, share: float, gen: torch.Generator) -> torch.Tensor:
    y, k = x.clone(), round(share * len(x))
    y[:k] = textures(k, x.shape[-1], gen)
    return y


DISTORT: dict[str, Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]] = dict(
    zip(LEVELS, (_noise, _blur, _rectangles, _swirl, _salt_pepper, _mix), strict=True)
)


def image_sets(train: torch.Tensor, held: torch.Tensor, n: int, n_ref: int) -> dict[str, torch.Tensor]:
    """Every set the validation scores, by a stable name: reference, floor, each distortion level, noise."""
    gen = torch.Generator().manual_seed(0)
    ref = train[torch.randperm(len(train), generator=gen)[:n_ref]]
    base = held[torch.randperm(len(held), generator=gen)[:n]]
    sets = {"reference": ref, "floor": base}
    for name, levels in LEVELS.items():
        for level in levels:
            sets[f"{name}={level}"] = DISTORT[name](base, level, torch.Generator().manual_seed(1))
    sets["uniform noise"] = torch.randint(0, 256, base.shape, dtype=torch.uint8, generator=gen)
    return sets


def load_space(name: str, weights: Path | None):
    if name == "inception":
        from catgan.metrics.inception import InceptionExtractor

        return InceptionExtractor.load("cpu")
    from catgan.metrics.selfsup import SelfSupExtractor

    return SelfSupExtractor.load("cpu", path=weights)


def space_features(
    space: str, size: int, sets: dict, out: Path, weights: Path | None
) -> dict[str, np.ndarray]:
    """Features of every set in one space, from out/features-SPACE-SIZE.npz where already computed."""
    path = out / f"features-{space}-{size}.npz"
    have = dict(np.load(path)) if path.is_file() else {}
    extractor = None
    for key, images in sets.items():
        if key in have:
            continue
        extractor = extractor or load_space(space, weights)
        print(f"{space} {size}px: {key} ({len(images)} images)", file=sys.stderr, flush=True)
        have[key] = extractor.features(images).astype(np.float32)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **have)
        tmp.replace(path)  # a rerun after a kill keeps every finished set
    return have


def distances(feats: dict[str, np.ndarray]) -> dict[str, float]:
    ref = feats["reference"].astype(np.float64)
    return {k: fid_from_features(ref, v.astype(np.float64)) for k, v in feats.items() if k != "reference"}


def plot(results: dict, size: int, path: Path) -> None:
    """One panel per distortion: distance / real-vs-noise distance per space, floor at level 0."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 5.6), dpi=80)
    FigureCanvasAgg(fig)
    for i, (name, levels) in enumerate(LEVELS.items()):
        ax = fig.add_subplot(2, 3, i + 1)
        for space, res in results[str(size)].items():
            d = res["distance"]
            ys = [d["floor"]] + [d[f"{name}={lv}"] for lv in levels]
            ax.plot(range(len(ys)), [y / d["uniform noise"] for y in ys], marker="o", label=space)
        ax.set_xticks(range(len(levels) + 1), ["0"] + [f"{lv:g}" for lv in levels])
        ax.set_title(name, fontsize=9)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        if i == 0:
            ax.set_ylabel("distance / real-vs-noise")
            ax.legend(fontsize=8)
    fig.suptitle(f"Fréchet distance to real faces vs distortion strength, {size} px", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)


def examples(sets: dict[str, torch.Tensor], size: int, path: Path) -> None:
    """One held-out face under every distortion level: a row per distortion, mild to strong."""
    from PIL import Image

    rows = [
        [sets["floor"][1]] + [sets[f"{name}={lv}"][1] for lv in levels] for name, levels in LEVELS.items()
    ]
    rows[-1] = [sets["floor"][1]] + [sets[f"{list(LEVELS)[-1]}={lv}"][0] for lv in LEVELS[list(LEVELS)[-1]]]
    grid = torch.cat([torch.cat(row, dim=2) for row in rows], dim=1)  # (3, rows * S, cols * S)
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="folder holding the prepared cats-S datasets")
    p.add_argument("--sizes", default="64,128")
    p.add_argument("--spaces", default="inception,selfsup")
    p.add_argument("--n", type=int, default=200, help="held-out faces per distorted set")
    p.add_argument("--n-ref", type=int, default=400, help="training faces in the reference")
    p.add_argument("--weights", type=Path, help="selfsup .safetensors (default: the shipped one)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, required=True, help="results.json and the figures")
    p.add_argument("--cache", type=Path, help="where the features are kept (default: --out; tens of MB)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cache = args.cache or args.out
    for folder in (args.out, cache):
        folder.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    for size in (int(s) for s in args.sizes.split(",")):
        train, held = split_faces(args.data / f"cats-{size}", size)
        sets = image_sets(train, held, args.n, args.n_ref)
        results[str(size)] = {}
        for space in args.spaces.split(","):
            feats = space_features(space, size, sets, cache, args.weights)
            results[str(size)][space] = {"distance": distances(feats), "dim": int(feats["floor"].shape[1])}
            d = results[str(size)][space]["distance"]
            print(f"{size}px {space}: floor {d['floor']:.3f}, uniform noise {d['uniform noise']:.3f}")
        plot(results, size, args.out / f"validation-{size}.png")
        examples(sets, size, args.out / f"distortions-{size}.png")
    meta = {"n": args.n, "n_ref": args.n_ref, "levels": LEVELS, "command": " ".join(sys.argv)}
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(f"wrote {args.out}/results.json and validation-*.png")


if __name__ == "__main__":
    main()
