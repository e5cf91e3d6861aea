"""Restoring a damaged cat photo through the generator: projection with the damage in the loss model,
then the restored face pasted back into the photo.

    mask     MASK.png (the photo's size; white = damaged): the damaged pixels do not count in the loss, and
             only they (feathered) are replaced in the photo
    denoise  the loss compares low-passed images: blur(G(z)) with blur(photo), so the noise, mostly high
             frequencies, is not fitted and G draws the detail
    upscale  the face is found at G's size / factor and the loss compares avg_pool(G(z), factor) with it,
             so a 64 px face is restored with the 128 px generator; the photo is enlarged by `factor`
             (bicubic) and the restored face pasted at that scale

The face-level functions (restore_face) work on aligned faces: the benchmark uses them on held-out faces.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from catgan.errors import CatganError

Mode = Literal["mask", "denoise", "upscale"]
MODES = ("mask", "denoise", "upscale")


@dataclass(frozen=True)
class RestoreConfig:
    mode: Mode
    factor: int = 2  # upscale: G's size / the face's size in the photo
    blur: float = 1.0  # denoise: std (px at G's size) of the Gaussian low-pass in the loss
    feather: float = 0.08  # width of the blended edge, as a share of the face side
    grow: float = 0.03  # mask: the damage is grown by this share of the face side before pasting

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise CatganError(f"restore mode must be one of {MODES}, got {self.mode!r}")
        if self.factor not in (2, 4):
            raise CatganError(f"--factor must be 2 or 4, got {self.factor}")
        for name in ("blur", "feather", "grow"):
            v = getattr(self, name)
            if not (math.isfinite(v) and 0 <= v <= 0.5 * (10 if name == "blur" else 1)):
                raise CatganError(f"{name} out of range, got {v}")


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B, C, H, W) -> the same, blurred by a separable Gaussian of std sigma px (reflect padding)."""
    if sigma <= 0:
        return x
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def degrade_for(config: RestoreConfig) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The differentiable map from G's drawing to what the damaged face shows (None for a mask)."""
    if config.mode == "upscale":
        return lambda x: F.avg_pool2d(x, config.factor)  # (B, 3, S / f, S / f)
    if config.mode == "denoise":
        return lambda x: gaussian_blur(x, config.blur)
    return None


def restore_face(
    projector: Any, face: torch.Tensor, config: RestoreConfig, damaged: torch.Tensor | None = None
) -> dict[str, Any]:
    """One aligned damaged face -> {"face": the restored face uint8 (3, S, S), "drawn": G's drawing,
    "z": (z_dim,)}. The restored face is G's drawing made consistent with the damaged face (consistent).

    face: uint8 (3, s, s), s = G's size (mask, denoise) or G's size / factor (upscale). damaged (mask
    mode): bool (s, s), True where the pixels are damaged. In mask mode the restored face keeps the
    undamaged pixels and takes G's only where damaged (feathered by `grow`)."""
    from catgan.projection.invert import invert
    from catgan.projection.project import to_float, to_uint8

    gen = projector.gen
    size = gen.model.image_size
    want = size // config.factor if config.mode == "upscale" else size
    if face.shape != (3, want, want) or face.dtype != torch.uint8:
        raise CatganError(
            f"restore wants a uint8 face (3, {want}, {want}), got {face.dtype} {tuple(face.shape)}"
        )
    target = to_float(face[None])  # (1, 3, s, s)
    keep = None
    if config.mode == "mask":
        if damaged is None or damaged.shape != (want, want):
            raise CatganError(f"mask mode needs the damaged pixels as a ({want}, {want}) mask")
        if bool(damaged.all()):
            raise CatganError("the mask marks the whole face as damaged: nothing is left to restore from")
        keep = (~damaged).float()[None, None]  # (1, 1, s, s), 1 = counts
    degrade = degrade_for(config)
    if config.mode == "denoise":
        target = gaussian_blur(target, config.blur)
    start = F.interpolate(target, size=size, mode="bilinear", align_corners=False) if want != size else target
    if keep is not None:  # the encoder's guess from a face whose hole is filled with its mean colour
        mean = (start * keep).sum((2, 3), keepdim=True) / keep.sum()
        start = start * keep + mean * (1 - keep)
    z0 = projector.initial_latents(start)
    inv = invert(
        gen.G, gen.model, target, z_init=z0, config=projector.config.invert_config(),
        distance=projector.distance, mask=keep, degrade=degrade, progress=projector.config.progress,
    )  # fmt: skip
    drawn = to_uint8(inv.image)[0]  # (3, S, S)
    restored = consistent(inv.image, to_float(face[None]), config)  # (3, S, S) uint8
    if config.mode == "mask":
        alpha = damage_alpha(damaged, config.grow * size)  # (s, s) in [0, 1]
        restored = (alpha * drawn.float() + (1 - alpha) * face.float()).round().clamp(0, 255).byte()
    return {"face": restored, "drawn": drawn, "z": inv.z[0]}


