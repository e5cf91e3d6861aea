"""Checkpoint files that can be trusted (issue 37):

- save_torch: torch.save through a file object that keeps the first OSError. torch.save swallows the
  ENOSPC of a full disk and raises a RuntimeError without an errno ("unexpected pos 768 vs 662") in
  its place; catgan.io.atomic_write turns an OSError into one clear line, so the real error is raised.
- check_fields: the type of every field a loaded training checkpoint holds, checked before anything
  uses it. weights_only=True loads no code, but it does load any dict, list, number or tensor: a `step`
  that is a string, a G that is a list or a random-generator state of the wrong size would end in a
  traceback far from the file.
- utf8_name: a name safetensors can open for a file whose name is not UTF-8.
- newest_readable: the newest step checkpoint of a run that loads, skipping damaged newer ones with a
  warning naming each (a torn copy, a disk that filled before atomic writes existed, a bad sector).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from catgan.errors import CatganError

T = TypeVar("T")


class _KeepError:
    """A write-only file object for torch.save over a raw file descriptor: every byte is written (a
    short write is continued) and the first OSError is kept, since torch.save replaces it."""

    def __init__(self, fd: int) -> None:
        self.fd, self.error = fd, None

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError as err:
            self.error = self.error or err
            raise
        return len(data)

    def flush(self) -> None:
        pass


def save_torch(obj: Any, path: Path) -> None:
    """torch.save(obj) into `path`; a failed write (a full disk) raises its OSError. The archive inside
    is named "archive" whatever the file is called, so equal states give equal bytes."""
    import torch

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        writer = _KeepError(fd)
        try:
            torch.save(obj, writer)
        except RuntimeError as err:
            if writer.error is not None:
                raise writer.error from err
            raise OSError(f"torch.save failed: {str(err).strip().splitlines()[0][:200]}") from err
        if writer.error is not None:  # swallowed by torch and not reported at all
            raise writer.error
    finally:
        os.close(fd)


@contextlib.contextmanager
def utf8_name(path: Path) -> Iterator[str]:
    """A name of `path` that safetensors can open: its Rust core takes UTF-8 paths only, so a file name
    that is not UTF-8 (held as surrogates) is opened here and named by its descriptor, /proc/self/fd/N
    (Linux); where that does not exist the open fails with a clear OSError."""
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        fd = os.open(path, os.O_RDONLY)
        try:
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    yield text


# ---- the fields of a loaded checkpoint ----------------------------------------------------------


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _tensors(v: Any) -> str | None:
    """Why `v` is not a state dict (str names -> tensors), or None."""
    import torch

    if not isinstance(v, dict):
        return f"a dict of tensors, got {type(v).__name__}"
    for k, t in v.items():
        if not isinstance(k, str) or not isinstance(t, torch.Tensor):
            return f"a dict of tensors, got {type(k).__name__} {str(k)[:40]!r} -> {type(t).__name__}"
    return None


def _optimizer(v: Any) -> str | None:
    """Why `v` is not an optimizer's state_dict (its structure and the numbers Adam reads), or None."""
    import torch

    if not isinstance(v, dict) or not isinstance(v.get("state"), dict):
        return "an optimizer state (a dict with 'state' and 'param_groups')"
    groups = v.get("param_groups")
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        return "an optimizer state whose 'param_groups' is a list of dicts"
    for g in groups:
        params = g.get("params")
        if not isinstance(params, list) or not all(_is_int(p) for p in params):
            return "an optimizer state whose groups list their parameters by number"
        for name in ("lr", "eps", "weight_decay"):
            if name in g and not (_is_number(g[name]) or isinstance(g[name], torch.Tensor)):
                return f"an optimizer state with a numeric {name}, got {type(g[name]).__name__}"
        betas = g.get("betas", (0.0, 0.0))
        if not isinstance(betas, tuple | list) or len(betas) != 2 or not all(map(_is_number, betas)):
            return "an optimizer state with two numeric betas"
    for key, per_param in v["state"].items():
        if not _is_int(key) or not isinstance(per_param, dict):
            return "an optimizer state whose 'state' maps parameter numbers to dicts"
        if not all(isinstance(t, torch.Tensor) or _is_number(t) for t in per_param.values()):
            return "an optimizer state of tensors and numbers"
    return None


def _rng(v: Any, cpu: bool) -> str | None:
    """Why `v` is not a random generator's state (a CPU one's, when `cpu`), or None."""
    import torch

    if not isinstance(v, torch.Tensor) or v.dtype != torch.uint8 or v.ndim != 1:
        got = f"{v.dtype} {tuple(v.shape)}" if isinstance(v, torch.Tensor) else type(v).__name__
        return f"a random generator state (a 1-D uint8 tensor), got {got}"
    if cpu:
        try:
            torch.Generator().set_state(v)
        except (RuntimeError, ValueError):
            return f"a CPU random generator state, got {len(v)} bytes that are not one"
    return None


