"""Images on disk: grids, PNG/JPEG files (one per seed, EDM style) and animated GIFs; every write atomic."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from catgan.data.dataset import to_uint8 as dataset_to_uint8
from catgan.errors import CatganError
from catgan.io import atomic_write

IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
GIF_MAX_FRAME_MS = 655_350  # a GIF stores a frame's delay in centiseconds, in 16 bits


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] (N, 3, H, W) float -> uint8 in [0, 255] on the CPU (round to nearest)."""
    return dataset_to_uint8(images.detach()).cpu()


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> torch.Tensor:
    """(N, 3, H, W) uint8 -> one (3, H', W') uint8 image, `nrow` images per row (default ~square),
    `padding` black pixels between and around them (torchvision's layout)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise CatganError(f"make_grid wants images of shape (N, 3, H, W), got {tuple(images.shape)}")
    n, _, h, w = images.shape
    if n == 0:
        raise CatganError("make_grid got no images")
    if padding < 0:
        raise CatganError(f"padding must be >= 0, got {padding}")
    ncol = min(n, nrow if nrow is not None else math.ceil(math.sqrt(n)))
    if ncol < 1:
        raise CatganError(f"nrow must be >= 1, got {nrow}")
    nrows = math.ceil(n / ncol)
    hp, wp = h + padding, w + padding
    grid = torch.zeros(3, nrows * hp + padding, ncol * wp + padding, dtype=images.dtype)
    for k in range(n):
        r, c = divmod(k, ncol)
        grid[:, padding + r * hp : padding + r * hp + h, padding + c * wp : padding + c * wp + w] = images[k]
    return grid


def image_format(path: str | Path) -> str:
    """Pillow's format name for an image path, from its suffix (PNG or JPEG)."""
    fmt = IMAGE_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise CatganError(f"cannot write {Path(path).name}: use a .png or .jpg file name")
    return fmt


def _to_pil(image: torch.Tensor):
    from PIL import Image

    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
        raise CatganError(f"expected a uint8 image (3, H, W), got {image.dtype} {tuple(image.shape)}")
    return Image.fromarray(image.permute(1, 2, 0).contiguous().numpy(), "RGB")


def save_image(image: torch.Tensor, path: str | Path, quality: int = 95) -> Path:
    """Write a uint8 (3, H, W) image as PNG or JPEG (by suffix), atomically (temp file + rename)."""
    fmt = image_format(path)
    pil = _to_pil(image)
    opts = {"quality": quality} if fmt == "JPEG" else {}
    return atomic_write(path, lambda tmp: pil.save(tmp, format=fmt, **opts), "image")


def save_images(images: torch.Tensor, seeds: Sequence[int], out_dir: str | Path) -> list[Path]:
    """One PNG per seed, EDM style: OUT_DIR/seed000012.png."""
    if len(images) != len(seeds):
        raise CatganError(f"{len(images)} images for {len(seeds)} seeds")
    out_dir = Path(out_dir)
    return [save_image(img, out_dir / f"seed{s:06d}.png") for img, s in zip(images, seeds, strict=True)]


MAX_SCALE = 16  # --scale: a 128 px frame at most 2,048 px


def check_scale(factor: int) -> None:
    """Refuse an enlargement factor outside 1..MAX_SCALE (called before any work is done)."""
    if isinstance(factor, bool) or not isinstance(factor, int) or not 1 <= factor <= MAX_SCALE:
        raise CatganError(f"--scale must be a whole number from 1 to {MAX_SCALE}, got {factor!r}")


def upscale(images: torch.Tensor, factor: int) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> (N, 3, factor * H, factor * W): each pixel a factor x factor block (nearest
    neighbour: the model's own pixels, enlarged, nothing invented)."""
    check_scale(factor)
    if factor == 1:
        return images
    return images.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def check_gif_fps(fps: float) -> None:
    """Refuse a frame rate a GIF cannot hold (called before any work is done)."""
    if not fps >= 1000 / GIF_MAX_FRAME_MS:
        raise CatganError(
            f"fps must be >= {1000 / GIF_MAX_FRAME_MS:.4f} (a GIF frame lasts at most "
            f"{GIF_MAX_FRAME_MS / 1000:g} s), got {fps}"
        )


def save_gif(frames: torch.Tensor, path: str | Path, fps: float = 20.0) -> Path:
    """uint8 frames (T, 3, H, W) -> an animated GIF that loops forever, written atomically."""
    if Path(path).suffix.lower() != ".gif":
        raise CatganError(f"cannot write {Path(path).name} as a GIF: use a .gif file name")
    check_gif_fps(fps)
    images = [_to_pil(f) for f in frames]
    duration = max(20, round(1000 / fps))  # ms per frame; browsers slow anything under 20 ms down

    def write(tmp: Path) -> None:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0)

    return atomic_write(path, write, "GIF")


def save_animation(
    frames: torch.Tensor, path: str | Path, fps: float = 20.0, nrow: int | None = None
) -> Path:
    """Interpolation frames to disk by suffix: .gif animates, .png/.jpg lays them out in a grid
    (nrow frames per row; default all in one strip)."""
    if Path(path).suffix.lower() == ".gif":
        return save_gif(frames, path, fps)
    image_format(path)  # a clear error for any other suffix, before the work
    return save_image(make_grid(frames, nrow=nrow or len(frames)), path)