def consistent(drawn: torch.Tensor, seen: torch.Tensor, config: RestoreConfig) -> torch.Tensor:
    """G's drawing (1, 3, S, S) in [-1, 1] made to agree with what the damaged face shows (1, 3, s, s):
    the observation keeps the low band it measures and G supplies only the rest. upscale: drawn +
    bicubic(seen - avg_pool(drawn)) (iterative back-projection's step: shrunk again, it is the photo);
    denoise: blur(seen) + drawn - blur(drawn). mask: the drawing as it is (restore_face blends it in)."""
    from catgan.projection.project import to_uint8

    drawn = drawn.cpu().float()
    if config.mode == "upscale":
        residual = seen - F.avg_pool2d(drawn, config.factor)  # (1, 3, s, s)
        drawn = drawn + F.interpolate(
            residual, scale_factor=config.factor, mode="bicubic", align_corners=False
        )
    elif config.mode == "denoise":
        drawn = gaussian_blur(seen, config.blur) + drawn - gaussian_blur(drawn, config.blur)
    return to_uint8(drawn.clamp(-1, 1))[0]


def damage_alpha(damaged: torch.Tensor, grow_px: float) -> torch.Tensor:
    """(s, s) blend weights: 1 on the damage, falling to 0 over about grow_px around it."""
    m = damaged.float()[None, None]
    r = max(1, round(grow_px))
    grown = F.max_pool2d(m, 2 * r + 1, stride=1, padding=r)  # dilated by r
    soft = gaussian_blur(grown, r / 2) if m.shape[-1] > 2 * r + 1 else grown
    return torch.maximum(soft, m)[0, 0]


# ----------------------------------------------------------------------------------------------------------
# Photos: align, restore, paste back