def _count(v: Any) -> str | None:
    return None if _is_int(v) and v >= 0 else f"a whole number >= 0, got {v!r:.40}"


def _real(v: Any) -> str | None:
    return None if _is_number(v) and not math.isnan(v) else f"a number, got {v!r:.40}"


def _maybe(check: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    return lambda v: None if v is None else check(v)


def _cuda_rng(v: Any) -> str | None:
    if not isinstance(v, list):
        return f"a list, got {type(v).__name__}"
    return next((why for t in v if (why := _rng(t, cpu=False))), None)


def _a(kind: type, name: str) -> Callable[[Any], str | None]:
    return lambda v: None if isinstance(v, kind) else f"{name}, got {type(v).__name__}"


# field -> why its value is wrong (None: fine). A field that is absent is not checked here: what a
# checkpoint must hold depends on its use (training.state.RESUME_KEYS to resume; G to draw).
FIELDS: dict[str, Callable[[Any], str | None]] = {
    "format": _a(str, "a string"),
    "G": _tensors,
    "D": _maybe(_tensors),
    "G_ema": _maybe(_tensors),
    "opt_g": _optimizer,
    "opt_d": _optimizer,
    "step": _count,
    "epoch": _count,
    "batch_in_epoch": _count,
    "data_rng": lambda v: _rng(v, cpu=True),
    "cpu_rng": lambda v: _rng(v, cpu=True),
    "noise_rng": lambda v: _rng(v, cpu=False),  # a CUDA generator's state is 16 bytes
    "cuda_rng": _cuda_rng,
    "model_config": _a(dict, "a dict"),
    "train_config": _a(dict, "a dict"),
    "elapsed": _real,
    "best_fid": _real,
    "world_size": _count,
    "init_from": _maybe(_a(dict, "a dict")),
}


def check_fields(state: dict[str, Any], path: str | Path) -> None:
    """One CatganError naming `path` and the first field whose value has the wrong type."""
    for name, check in FIELDS.items():
        if name in state and (why := check(state[name])):
            raise CatganError(f"{path} is damaged or not a catgan checkpoint: its {name} should be {why}")


# ---- the newest readable checkpoint of a run ----------------------------------------------------

UNREADABLE_SUFFIX = ".unreadable"  # step-N.pt -> step-N.pt.unreadable: no longer a step checkpoint


def newest_readable(
    candidates: list[Path], load: Callable[[Path], T], warn: Callable[[str], None]
) -> tuple[Path, T] | None:
    """(path, load(path)) of the newest of `candidates` (oldest first) that loads without a
    CatganError, with a warning naming each newer one that does not (and why); None when there are no
    candidates. When none loads: the newest one's error, with the count of the others."""
    bad: list[CatganError] = []
    for path in reversed(candidates):
        try:
            loaded = load(path)
        except CatganError as err:
            bad.append(err)
            continue
        for err in bad:
            warn(f"warning: skipped an unreadable checkpoint: {err}")
        if bad:
            warn(f"warning: using {path}, the newest readable checkpoint")
        return path, loaded
    if not bad:
        return None
    older = f" (and the {len(bad) - 1} older one(s) cannot be read either)" if len(bad) > 1 else ""
    raise CatganError(f"{bad[0]}{older}")


def set_aside_unreadable(run_dir: str | Path, warn: Callable[[str], None]) -> list[Path]:
    """Rename the step checkpoints newer than the newest readable one to NAME.pt.unreadable, each with a
    warning: a resume goes on from the readable one, and the damaged ones must not count among the
    newest kept (checkpoint.prune_checkpoints would delete the good ones) nor be found again. When none
    is readable nothing is moved (the resume refuses, naming the newest). For `catgan train`, which holds
    the run's lock. Returns the new names."""
    from catgan.checkpoint import list_checkpoints, load_checkpoint

    bad: list[tuple[Path, CatganError]] = []
    for path in reversed(list_checkpoints(run_dir)):
        try:
            load_checkpoint(path)
        except CatganError as err:
            bad.append((path, err))
            continue
        moved = []
        for damaged, err in bad:
            aside = damaged.with_name(damaged.name + UNREADABLE_SUFFIX)
            os.replace(damaged, aside)
            warn(f"warning: {err}; moved it to {aside.name} and going on from {path.name}")
            moved.append(aside)
        return moved
    return []
