"""`catgan prepare`'s inputs: list a folder or zip, pair photos with their `.cat` files and name them
(scan), read one file with bounded memory.

Whatever a source holds, a read never takes more than `max_bytes` of memory and never blocks: sizes are
checked (stat, or the zip's declared size) before any byte is read, and anything that is not a regular
file (a FIFO, a symlink to /dev/zero, a device) is refused with a reason. Symlinks to regular files are
followed (a folder of links into another dataset is a normal source).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import stat
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from catgan.data.annotations import KNOWN_BAD, photo_key
from catgan.errors import CatganError

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})
MAX_FILE_BYTES = 256 * 2**20  # above the raw size of the largest image decode() accepts (~89 Mpx RGB)

Locator = tuple[str, str | None]  # (file path, member inside that zip or None)
CAT_DIR = re.compile(r"CAT_\d+")


class BadInput(Exception):
    """An input to skip: reason code and one-line detail."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def is_image(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTS


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def list_source(path: Path, exclude: Path | None = None) -> list[tuple[str, Locator]]:
    """All files under a folder or inside a zip: (posix path relative to the source, locator), sorted.

    `exclude` (prepare's --out, resolved) is never listed, nor anything under it: a rerun must not take
    its own output in as input. Hidden names (temp folders, .DS_Store) and __MACOSX are skipped.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        raise CatganError(f"source {path} does not exist") from None
    except OSError as err:
        raise CatganError(f"source {path} cannot be read: {err.strerror or err}") from None
    if stat.S_ISDIR(st.st_mode):
        return _list_folder(path, exclude)
    if not stat.S_ISREG(st.st_mode):  # a FIFO would block zipfile.is_zipfile, /dev/zero never ends
        raise CatganError(f"source {path} is neither a folder nor a zip archive (not a regular file)")
    if not zipfile.is_zipfile(path):
        raise CatganError(f"source {path} is neither a folder nor a zip archive")
    files: list[tuple[str, Locator]] = []
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                parts = info.filename.split("/")
                if info.is_dir() or any(p.startswith(".") or p == "__MACOSX" for p in parts):
                    continue
                files.append((info.filename, (str(path), info.filename)))
    except (OSError, zipfile.BadZipFile) as err:
        raise CatganError(f"source {path} is not a readable zip: {err}") from None
    return sorted(files)


def _list_folder(path: Path, exclude: Path | None) -> list[tuple[str, Locator]]:
    files: list[tuple[str, Locator]] = []
    for root, dirs, names in os.walk(path):
        here = Path(root)
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".") and not (exclude and _inside((here / d).resolve(), exclude))
        )
        for n in names:
            if not n.startswith("."):
                full = here / n
                files.append((full.relative_to(path).as_posix(), (str(full), None)))
    return sorted(files)


@functools.lru_cache(maxsize=4)
def open_zip(path: str) -> zipfile.ZipFile:
    """One open handle per archive and process (the central directory is read once)."""
    return zipfile.ZipFile(path)


def _too_large(size: int, max_bytes: int) -> BadInput:
    return BadInput("too large", f"{size} bytes, over the {max_bytes}-byte limit for one input file")


def read_bytes(loc: Locator, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of one input, never more than max_bytes in memory. Raises BadInput."""
    path, member = loc
    try:
        if member is None:
            return _read_file(path, max_bytes)
        info = open_zip(path).getinfo(member)
        if info.file_size > max_bytes:  # the declared size, checked before anything is inflated
            raise _too_large(info.file_size, max_bytes)
        with open_zip(path).open(info) as f:
            data = f.read(max_bytes + 1)  # a header that lies about the size cannot get past this
    except (OSError, zipfile.BadZipFile, KeyError, EOFError) as err:
        raise BadInput("unreadable", f"cannot read the file: {err}") from None
    if len(data) > max_bytes:
        raise _too_large(len(data), max_bytes)
    return data


def _read_file(path: str, max_bytes: int) -> bytes:
    # O_NONBLOCK: opening a FIFO with no writer returns at once instead of waiting forever; the mode is
    # then checked on the open descriptor, so a file swapped after a stat cannot slip through.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device or socket"
            raise BadInput("not a file", f"{kind}, not a regular file")
        if st.st_size > max_bytes:
            raise _too_large(st.st_size, max_bytes)
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(max_bytes + 1)  # a file that grows while being read stops here
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise _too_large(len(data), max_bytes)
    return data