def read_mask(path: str | Path, photo_size: tuple[int, int]) -> np.ndarray:
    """MASK.png -> bool (H, W), True where damaged (any channel > 127). One line for a wrong size."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            if im.size != photo_size:
                raise CatganError(
                    f"mask {path.name} is {im.size[0]}x{im.size[1]}, the photo is "
                    f"{photo_size[0]}x{photo_size[1]}: draw the mask on the photo itself (white = damaged)"
                )
            mask = np.asarray(im.convert("L")) > 127
    except FileNotFoundError:
        raise CatganError(f"mask not found: {path}") from None
    except (UnidentifiedImageError, OSError) as err:
        raise CatganError(f"mask {path.name}: not an image Pillow can read ({err})") from None
    if not mask.any():
        raise CatganError(f"mask {path.name} marks nothing as damaged (white = damaged)")
    return mask


def photo_pixels(path: str | Path, exif: bool) -> np.ndarray:
    """The photo as the alignment saw it: (H, W, 3) uint8, EXIF orientation applied when `exif`."""
    from catgan.data.photo import decode
    from catgan.data.sources import BadInput
    from catgan.projection.face import MAX_PIXELS

    try:
        image, _ = decode(Path(path).read_bytes(), MAX_PIXELS, apply_exif=exif)
    except BadInput as err:
        raise CatganError(f"{Path(path).name}: {err.detail}") from None
    return image


def scaled(alignment: Any, factor: int, size: int) -> Any:
    """The alignment of the same face in the photo enlarged `factor` times, at `size` px."""
    from catgan.data.align import FaceBox

    b = alignment.box
    box = FaceBox(
        (b.center[0] * factor, b.center[1] * factor), b.angle, b.x0 * factor, b.y0 * factor, b.side * factor
    )
    w, h = alignment.photo_size
    return type(alignment)(box, size, (w * factor, h * factor), alignment.method, alignment.exif_applied)


def feather_alpha(size: int, feather: float) -> np.ndarray:
    """(size, size) float32: 1 inside the face square, ramping to 0 at its edge over feather * size px."""
    ramp = max(1.0, feather * size)
    t = np.arange(size, dtype=np.float32) + 0.5
    edge = np.minimum(t, size - t) / ramp  # distance to the nearer edge, in ramps
    a = np.clip(np.minimum(edge[:, None], edge[None, :]), 0, 1)
    return a.astype(np.float32)


def paste(photo: np.ndarray, face: np.ndarray, alignment: Any, alpha: np.ndarray) -> np.ndarray:
    """Blend `face` (S, S, 3) uint8 into `photo` (H, W, 3) uint8 where the alignment took it from, with
    per-face-pixel weights `alpha` (S, S) in [0, 1]; the inverse of the alignment, bilinear."""
    import cv2

    h, w = photo.shape[:2]
    A = alignment.matrix().astype(np.float64)  # (2, 3): photo pixel = A (u, v, 1)
    warped = cv2.warpAffine(face, A, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    a = cv2.warpAffine(
        alpha, A, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    a = a[..., None]
    return np.clip(np.rint(a * warped + (1 - a) * photo), 0, 255).astype(np.uint8)


def restore_photo(
    projector: Any, photo: str | Path, config: RestoreConfig, mask: str | Path | None = None, hint: Any = None
) -> dict[str, Any]:
    """A photo -> {"photo": the restored photo (H', W', 3) uint8, "face", "drawn", "damaged": the aligned
    damaged face (3, s, s), "z", "alignment", "notes"}. Raises CatganError (one line) for bad input."""
    from catgan.data import align
    from catgan.projection.face import find_face

    size = projector.gen.model.image_size
    small = size // config.factor if config.mode == "upscale" else size
    found = find_face(photo, small, hint)
    alignment = found.alignment
    pixels = photo_pixels(photo, alignment.exif_applied)  # (H, W, 3): the photo the box refers to
    face = torch.from_numpy(found.face.copy()).permute(2, 0, 1)  # (3, s, s)
    damaged = None
    notes = list(found.notes)
    if config.mode == "mask":
        if mask is None:
            raise CatganError("--mask MASK.png is needed (white = damaged)")
        full = read_mask(mask, alignment.photo_size)  # (H, W) bool
        rgb = np.repeat(full[..., None].astype(np.uint8) * 255, 3, axis=2)  # (H, W, 3)
        m, _ = align.sample(rgb, alignment.box, small)  # (s, s, 3), bilinear
        damaged = torch.from_numpy(m[..., 0] > 127)
        if not damaged.any():
            raise CatganError("the mask marks nothing inside the cat's face: nothing to restore there")
        outside = full.sum() - _inside(full, alignment)
        if outside > 0:
            notes.append(f"{int(outside)} damaged pixels lie outside the face and are left as they were")
    out = restore_face(projector, face, config, damaged)
    restored = out["face"].permute(1, 2, 0).contiguous().numpy()  # (S, S, 3)
    if config.mode == "upscale":
        import cv2

        h, w = pixels.shape[:2]
        pixels = cv2.resize(pixels, (w * config.factor, h * config.factor), interpolation=cv2.INTER_CUBIC)
        alignment = scaled(alignment, config.factor, size)
    alpha = feather_alpha(size, config.feather)
    if config.mode == "mask":  # only the damage (the face already keeps the rest): no square edge shows
        alpha = damage_alpha(damaged, config.grow * size).numpy().astype(np.float32)
    result = paste(pixels, restored, alignment, alpha)
    return {**out, "photo": result, "damaged": face, "alignment": alignment, "notes": notes}


def _inside(mask: np.ndarray, alignment: Any) -> int:
    """How many True pixels of a photo-sized mask fall inside the face square."""
    ys, xs = np.nonzero(mask)
    uv = alignment.from_photo(np.stack([xs, ys], axis=1).astype(np.float64))
    s = alignment.size
    return int(((uv >= -0.5) & (uv < s - 0.5)).all(axis=1).sum())
