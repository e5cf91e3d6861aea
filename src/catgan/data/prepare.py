"""`catgan prepare`: turn cat photos into training-ready datasets, one folder per resolution.

Sources: the Kaggle CAT archive (read straight from the zip), a folder holding CAT_00..CAT_06, one such
folder, or a folder of face crops. Folders are classified one by one: a folder with `.cat` files (or
named CAT_NN) holds landmark photos, any other folder face crops.

Output, for each size S: `OUT/cats-S/` with one image per kept face (`<photo name>.png`, sorted) and
`dataset.json`, plus `OUT/contact-S.png`. Each `cats-S` is written as `OUT/.cats-S.partial-<pid>` and
renamed when complete, so a crash or kill never leaves a partial `cats-S`; a rerun skips sizes that are
already finished with the same recipe and refuses ones made with another.

EXIF orientation: landmark photos are used as stored, because the `.cat` coordinates were annotated on
the stored pixels (and the alignment levels the eyes whatever the orientation); face crops have their
EXIF orientation applied, so they come out the way a viewer shows them.
"""

from __future__ import annotations

import functools
import io
import json
import math
import multiprocessing
import os
import random
import re
import shutil
import time
import warnings
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from catgan import __version__
from catgan.data import align
from catgan.data.annotations import KNOWN_BAD, AnnotationError, load_outliers, parse_cat, photo_key, validate
from catgan.errors import CatganError
from catgan.runtime import cpu_count

FORMAT_VERSION = 1
IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})
CAT_DIR = re.compile(r"CAT_\d+")
PARTIAL = re.compile(r"\.cats-(\d+)\.partial-(\d+)")
Square = Literal["auto", "crop", "pad"]

Locator = tuple[str, str | None]  # (file path, member inside that zip or None)


@dataclass(frozen=True)
class PrepareConfig:
    """Everything `catgan prepare` does. `workers=0` means all cores; `square="auto"` pads landmark
    faces to the full reference square and centre-crops face-folder images."""

    sources: tuple[Path, ...]
    out: Path
    sizes: tuple[int, ...] = (64, 128)
    image_format: Literal["png", "jpg"] = "png"
    quality: int = 95  # JPEG quality (only for image_format="jpg")
    workers: int = 0
    outliers: bool = True  # drop the original system's 134 outliers by name
    square: Square = "auto"
    max_pixels: int = Image.MAX_IMAGE_PIXELS or 89_478_485  # larger images are decompression bombs
    contact: int = 64  # faces on the contact sheet
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.sources:
            raise CatganError("give at least one SOURCE (a CAT zip, CAT_0x folder(s) or a folder of faces)")
        if not self.sizes or any(s < 4 or s > 4096 for s in self.sizes):
            raise CatganError(f"sizes must be whole numbers in 4..4096, got {list(self.sizes)}")
        if len(set(self.sizes)) != len(self.sizes):
            raise CatganError(f"sizes are repeated: {list(self.sizes)}")
        if self.image_format not in ("png", "jpg"):
            raise CatganError(f"format must be png or jpg, got {self.image_format!r}")
        if not 1 <= self.quality <= 100:
            raise CatganError(f"quality must be in 1..100, got {self.quality}")
        if self.square not in ("auto", "crop", "pad"):
            raise CatganError(f"square must be auto, crop or pad, got {self.square!r}")
        if self.workers < 0:
            raise CatganError(f"workers must be >= 0 (0 = all cores), got {self.workers}")

    def recipe(self) -> dict:
        """What decides the content of a `cats-S` folder (not sizes, workers or progress)."""
        return {
            "sources": [str(Path(s).resolve()) for s in self.sources],
            "format": self.image_format,
            "quality": self.quality if self.image_format == "jpg" else None,
            "outliers": self.outliers,
            "square": self.square,
        }


# ---- finding the inputs ------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One photo to process. name: output stem; rel: path inside its source (posix)."""

    name: str
    rel: str
    kind: Literal["landmarks", "face"]
    photo: Locator
    cat: Locator | None = None


