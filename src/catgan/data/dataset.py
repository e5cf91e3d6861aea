"""Open a prepared dataset (`catgan prepare` output) as one uint8 tensor, and draw batches from it.

Training holds the whole dataset on its device as uint8 (N, 3, H, W) (7k faces at 64 px are 86 MB) and
indexes it with a permutation per epoch: no per-batch file I/O, no DataLoader workers in the hot loop.

    images = load_dataset("data/faces/cats-64", image_size=64)  # (N, 3, 64, 64) uint8
    perm = epoch_permutation(len(images), generator)            # (N,) int64
    x = to_float(images[perm[:64]].to(device))                  # (64, 3, 64, 64) in [-1, 1]

A held-out folder (`cats-S-holdout`, from `prepare --holdout`) loads the same way, named explicitly.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from catgan.errors import CatganError

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


def _meta(folder: Path) -> dict:
    try:
        meta = json.loads((folder / "dataset.json").read_text())
        if not isinstance(meta, dict) or not isinstance(meta["images"], list):
            raise TypeError("no list of images")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CatganError(f"{folder / 'dataset.json'} is unreadable: {err}") from None
    return meta


def image_files(folder: Path) -> list[Path]:
    """The dataset's image files in sorted order, as listed in its dataset.json."""
    try:
        files = sorted(str(rec["file"]) for rec in _meta(folder)["images"])
    except (KeyError, TypeError) as err:
        raise CatganError(f"{folder / 'dataset.json'} is unreadable: {err}") from None
    return [folder / f for f in files]


def _read(path: Path, size: tuple[int, int] | None) -> np.ndarray:
    """One image (H, W, 3) uint8. Its header is checked against `size` before any pixel is decoded, so
    a decompression bomb (or any wrong-sized file) costs nothing and fails in one line."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if size is not None and im.size != size:
                    raise CatganError(
                        f"dataset image {path} is {im.size[0]}x{im.size[1]}, the dataset's images are "
                        f"{size[0]}x{size[1]}; prepare the dataset again"
                    )
                return np.asarray(im.convert("RGB"))  # (H, W, 3)
    except (
        OSError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as err:
        raise CatganError(f"cannot read dataset image {path}: {err}") from None


def _empty(folder: Path, meta: dict) -> CatganError:
    held = meta.get("holdout") if isinstance(meta.get("holdout"), dict) else None
    if held and held.get("side") == "holdout":
        return CatganError(
            f"held-out dataset {folder} holds no images: --holdout {held.get('fraction')} caught no photo; "
            "prepare again with a larger --holdout or more photos"
        )
    return CatganError(f"dataset {folder} holds no images")


def load_dataset(path: str | Path, image_size: int | None = None, threads: int = 8) -> torch.Tensor:
    """All images of a prepared dataset as one uint8 tensor (N, 3, H, W), in sorted file order.

    `path` is a `cats-S` (or `cats-S-holdout`) folder, or a folder holding exactly one `cats-S` (or
    `cats-{image_size}`). Raises CatganError for a missing path, no images, an unreadable or oversized
    image, or images of another size than `image_size`.
    """
    folder = resolve(path, image_size)
    meta = _meta(folder)
    files = image_files(folder)
    if not files:
        raise _empty(folder, meta)
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise CatganError(f"dataset {folder} lists {len(missing)} missing image(s), e.g. {missing[0].name}")
    stated = meta.get("image_size")
    if isinstance(stated, int) and image_size is not None and stated != image_size:
        raise CatganError(
            f"dataset {folder} holds {stated}x{stated} images, expected {image_size}x{image_size}; "
            f"prepare it with --sizes {image_size}"
        )
    if isinstance(stated, int) and stated > 0:
        size: tuple[int, int] | None = (stated, stated)
    else:  # an older or hand-made dataset.json: the first image decides (read lazily, header only)
        size = _read(files[0], None).shape[1::-1] if image_size is None else (image_size, image_size)
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:  # Pillow decodes without the GIL
        arrays = list(pool.map(lambda f: _read(f, size), files))
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


def to_float(batch: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 images in [0, 255] -> floats in [-1, 1], same shape and device."""
    return batch.to(dtype) / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Floats in [-1, 1] (clamped) -> uint8 in [0, 255], same shape and device; inverts to_float."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
