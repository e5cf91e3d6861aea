"""Restoration quality: PSNR of damaged real faces before and after `catgan restore`'s face step, against
plain baselines. Prints one JSON object (and a table); docs/projection.md quotes it.

    nice -n 10 python benchmarks/restore_quality.py --n 32 --steps 100
    python benchmarks/restore_quality.py --only mask --only noise --model64 RUN \
        --encoder64 RUN/encoder.safetensors   # a generator of your own (--holdout: unseen faces)
    # --faces DIR (default ../shared/data/cat-faces/cats_bigger_than_64x64); the faces are the first n
    # (by name) that split.is_holdout(name, 0.1) puts in the held-out share

Three damages, each on the same n faces, each restored with projection.restore.restore_face:
- mask: a random rectangle (a quarter of the face's area, seeded per face) set to black; PSNR inside the
  rectangle; baselines: the damaged face, cv2.inpaint (Telea, radius 3)
- noise: Gaussian noise of std --sigma levels; PSNR of the whole face; baselines: the noisy face, a
  Gaussian blur (the loss's own low-pass), cv2.fastNlMeansDenoisingColored (h = sigma)
- downscale: the 128 px face average-pooled to 64 px, restored with the 128 px generator; PSNR at 128
  px; baseline: bicubic upscaling
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import catgan  # noqa: E402
from catgan.data.split import is_holdout  # noqa: E402
from catgan.projection.project import ProjectConfig, Projector  # noqa: E402
from catgan.projection.restore import RestoreConfig, gaussian_blur, restore_face  # noqa: E402


def psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    d = a.astype(np.float64) - b.astype(np.float64)  # (H, W, 3)
    err = (d[where] if where is not None else d).__pow__(2).mean()
    return float(10 * np.log10(255**2 / max(err, 1e-10)))


def load_face(path: Path, size: int) -> np.ndarray:
    """As `catgan prepare` treats a face crop: centre-cropped square, Lanczos to size: (size, size, 3)."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        side = min(im.size)
        x0, y0 = (im.width - side) // 2, (im.height - side) // 2
        return np.asarray(im.crop((x0, y0, x0 + side, y0 + side)).resize((size, size), Image.LANCZOS))


def to_t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1).contiguous()


def to_np(x: torch.Tensor) -> np.ndarray:
    return x.permute(1, 2, 0).contiguous().numpy()


def faces_list(folder: Path, n: int, big: set[str]) -> list[Path]:
    names = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    chosen = [p for p in names if is_holdout(p.name, 0.1) and p.name in big]
    return chosen[:n]


def run_mask(projector, faces, rng) -> dict:
    import cv2

    rows = []
    for face in faces:
        s = face.shape[0]
        h, w = s // 2, s // 2
        y0, x0 = rng.integers(s // 8, s - h - s // 8 + 1), rng.integers(s // 8, s - w - s // 8 + 1)
        hole = np.zeros((s, s), bool)
        hole[y0 : y0 + h, x0 : x0 + w] = True
        damaged = face.copy()
        damaged[hole] = 0
        telea = cv2.inpaint(damaged, hole.astype(np.uint8) * 255, 3, cv2.INPAINT_TELEA)
        t = time.perf_counter()
        ours = to_np(
            restore_face(projector, to_t(damaged), RestoreConfig("mask"), torch.from_numpy(hole))["face"]
        )
        rows.append(
            {
                "damaged": psnr(damaged, face, hole),
                "cv2_telea": psnr(telea, face, hole),
                "catgan": psnr(ours, face, hole),
                "seconds": time.perf_counter() - t,
            }
        )
    return summarise(rows)


def run_noise(projector, faces, rng, sigma: float) -> dict:
    import cv2

    rows = []
    for face in faces:
        noisy = np.clip(np.rint(face + rng.normal(0, sigma, face.shape)), 0, 255).astype(np.uint8)
        blur = gaussian_blur(to_t(noisy)[None].float(), 1.0)[0].round().clamp(0, 255).byte()
        nlm = cv2.fastNlMeansDenoisingColored(noisy, None, sigma, sigma, 7, 21)
        t = time.perf_counter()
        ours = to_np(restore_face(projector, to_t(noisy), RestoreConfig("denoise"))["face"])
        rows.append(
            {
                "noisy": psnr(noisy, face),
                "gaussian_blur": psnr(to_np(blur), face),
                "cv2_nlmeans": psnr(nlm, face),
                "catgan": psnr(ours, face),
                "seconds": time.perf_counter() - t,
            }
        )
    return summarise(rows)


def run_downscale(projector, faces) -> dict:
    rows = []
    for face in faces:  # (128, 128, 3)
        small = F.avg_pool2d(to_t(face)[None].float(), 2).round().byte()  # (1, 3, 64, 64)
        bicubic = F.interpolate(small.float(), scale_factor=2, mode="bicubic", align_corners=False)
        t = time.perf_counter()
        ours = to_np(restore_face(projector, small[0], RestoreConfig("upscale"))["face"])
        rows.append(
            {
                "bicubic": psnr(to_np(bicubic[0].round().clamp(0, 255).byte()), face),
                "catgan": psnr(ours, face),
                "seconds": time.perf_counter() - t,
            }
        )
    return summarise(rows)


def report(name: str, result: dict) -> dict:
    """Each damage's row as soon as it is done (a starved run still leaves what it finished)."""
    print(f"{name}: {json.dumps(result)}", file=sys.stderr, flush=True)
    return result


def summarise(rows: list[dict]) -> dict:
    out = {}
    for k in rows[0]:
        values = [r[k] for r in rows]
        out[k] = {"mean": round(float(np.mean(values)), 2), "median": round(float(np.median(values)), 2)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = REPO.parent / "shared" / "data" / "cat-faces"
    ap.add_argument("--faces", type=Path, default=data / "cats_bigger_than_64x64")
    ap.add_argument("--big", type=Path, default=data / "cats_bigger_than_128x128.txt")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--sigma", type=float, default=20.0)
    ap.add_argument("--perceptual", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", choices=("mask", "noise", "downscale"), action="append")
    ap.add_argument("--model64", default="cats-64", help="the 64 px generator: bundled name, file or run")
    ap.add_argument("--encoder64", default="auto", help="its encoder (.safetensors; auto: a bundled one's)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    big = {line.strip().split("/")[-1] for line in args.big.read_text().splitlines() if line.strip()}
    paths = faces_list(args.faces, args.n, big)
    config = ProjectConfig(steps=args.steps, perceptual=args.perceptual)
    config64 = ProjectConfig(steps=args.steps, perceptual=args.perceptual, encoder=args.encoder64)
    out = {"n": len(paths), "steps": args.steps, "sigma": args.sigma, "faces": str(args.faces)}
    only = set(args.only or ("mask", "noise", "downscale"))
    if only & {"mask", "noise"}:
        p64 = Projector(catgan.load(args.model64), config64)
        out["model_64"], out["start_64"] = args.model64, p64.encoder_name or "mean latent"
        faces64 = [load_face(p, 64) for p in paths]
        if "mask" in only:
            out["mask"] = report("mask", run_mask(p64, faces64, np.random.default_rng(0)))
        if "noise" in only:
            out["noise"] = report("noise", run_noise(p64, faces64, np.random.default_rng(1), args.sigma))
    if "downscale" in only:
        p128 = Projector(catgan.load("cats-128"), config)
        out["start_128"] = p128.encoder_name or "mean latent"
        out["downscale"] = report("downscale", run_downscale(p128, [load_face(p, 128) for p in paths]))
    out["perceptual"] = config.perceptual
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