@dataclass(frozen=True)
class Drop:
    """An input that produced no face: its path inside the source, a reason code and a one-line detail."""

    source: str
    reason: str
    detail: str

    def as_json(self) -> dict:
        return {"source": self.source, "reason": self.reason, "detail": self.detail}


def _list_source(path: Path) -> list[tuple[str, Locator]]:
    """All files under a folder or inside a zip: (posix path relative to the source, locator), sorted."""
    if not path.exists():
        raise CatganError(f"source {path} does not exist")
    files: list[tuple[str, Locator]] = []
    if path.is_dir():
        for root, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for n in names:
                if not n.startswith("."):
                    full = Path(root) / n
                    files.append((full.relative_to(path).as_posix(), (str(full), None)))
    elif zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                for info in z.infolist():
                    parts = info.filename.split("/")
                    if info.is_dir() or any(p.startswith(".") or p == "__MACOSX" for p in parts):
                        continue
                    files.append((info.filename, (str(path), info.filename)))
        except (OSError, zipfile.BadZipFile) as err:
            raise CatganError(f"source {path} is not a readable zip: {err}") from None
    else:
        raise CatganError(f"source {path} is neither a folder nor a zip archive")
    return sorted(files)


def _is_image(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTS


def _stem(rel: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", photo_key(rel))


def scan(sources: Iterable[Path], outliers: frozenset[str]) -> tuple[list[Item], list[Drop]]:
    """Pair photos with their `.cat` files and apply the name-based rules (duplicates, outliers, known bad).

    Raises CatganError for a source that does not exist or holds no images.
    """
    items: list[Item] = []
    drops: list[Drop] = []
    seen: dict[str, str] = {}  # output stem -> the input that claimed it first
    for source in sources:
        files = _list_source(Path(source))
        by_dir: dict[str, list[tuple[str, Locator]]] = {}
        for rel, loc in files:
            by_dir.setdefault(rel.rpartition("/")[0], []).append((rel, loc))
        n_images = 0
        for folder, entries in by_dir.items():
            names = {rel.rpartition("/")[2]: (rel, loc) for rel, loc in entries}
            landmark_dir = any(n.endswith(".cat") for n in names) or bool(
                CAT_DIR.fullmatch(folder.rpartition("/")[2] or Path(source).name)
            )
            for n, (rel, loc) in names.items():
                if landmark_dir and n.endswith(".cat"):
                    if n[: -len(".cat")] not in names:
                        drops.append(Drop(rel, "no photo", "annotation without its photo"))
                    continue
                if not _is_image(n):
                    continue
                n_images += 1
                stem = _stem(rel)
                if stem in seen:
                    drops.append(Drop(rel, "duplicate", f"same name as {seen[stem]}"))
                    continue
                seen[stem] = rel
                if stem in outliers:
                    drops.append(Drop(rel, "outlier", "listed in the original system's outliers"))
                    continue
                if not landmark_dir:
                    items.append(Item(stem, rel, "face", loc))
                    continue
                cat = names.get(n + ".cat")
                if n + ".cat" in KNOWN_BAD:
                    drops.append(Drop(rel, "known bad", f"{n}.cat is wrong in the original data"))
                elif cat is None:
                    drops.append(Drop(rel, "no annotation", f"photo without {n}.cat"))
                else:
                    items.append(Item(stem, rel, "landmarks", loc, cat[1]))
        if n_images == 0:
            raise CatganError(f"source {source} holds no images ({', '.join(sorted(IMAGE_EXTS))})")
    return items, drops


# ---- processing one photo (runs in the worker processes) ---------------------------------------


class BadInput(Exception):
    """An input to skip: reason code and one-line detail."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


@functools.lru_cache(maxsize=4)
def _zip(path: str) -> zipfile.ZipFile:
    """One open handle per archive and process (the central directory is read once)."""
    return zipfile.ZipFile(path)


def read_bytes(loc: Locator) -> bytes:
    path, member = loc
    try:
        if member is None:
            return Path(path).read_bytes()
        return _zip(path).read(member)
    except (OSError, zipfile.BadZipFile, KeyError) as err:
        raise BadInput("unreadable", f"cannot read the file: {err}") from None


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
        a = np.asarray(im).astype(np.float64)
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
    dirs: tuple[str, ...]  # one temporary output folder per size


@dataclass
class Outcome:
    """What one photo produced: a record (if it made a face) with the sizes it was kept at, or a drop."""

    item: Item
    record: dict | None = None
    kept: dict[int, list | None] = field(default_factory=dict)  # size -> landmarks in that size's pixels
    too_small: float | None = None  # the face side in pixels, for sizes it missed
    drop: Drop | None = None


def _face(job: Job) -> tuple[np.ndarray, dict, float, align.FaceBox, np.ndarray | None]:
    """(square face (n, n, 3) uint8, record, side for the size gate, its box, photo landmarks or None)."""
    item = job.item
    if item.kind == "landmarks":
        assert item.cat is not None
        try:
            lm = parse_cat(read_bytes(item.cat))
        except AnnotationError as err:
            raise BadInput("bad annotation", str(err)) from None
        image, notes = decode(read_bytes(item.photo), job.max_pixels, apply_exif=False)
        h, w = image.shape[:2]
        try:
            validate(lm, w, h)
            box = align.face_box(lm)
        except AnnotationError as err:
            raise BadInput("bad annotation", str(err)) from None
        if job.square == "crop":
            box = align.clip_to_photo(box, w, h)
        gate, points = box.side, lm.points
    else:
        image, notes = decode(read_bytes(item.photo), job.max_pixels, apply_exif=True)
        h, w = image.shape[:2]
        box = align.square_box(w, h, "pad" if job.square == "pad" else "crop")
        gate, points = float(min(w, h)), None  # real content, not padding, decides the size gate
    if box.side < 1:
        raise BadInput("bad annotation", "the face square lies outside the photo")
    face, fill = align.sample(image, box, max(1, round(box.side)))
    record = {
        "source": item.rel,
        "kind": item.kind,
        "original_size": [w, h],
        "crop": box.as_json(),
        "fill": round(fill, 4),
    }
    if notes:
        record["notes"] = notes
    return face, record, gate, box, points


def process(job: Job) -> Outcome:
    """Align one photo and write it at every size it is large enough for. Never raises for bad input."""
    out = Outcome(job.item)
    try:
        face, record, gate, box, points = _face(job)
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
        if job.image_format == "png":
            small.save(path, "PNG")
        else:
            small.save(path, "JPEG", quality=job.quality, subsampling=0)
        lm = None
        if points is not None:
            lm = np.round(align.to_box(points, box, size), 2).tolist()
        out.kept[size] = lm
    return out


# ---- the run ------------------------------------------------------------------------------------


@dataclass
class PrepareReport:
    out: Path
    read: int = 0  # photos found (and annotations without a photo)
    kinds: Counter = field(default_factory=Counter)  # landmarks / face photos processed
    kept: dict[int, int] = field(default_factory=dict)
    too_small: dict[int, int] = field(default_factory=dict)
    dropped: Counter = field(default_factory=Counter)  # reason -> count
    examples: dict[str, str] = field(default_factory=dict)  # reason -> first "source: detail"
    notes: Counter = field(default_factory=Counter)
    skipped: list[int] = field(default_factory=list)  # sizes already prepared with the same recipe
    seconds: float = 0.0
    workers: int = 1

    def format(self) -> str:
        lines = []
        for s in self.skipped:
            lines.append(f"{self.out / f'cats-{s}'}: already prepared with the same recipe, skipped")
        if not self.kept:
            return "\n".join(lines)
        rate = sum(self.kinds.values()) / max(self.seconds, 1e-9)
        lines.append(
            f"read {self.read} inputs ({self.kinds['landmarks']} landmark photos, {self.kinds['face']} face "
            f"crops processed) in {self.seconds:.1f} s, {rate:.1f} photos/s with {self.workers} worker(s)"
        )
        for s, n in sorted(self.kept.items()):
            lines.append(
                f"  kept {n:6d} at {s}px -> {self.out / f'cats-{s}'}  ({self.too_small.get(s, 0)} too small)"
            )
        if self.dropped:
            lines.append(f"  dropped {sum(self.dropped.values())} inputs:")
            for reason, n in self.dropped.most_common():
                lines.append(f"    {reason:<15} {n:6d}   e.g. {self.examples[reason]}")
        for note, n in self.notes.most_common():
            lines.append(f"  note: {n} photo(s) {note}")
        return "\n".join(lines)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale(out: Path) -> None:
    """Remove partial folders left by runs that were killed (their process no longer exists)."""
    for p in out.iterdir():
        m = PARTIAL.fullmatch(p.name)
        if m and p.is_dir() and (int(m.group(2)) == os.getpid() or not _pid_alive(int(m.group(2)))):
            shutil.rmtree(p, ignore_errors=True)


def _check_existing(folder: Path, recipe: dict) -> bool:
    """True when `folder` is a finished dataset with this recipe; refuses one made with another."""
    if not folder.exists():
        return False
    try:
        meta = json.loads((folder / "dataset.json").read_text())
    except (OSError, ValueError):
        raise CatganError(
            f"{folder} exists but is not a finished catgan dataset (no readable dataset.json); "
            "remove it or choose another --out"
        ) from None
    if meta.get("recipe") != recipe:
        raise CatganError(
            f"{folder} was prepared from other sources or options ({meta.get('recipe')}); "
            "remove it or choose another --out"
        )
    return True


def _run_jobs(jobs: list[Job], workers: int, progress: bool) -> Iterator[Outcome]:
    """Process jobs inline (1 worker) or in a process pool, with a bounded number in flight."""
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), unit="photo", desc="prepare", disable=not progress, dynamic_ncols=True)
    try:
        if workers <= 1:
            for job in jobs:
                yield process(job)
                bar.update()
            return
        ctx = multiprocessing.get_context("spawn")  # no fork of a parent that may hold torch threads
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            todo = iter(jobs)
            pending = {pool.submit(process, j) for j in _take(todo, 4 * workers)}
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for f in done:
                        yield f.result()
                        bar.update()
                    pending |= {pool.submit(process, j) for j in _take(todo, len(done))}
            except BaseException:
                for f in pending:
                    f.cancel()
                raise
    finally:
        bar.close()


def _take(it: Iterator[Job], n: int) -> list[Job]:
    return [j for _, j in zip(range(n), it, strict=False)]


def write_contact_sheet(folder: Path, files: list[str], dest: Path, count: int, seed: int = 0) -> None:
    """A grid of up to `count` random faces from `folder` (8 per row), written atomically to `dest`."""
    if not files:
        return
    chosen = sorted(random.Random(seed).sample(files, min(count, len(files))))
    tiles = []
    for f in chosen:
        with Image.open(folder / f) as im:  # closed at once: up to `count` files would stay open
            tiles.append(im.convert("RGB"))
    size, cols, gap = tiles[0].width, min(8, len(tiles)), 2
    rows = math.ceil(len(tiles) / cols)
    sheet = Image.new("RGB", (cols * (size + gap) + gap, rows * (size + gap) + gap), (40, 40, 40))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, (gap + (i % cols) * (size + gap), gap + (i // cols) * (size + gap)))
    tmp = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    sheet.save(tmp, "PNG")
    os.replace(tmp, dest)


def prepare(config: PrepareConfig) -> PrepareReport:
    """Run `catgan prepare`. Raises CatganError for bad sources or a conflicting existing output."""
    start = time.perf_counter()
    for source in config.sources:
        if not Path(source).exists():
            raise CatganError(f"source {source} does not exist")
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise CatganError(f"--out {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CatganError(f"cannot create --out {out}: {err.strerror or err}") from None
    recipe = config.recipe()
    report = PrepareReport(out)
    sizes = []
    for s in config.sizes:
        (report.skipped if _check_existing(out / f"cats-{s}", recipe) else sizes).append(s)
    _clean_stale(out)
    if not sizes:
        return report

    items, drops = scan(config.sources, load_outliers() if config.outliers else frozenset())
    workers = config.workers or cpu_count()
    report.workers = min(workers, max(1, len(items)))
    report.kinds.update(it.kind for it in items)
    partial = {s: out / f".cats-{s}.partial-{os.getpid()}" for s in sizes}
    try:
        for p in partial.values():
            p.mkdir()
        jobs = [
            Job(
                it,
                tuple(sizes),
                config.image_format,
                config.quality,
                config.square,
                config.max_pixels,
                tuple(str(p) for p in partial.values()),
            )
            for it in items
        ]
        records: dict[int, list[dict]] = {s: [] for s in sizes}  # size -> image records
        too_small: dict[int, list[Drop]] = {s: [] for s in sizes}
        for o in _run_jobs(jobs, report.workers, config.progress):
            if o.drop is not None:
                drops.append(o.drop)
                continue
            assert o.record is not None
            for note in o.record.get("notes", []):
                report.notes[note.split(" (")[0]] += 1
            for s in sizes:
                if s in o.kept:
                    lm = o.kept[s]
                    rec = {"file": f"{o.item.name}.{config.image_format}", **o.record}
                    records[s].append(rec | ({"landmarks": lm} if lm is not None else {}))
                else:
                    detail = f"face is {o.too_small:.0f} px, smaller than {s}"
                    too_small[s].append(Drop(o.item.rel, "too small", detail))

        drops.sort(key=lambda d: d.source)
        report.read = len(items) + sum(1 for d in drops if d.reason in _SCAN_REASONS)
        for d in drops:
            report.dropped[d.reason] += 1
            report.examples.setdefault(d.reason, f"{d.source}: {d.detail}")
        for s in sizes:
            recs = records[s] = sorted(records[s], key=lambda r: r["file"])
            meta = {
                "format": "catgan-dataset",
                "version": FORMAT_VERSION,
                "created_by": f"catgan {__version__}",
                "image_size": s,
                "image_format": config.image_format,
                "recipe": recipe,
                "coordinates": "landmarks are pixel indices in the stored image (pixel centres at i)",
                "counts": {
                    "images": len(recs),
                    "too_small": len(too_small[s]),
                    "dropped": dict(sorted(Counter(d.reason for d in drops).items())),
                },
                "images": recs,
                "dropped": [d.as_json() for d in sorted(drops + too_small[s], key=lambda d: d.source)],
            }
            (partial[s] / "dataset.json").write_text(json.dumps(meta, indent=1) + "\n")
            report.kept[s] = len(recs)
            report.too_small[s] = len(too_small[s])
        for s in sizes:
            final = out / f"cats-{s}"
            if final.exists():
                raise CatganError(f"{final} appeared during this run; another run is writing into {out}")
            os.rename(partial[s], final)
            files = [r["file"] for r in records[s]]
            write_contact_sheet(final, files, out / f"contact-{s}.png", config.contact)
    finally:
        for p in partial.values():
            shutil.rmtree(p, ignore_errors=True)
        _zip.cache_clear()  # inline runs opened archives here: close them, so a rewritten zip is reread
    report.seconds = time.perf_counter() - start
    return report


# Reasons decided from the file names alone: each stands for one input the run read.
_SCAN_REASONS = frozenset({"no photo", "duplicate", "outlier", "known bad", "no annotation"})
