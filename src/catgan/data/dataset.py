"""Open a prepared dataset (`catgan prepare` output) as one uint8 tensor, and draw batches from it.

Training holds the whole dataset on its device as uint8 (N, 3, H, W) (7k faces at 64 px are 86 MB) and
indexes it with a permutation per epoch: no per-batch file I/O, no DataLoader workers in the hot loop.

    images = load_dataset("data/cats/cats-64", image_size=64)   # (N, 3, 64, 64) uint8
    for idx in batch_indices(len(images), 64, generator):        # (64,) int64 each
        x = to_float(images[idx].to(device))                     # (64, 3, 64, 64) in [-1, 1]
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from catgan.errors import CatganError

IMAGE_EXTS = (".png", ".jpg", ".jpeg")
_DATASET_DIR = re.compile(r"cats-(\d+)")


def resolve(path: str | Path, image_size: int | None = None) -> Path:
    """The dataset folder for `path`: the folder itself, or its one `cats-S` (or `cats-{image_size}`)."""
    path = Path(path)
    if not path.exists():
        raise CatganError(f"dataset {path} does not exist; make one with `catgan prepare`")
    if not path.is_dir():
        raise CatganError(f"dataset {path} is not a folder; give the folder `catgan prepare` wrote")
    if (path / "dataset.json").is_file():
        return path
    if image_size is not None and (path / f"cats-{image_size}" / "dataset.json").is_file():
        return path / f"cats-{image_size}"
    subs = sorted(
        p for p in path.iterdir() if _DATASET_DIR.fullmatch(p.name) and (p / "dataset.json").is_file()
    )
    if len(subs) == 1:
        return subs[0]
    if subs:
        raise CatganError(f"{path} holds several datasets ({', '.join(p.name for p in subs)}); name one")
    raise CatganError(f"{path} holds no dataset.json (not a folder written by `catgan prepare`)")


def image_files(folder: Path) -> list[Path]:
    """The dataset's image files in sorted order, as listed in its dataset.json."""
    try:
        meta = json.loads((folder / "dataset.json").read_text())
        files = sorted(str(rec["file"]) for rec in meta["images"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CatganError(f"{folder / 'dataset.json'} is unreadable: {err}") from None
    return [folder / f for f in files]


def _read(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))  # (H, W, 3)
    except (OSError, ValueError) as err:
        raise CatganError(f"cannot read dataset image {path}: {err}") from None


def load_dataset(path: str | Path, image_size: int | None = None, threads: int = 8) -> torch.Tensor:
    """All images of a prepared dataset as one uint8 tensor (N, 3, H, W), in sorted file order.

    `path` is a `cats-S` folder, or a folder holding exactly one (or `cats-{image_size}`).
    Raises CatganError for a missing path, no images, or images of another size than `image_size`.
    """
    folder = resolve(path, image_size)
    files = image_files(folder)
    if not files:
        raise CatganError(f"dataset {folder} holds no images")
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise CatganError(f"dataset {folder} lists {len(missing)} missing image(s), e.g. {missing[0].name}")
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:  # Pillow decodes without the GIL
        arrays = list(pool.map(_read, files))
    h, w = arrays[0].shape[:2]
    if image_size is not None and (h, w) != (image_size, image_size):
        raise CatganError(
            f"dataset {folder} holds {w}x{h} images, expected {image_size}x{image_size}; "
            f"prepare it with --sizes {image_size}"
        )
    for f, a in zip(files, arrays, strict=True):
        if a.shape[:2] != (h, w):
            raise CatganError(f"dataset image {f} is {a.shape[1]}x{a.shape[0]}, the others are {w}x{h}")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # (N, H, W, 3) -> (N, 3, H, W)


def dataset_fingerprint(path: str | Path) -> str:
    """sha256 over dataset.json and every image's name and bytes: changes when any image changes."""
    folder = resolve(path)
    h = hashlib.sha256()
    h.update((folder / "dataset.json").read_bytes())
    for f in image_files(folder):
        h.update(f.name.encode() + b"\0")
        try:
            h.update(f.read_bytes())
        except OSError as err:
            raise CatganError(f"cannot read dataset image {f}: {err}") from None
    return h.hexdigest()


def epoch_permutation(n: int, generator: torch.Generator) -> torch.Tensor:
    """A shuffled order of 0..n-1 (int64) on the generator's device."""
    return torch.randperm(n, generator=generator, device=generator.device)


def batch_indices(
    n: int, batch_size: int, generator: torch.Generator, drop_last: bool = True
) -> Iterator[torch.Tensor]:
    """One epoch of shuffled index batches, each (batch_size,) int64 (with drop_last=False the last
    may be short; by default the incomplete last batch is dropped)."""
    if batch_size < 1:
        raise CatganError(f"batch size must be >= 1, got {batch_size}")
    perm = epoch_permutation(n, generator)
    stop = n - n % batch_size if drop_last else n
    for i in range(0, stop, batch_size):
        yield perm[i : i + batch_size]


def to_float(batch: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 images in [0, 255] -> floats in [-1, 1], same shape and device."""
    return batch.to(dtype) / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Floats in [-1, 1] (clamped) -> uint8 in [0, 255], same shape and device; inverts to_float."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def random_hflip(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image (B, C, H, W) left-right with probability 1/2 (a face stays a face)."""
    flip = torch.rand(batch.shape[0], generator=generator, device=generator.device) < 0.5
    return torch.where(flip.to(batch.device)[:, None, None, None], batch.flip(-1), batch)
