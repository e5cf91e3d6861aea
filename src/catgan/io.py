"""Writing files safely: atomic writes (a temp file beside the target, fsynced, renamed), the cleaning of
the temp files a killed writer left, and JSON helpers."""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from catgan.errors import CatganError

_TEMP_RE = re.compile(r"^\..+\.tmp-(\d+)$")  # atomic_path's temp name: .NAME.tmp-PID


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is fsynced and renamed over `path`.

    On any error (a full disk included) the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, write: Callable[[Path], None], what: str = "file") -> Path:
    """Run write(tmp) and rename; an OSError (disk full, read-only) becomes one clear CatganError."""
    try:
        with atomic_path(path) as tmp:
            write(tmp)
    except OSError as err:
        raise CatganError(
            f"could not write {what} {path}: {err.strerror or err}; nothing was overwritten"
        ) from err
    return Path(path)


def write_json(path: str | Path, data: Any, what: str = "JSON") -> Path:
    """Indented, key-sorted JSON, written atomically."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text), what)


def read_json(path: str | Path, default: Any = None) -> Any:
    """A JSON file's content, or `default` when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return default


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError):  # not a pid at all
        return False
    return True


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the temp files (.NAME.tmp-PID) in `folder` whose writer no longer runs: a process killed
    mid-write leaves one, which nothing else would ever remove. Returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for p in folder.iterdir():
        m = _TEMP_RE.match(p.name)
        if m and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1))) and p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return sorted(removed)


def check_writable(path: str | Path, what: str) -> Path:
    """Refuse, before any work, an output file whose folder cannot take it (missing, not a folder, or
    not writable): one CatganError line, so a long computation is never lost to a bad --out."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise CatganError(f"could not write {what} to {path}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CatganError(f"could not write {what} to {path}: {folder} is not writable")
    if path.is_dir():
        raise CatganError(f"could not write {what} to {path}: it is a folder")
    return path