# ---- pairing and naming the inputs -------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One photo to process. name: output stem (unique); rel: path inside its source (posix)."""

    name: str
    rel: str
    kind: Literal["landmarks", "face"]
    photo: Locator
    cat: Locator | None = None
    index: int = 0  # position in scan order: the first of two identical photos is the one kept


@dataclass(frozen=True)
class Drop:
    """An input that produced no face: its path inside the source, a reason code and a one-line detail."""

    source: str
    reason: str
    detail: str

    def as_json(self) -> dict:
        return {"source": self.source, "reason": self.reason, "detail": self.detail}


def _stem(rel: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", photo_key(rel))


def unique_names(rels: list[str]) -> list[str]:
    """One output stem per input, all distinct (case-insensitively, for filesystems that fold case).

    A photo's stem is its key (base name without extension) made filename-safe, so the Kaggle layout keeps
    its names. Where two inputs would share one (a/001.jpg + b/001.jpg, Tom.jpg + Tom.png, 'a b.jpg' +
    'a_b.jpg', two non-ASCII names), names that are already safe claim theirs first, in path order, and
    the others get '-' and 8 hex digits of sha256 of their path: deterministic, whatever else is there.
    """
    stems = [_stem(r) for r in rels]
    order = sorted(range(len(rels)), key=lambda i: (stems[i] != photo_key(rels[i]), rels[i], i))
    taken: set[str] = set()
    names = [""] * len(rels)
    for i in order:
        name, k = stems[i], 0
        while name.casefold() in taken:
            k += 1
            tag = hashlib.sha256(f"{rels[i]}#{k}".encode("utf-8", "surrogateescape")).hexdigest()[:8]
            name = f"{stems[i]}-{tag}"
        taken.add(name.casefold())
        names[i] = name
    return names


def _classify(
    files: list[tuple[str, Locator]], source: Path
) -> tuple[list[tuple[str, Locator, Locator | None, bool]], list[Drop], int]:
    """One source's files -> (photo path, locator, .cat locator, is a landmark photo), drops, images."""
    by_dir: dict[str, list[tuple[str, Locator]]] = {}
    for rel, loc in files:
        by_dir.setdefault(rel.rpartition("/")[0], []).append((rel, loc))
    photos: list[tuple[str, Locator, Locator | None, bool]] = []
    drops: list[Drop] = []
    n_images = 0
    for folder, entries in by_dir.items():
        names = {rel.rpartition("/")[2]: (rel, loc) for rel, loc in entries}
        landmark_dir = any(n.endswith(".cat") for n in names) or bool(
            CAT_DIR.fullmatch(folder.rpartition("/")[2] or source.name)
        )
        for n, (rel, loc) in names.items():
            if landmark_dir and n.endswith(".cat"):
                if n[: -len(".cat")] not in names:
                    drops.append(Drop(rel, "no photo", "annotation without its photo"))
                continue
            if is_image(n):
                n_images += 1
                cat = names.get(n + ".cat")
                photos.append((rel, loc, cat[1] if cat else None, landmark_dir))
    return photos, drops, n_images


def scan(
    sources: Iterable[Path], outliers: frozenset[str], exclude: Path | None = None
) -> tuple[list[Item], list[Drop]]:
    """Pair photos with their `.cat` files, name them uniquely and apply the name-based rules (outliers,
    known bad). `exclude` (the output folder) is never read. Raises CatganError for a source that does
    not exist or holds no images."""
    photos: list[tuple[str, Locator, Locator | None, bool]] = []
    drops: list[Drop] = []
    for source in sources:
        found, dropped, n_images = _classify(list_source(Path(source), exclude), Path(source))
        if n_images == 0:
            raise CatganError(f"source {source} holds no images ({', '.join(sorted(IMAGE_EXTS))})")
        photos += found
        drops += dropped
    items: list[Item] = []
    for name, (rel, loc, cat, landmark_dir) in zip(unique_names([p[0] for p in photos]), photos, strict=True):
        base = rel.rpartition("/")[2]
        if _stem(rel) in outliers:
            drops.append(Drop(rel, "outlier", "listed in the original system's outliers"))
        elif not landmark_dir:
            items.append(Item(name, rel, "face", loc, index=len(items)))
        elif base + ".cat" in KNOWN_BAD:
            drops.append(
                Drop(
                    rel, "known bad", f"{base}.cat is wrong in the original data: {KNOWN_BAD[base + '.cat']}"
                )
            )
        elif cat is None:
            drops.append(Drop(rel, "no annotation", f"photo without {base}.cat"))
        else:
            items.append(Item(name, rel, "landmarks", loc, cat, index=len(items)))
    return items, drops
