"""One photo -> one aligned square face at every output size (runs in `catgan prepare`'s workers).

EXIF orientation: landmark photos are used as stored, because the `.cat` coordinates were annotated on
the stored pixels (and the alignment levels the eyes whatever the orientation); face crops have their
EXIF orientation applied, so they come out the way a viewer shows them.

Memory per photo is bounded: the file by sources.read_bytes' limit, the decoded image by `max_pixels`,
and the face square by MAX_SAMPLE_SIDE.
"""

from __future__ import annotations

import errno
import hashlib
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from catgan.data import align
from catgan.data.annotations import AnnotationError, parse_cat, validate
from catgan.data.sources import BadInput, Drop, Item, read_bytes

# A face square is resampled at its own scale up to this side (or the largest output size), then resized:
# 50 MB of uint8 at most (align.sample works in blocks); a real CAT face is rarely above 600 px.
MAX_SAMPLE_SIDE = 4096
Square = Literal["auto", "crop", "pad"]


def decode(data: bytes, max_pixels: int, apply_exif: bool) -> tuple[np.ndarray, list[str]]:
    """Bytes -> (H, W, 3) uint8 RGB and notes on what was converted. Raises BadInput."""
    if not data:
        raise BadInput("empty", "empty file (0 bytes)")
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise BadInput("bomb", f"decompression bomb: {err}") from None
    except UnidentifiedImageError:
        raise BadInput("not an image", "not an image file Pillow can read") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise BadInput("corrupt", f"corrupt image header: {err}") from None
    w, h = im.size
    if w * h > max_pixels:
        raise BadInput("bomb", f"decompression bomb: {w}x{h} pixels is over the {max_pixels} limit")
    try:
        im.load()
    except (OSError, ValueError, SyntaxError) as err:  # truncated or damaged data
        raise BadInput("corrupt", f"truncated or damaged image: {err}") from None
    if w < 1 or h < 1:
        raise BadInput("corrupt", f"image of size {w}x{h}")
    orientation = im.getexif().get(0x0112, 1)
    if orientation not in (None, 1):
        if apply_exif:
            im = ImageOps.exif_transpose(im)
            notes.append(f"EXIF orientation {orientation} applied")
        else:
            notes.append(f"EXIF orientation {orientation} ignored (landmarks are on the stored pixels)")
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        a = np.asarray(im).astype(np.float32)  # exact to 2^24; half the memory of float64
        if mode == "I" and a.max(initial=0) <= 255:
            a8 = a
        else:
            a8 = a / 257.0  # 0..65535 -> 0..255
            notes.append(f"{mode} 16-bit scaled to 8-bit")
        im = Image.fromarray(np.clip(np.rint(a8), 0, 255).astype(np.uint8), "L")
    elif mode == "F":
        raise BadInput("unsupported", "unsupported pixel mode F (floating point)")
    if im.mode != "RGB":
        notes.append(f"converted from {mode}")
        try:
            im = im.convert("RGBA").convert("RGB") if "transparency" in im.info else im.convert("RGB")
        except (OSError, ValueError) as err:
            raise BadInput("unsupported", f"cannot convert pixel mode {mode} to RGB: {err}") from None
    return np.asarray(im), notes


@dataclass(frozen=True)
class Job:
    item: Item
    sizes: tuple[int, ...]
    image_format: str
    quality: int
    square: Square
    max_pixels: int
    max_bytes: int
    dirs: tuple[str, ...]  # one temporary output folder per size (the held-out ones for a held-out photo)


@dataclass
class Outcome:
    """What one photo produced: a record (if it made a face) with the sizes it was kept at, or a drop;
    `fatal` when the output could not be written (disk full), which stops the run."""

    item: Item
    record: dict | None = None
    kept: dict[int, list | None] = field(default_factory=dict)  # size -> landmarks in that size's pixels
    too_small: float | None = None  # the face side in pixels, for sizes it missed
    drop: Drop | None = None
    digest: str = ""  # sha256 of the photo and its annotation: identical inputs are kept once
    fatal: str | None = None


def _face(job: Job) -> tuple[np.ndarray, dict, float, align.FaceBox, np.ndarray | None, str]:
    """(square face (n, n, 3) uint8, record, side for the size gate, its box, photo landmarks or None,
    content digest)."""
    item = job.item
    data = read_bytes(item.photo, job.max_bytes)
    digest = hashlib.sha256(data)
    if item.kind == "landmarks":
        assert item.cat is not None
        text = read_bytes(item.cat, job.max_bytes)
        digest.update(b"\0" + text)
        try:
            lm = parse_cat(text)
        except AnnotationError as err:
            raise BadInput("bad annotation", str(err)) from None
        image, notes = decode(data, job.max_pixels, apply_exif=False)
        h, w = image.shape[:2]
        try:
            validate(lm, w, h)
            box = align.face_box(lm)
        except AnnotationError as err:
            raise BadInput("bad annotation", str(err)) from None
        try:
            align.check_geometry(lm)
        except AnnotationError as err:
            raise BadInput("implausible", str(err)) from None
        if job.square == "crop":
            box = align.clip_to_photo(box, w, h)
        gate, points = box.side, lm.points
    else:
        image, notes = decode(data, job.max_pixels, apply_exif=True)
        h, w = image.shape[:2]
        box = align.square_box(w, h, "pad" if job.square == "pad" else "crop")
        gate, points = float(min(w, h)), None  # real content, not padding, decides the size gate
    if box.side < 1:
        raise BadInput("bad annotation", "the face square lies outside the photo")
    n = min(max(1, round(box.side)), max(MAX_SAMPLE_SIDE, *job.sizes))  # bounded, whatever the annotation
    face, fill = align.sample(image, box, n)
    record = {
        "source": item.rel,
        "kind": item.kind,
        "original_size": [w, h],
        "crop": box.as_json(),
        "fill": round(fill, 4),
    }
    if notes:
        record["notes"] = notes
    return face, record, gate, box, points, digest.hexdigest()


def process(job: Job) -> Outcome:
    """Align one photo and write it at every size it is large enough for. Never raises for bad input."""
    out = Outcome(job.item)
    try:
        face, record, gate, box, points, out.digest = _face(job)
    except BadInput as err:
        out.drop = Drop(job.item.rel, err.reason, err.detail)
        return out
    except Exception as err:  # a photo must never stop the run; say what happened instead
        out.drop = Drop(job.item.rel, "error", f"{type(err).__name__}: {err}".splitlines()[0])
        return out
    out.record, out.too_small = record, gate
    pil = Image.fromarray(face)
    for size, folder in zip(job.sizes, job.dirs, strict=True):
        if gate < size:
            continue
        small = pil if pil.size == (size, size) else pil.resize((size, size), Image.LANCZOS)
        path = Path(folder) / f"{job.item.name}.{job.image_format}"
        try:
            if job.image_format == "png":
                small.save(path, "PNG")
            else:
                small.save(path, "JPEG", quality=job.quality, subsampling=0)
        except OSError as err:  # disk full, read-only: the run stops, one line says why
            out.fatal = write_error(path, err)
            return out
        lm = None
        if points is not None:
            lm = np.round(align.to_box(points, box, size), 2).tolist()
        out.kept[size] = lm
    return out


def write_error(path: Path, err: OSError) -> str:
    why = "the disk is full" if err.errno == errno.ENOSPC else (err.strerror or str(err))
    return f"cannot write {path}: {why}; nothing was kept (free some space or choose another --out)"
