"""A lock on a run folder: one writer at a time.

    with run_lock(run_dir, "train"):
        ...  # a second `catgan train` (or an `export` into the run) is refused in one line naming us

The lock is RUN/.lock, created with O_CREAT | O_EXCL (the kernel lets exactly one process create it) and
holding the holder's PID, host and command as JSON. It is removed on every way out of the `with` (an
error, Ctrl-C, SIGTERM); a process killed with SIGKILL cannot remove it, so a lock whose PID is dead on
this host is stale and taken over with a message. A lock of another host cannot be checked: it is
refused, naming the file to delete once that run is known to be over.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from catgan.errors import CatganError
from catgan.io import pid_alive

LOCK_NAME = ".lock"
_UNWRITTEN_GRACE_S = 10.0  # a lock file still empty this long after its creation was left by a crash


def is_lock_file(path: Path) -> bool:
    """Whether `path` is a run folder's lock (which a folder check should not count as a foreign file)."""
    return path.name == LOCK_NAME


def _holder(path: Path) -> dict | None:
    """The lock's content, or None while it is unreadable (being written, or left empty by a crash)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _describe(holder: dict) -> str:
    return f"{holder.get('command', 'catgan')} (PID {holder.get('pid')} on {holder.get('host')})"


def _stale(path: Path, holder: dict | None) -> bool:
    """A lock whose holder is known to be gone: a dead PID on this host, or a file never written."""
    if holder is None:
        with contextlib.suppress(OSError):
            return time.time() - path.stat().st_mtime > _UNWRITTEN_GRACE_S
        return False
    pid = holder.get("pid")
    if holder.get("host") != socket.gethostname() or not isinstance(pid, int) or isinstance(pid, bool):
        return False
    return not pid_alive(pid)


def _create(path: Path, me: dict) -> bool:
    """Create the lock holding `me`; False when it exists already."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(me) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return True


def acquire(run_dir: str | Path, command: str, log: Callable[[str], None] = print) -> Path:
    """Take the lock of `run_dir` (created if missing) for `command`, taking over a stale one with a
    message; a live holder: one CatganError naming it."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CatganError(f"cannot create the run folder {run_dir}: {err.strerror or err}") from err
    path = run_dir / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(), "command": f"catgan {command}"}
    me["started"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    for _ in range(3):  # a takeover races at most a few others doing the same
        try:
            if _create(path, me):
                return path
        except OSError as err:
            raise CatganError(f"cannot lock {run_dir} ({path}): {err.strerror or err}") from err
        holder = _holder(path)
        if not _stale(path, holder):
            who = _describe(holder) if holder else "a process that is starting"
            hint = "wait for it to finish or stop it"
            if holder and holder.get("host") != socket.gethostname():
                hint = f"if that run is over, delete {path}"
            since = (holder or {}).get("started", "?")
            raise CatganError(f"{run_dir} is in use by {who} since {since}; {hint}")
        log(f"note: taking over the stale lock of {run_dir} (held by {_describe(holder or {})}, now gone)")
        path.unlink(missing_ok=True)
    raise CatganError(f"cannot lock {run_dir}: {path} keeps changing hands; is another catgan starting?")


def release(path: Path) -> None:
    """Remove the lock if it is still ours (never a lock another process took over)."""
    holder = _holder(path)
    if holder is not None and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def run_lock(run_dir: str | Path, command: str, log: Callable[[str], None] = print) -> Iterator[Path]:
    """Hold the lock of `run_dir` for the `with` block (see the module docstring). A folder the lock
    created is removed again if nothing else was written into it (a refused run leaves no trace)."""
    created = not Path(run_dir).exists()
    path = acquire(run_dir, command, log)
    try:
        yield path
    finally:
        release(path)
        if created:
            with contextlib.suppress(OSError):  # not empty (the run wrote something): it stays
                Path(run_dir).rmdir()
