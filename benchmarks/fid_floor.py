"""The FID/KID floor of real cat faces: half against half of one dataset, and against uniform noise.

Also precision/recall of the halves and the cat-face rate of real faces and of noise.

    python benchmarks/fid_floor.py --data data/faces/cats-64 --n 1000            # a prepared dataset
    python benchmarks/fid_floor.py --faces ../shared/data/cat-faces/cats_bigger_than_64x64 --n 1000
      (--faces: a folder of face crops, centre-cropped and resized to --size with Lanczos here)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from catgan.metrics.catface import CatFaceDetector
from catgan.metrics.fid import fid_from_features, kid
from catgan.metrics.inception import InceptionExtractor
from catgan.metrics.prdc import precision_recall


def load_face_folder(folder: Path, size: int) -> torch.Tensor:
    """Every JPEG/PNG in `folder`, centre-cropped square and resized -> uint8 (N, 3, size, size)."""
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png"))
    out = np.empty((len(files), 3, size, size), np.uint8)
    for i, file in enumerate(files):
        with Image.open(file) as im:
            im = im.convert("RGB")
            w, h = im.size
            s = min(w, h)
            box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
            out[i] = np.asarray(im.crop(box).resize((size, size), Image.LANCZOS)).transpose(2, 0, 1)
    return torch.from_numpy(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, help="a prepared dataset (catgan.data.dataset.load_dataset)")
    src.add_argument("--faces", type=Path, help="a folder of face crops")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--n", type=int, default=1000, help="images per half (at most)")
    p.add_argument("--n-noise", type=int, default=200)
    p.add_argument(
        "--budget", type=float, default=0, help="stop extracting after this many seconds (0 = none)"
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="write the numbers as JSON here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    if args.data is not None:
        from catgan.data.dataset import load_dataset

        images = load_dataset(args.data, image_size=args.size)
    else:
        images = load_face_folder(args.faces, args.size)
    if 2 * args.n > len(images):
        raise SystemExit(f"--n {args.n}: only {len(images)} images, so at most --n {len(images) // 2}")
    order = torch.from_numpy(np.random.default_rng(args.seed).permutation(len(images)))
    a, b = images[order[: args.n]], images[order[args.n : 2 * args.n]]
    gen = torch.Generator().manual_seed(args.seed)
    noise = torch.randint(0, 256, (args.n_noise, 3, args.size, args.size), dtype=torch.uint8, generator=gen)

    extractor = InceptionExtractor.load(args.device, batch=args.batch)
    t = time.perf_counter()
    fn = extractor.features(noise)
    fa, fb = [], []
    # Alternate the halves batch by batch, so a time budget still leaves two equal halves.
    for i in range(0, args.n, args.batch):
        fa.append(extractor.features(a[i : i + args.batch]))
        fb.append(extractor.features(b[i : i + args.batch]))
        done = sum(map(len, fa))
        print(f"{2 * done} / {2 * args.n} images, {time.perf_counter() - t:.0f} s", flush=True)
        if args.budget and time.perf_counter() - start > args.budget:
            break
    fa, fb = np.concatenate(fa), np.concatenate(fb)
    n = len(fa)
    feat_seconds = time.perf_counter() - t
    detector = CatFaceDetector.load()
    result = {
        "source": str(args.data or args.faces),
        "size": args.size,
        "n_per_half": n,
        "n_noise": args.n_noise,
        "fid_half_vs_half": fid_from_features(fa, fb),
        "kid_half_vs_half": kid(fa, fb, subsets=100, subset_size=1000),
        "precision_recall_half_vs_half": precision_recall(fa, fb, k=3),
        "fid_real_vs_noise": fid_from_features(fa, fn),
        "kid_real_vs_noise": kid(fa, fn, subsets=100, subset_size=1000),
        "catface_rate_real": detector.rate(images),
        "n_catface_real": len(images),
        "catface_rate_noise": detector.rate(noise),
        "inception_img_per_s": (2 * n + args.n_noise) / feat_seconds,
        "threads": torch.get_num_threads(),
        "extractor": extractor.name,
        "resize": extractor.resize,
        "seconds": time.perf_counter() - start,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
