"""Saving and loading runs, checkpoints and exported generators. Every write is atomic; no load unpickles.

Run folder:
    config.json                  {"model": ModelConfig, "train": TrainConfig, "catgan_version": ...}
    checkpoints/step-00001234.pt one training state (G, D, EMA, optimizers, step, epoch, RNG states)
    checkpoints/best.pt          the best state by FID, when training evaluates
Exported generator: NAME.safetensors holding G's tensors, with the ModelConfig, a content hash and
provenance in the safetensors metadata (and optionally a NAME.json beside it for people to read).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from catgan import __version__
from catgan.config import ModelConfig, TrainConfig, from_dict, to_dict
from catgan.errors import CatganError

RUN_CONFIG = "config.json"
CHECKPOINT_DIR = "checkpoints"
EXPORT_FORMAT = "catgan-generator-v1"
_STEP_RE = re.compile(r"^step-(\d{8,})\.pt$")


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


def write_json(path: str | Path, data: Any) -> Path:
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text), "JSON")


# ---- run config ----------------------------------------------------------------------------------


def save_run_config(run_dir: str | Path, model: ModelConfig, train: TrainConfig, **extra: Any) -> Path:
    data = {"model": to_dict(model), "train": to_dict(train), "catgan_version": __version__, **extra}
    return write_json(Path(run_dir) / RUN_CONFIG, data)


def load_run_config(run_dir: str | Path) -> tuple[ModelConfig, TrainConfig]:
    path = Path(run_dir) / RUN_CONFIG
    if not path.is_file():
        raise CatganError(f"{run_dir} is not a catgan run folder: {RUN_CONFIG} is missing")
    try:
        data = json.loads(path.read_text())
        return from_dict(ModelConfig, data["model"]), from_dict(TrainConfig, data["train"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CatganError(f"{path} is not a valid catgan run config: {err}") from err


# ---- training checkpoints ------------------------------------------------------------------------


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"step-{step:08d}.pt"


def step_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of the step checkpoints, oldest first (temporary files from an interrupted write are
    ignored)."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP_RE.match(p.name)))


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Step checkpoints, oldest first."""
    return [p for _, p in step_checkpoints(run_dir)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def run_folder(checkpoint: Path) -> Path:
    """The run folder a checkpoint belongs to: RUN for RUN/checkpoints/X.pt (else the file's folder)."""
    return checkpoint.parent.parent if checkpoint.parent.name == CHECKPOINT_DIR else checkpoint.parent


def resolve_checkpoint(source: str | Path) -> Path:
    """`source` when it is a file, else the latest step checkpoint of the run folder `source`."""
    path = Path(source)
    found = latest_checkpoint(path) if path.is_dir() else path
    if found is None or not found.is_file():
        raise CatganError(f"no checkpoint at {source}: give a checkpoint file or a run folder that has one")
    return found


def saved_configs(state: dict[str, Any], where: str | Path) -> tuple[ModelConfig, TrainConfig]:
    """The model and training configs saved in a loaded checkpoint; one error naming `where` if unreadable."""
    try:
        return from_dict(ModelConfig, state["model_config"]), from_dict(TrainConfig, state["train_config"])
    except (KeyError, TypeError, ValueError) as err:
        raise CatganError(f"{where}: unreadable saved config: {err}") from err


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """torch.save of plain tensors, numbers, strings and dicts (loadable with weights_only=True)."""
    return atomic_write(path, lambda tmp: torch.save(state, tmp), "checkpoint")


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Delete all but the newest `keep` step checkpoints (best.pt is never touched)."""
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CatganError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, foreign pickle with code in it, not a torch file at all
        first = (str(err).strip().splitlines() or ["(no message)"])[0]  # a zero-byte file gives none
        raise CatganError(f"cannot read checkpoint {path}: {type(err).__name__}: {first}") from err
    if not isinstance(state, dict) or "G" not in state or "model_config" not in state:
        raise CatganError(f"{path} is not a catgan training checkpoint (no generator or model config in it)")
    return state


# ---- exported generators -------------------------------------------------------------------------


def tensors_hash(tensors: dict[str, torch.Tensor], extra: str = "") -> str:
    """sha256 over names, dtypes, shapes and bytes in name order, then `extra` (the config JSON when
    exporting): detects any edit of the weights or of the config that rebuilds them."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        # reshape(-1): a 0-dim tensor (BatchNorm's num_batches_tracked) cannot be viewed as bytes
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    h.update(extra.encode())
    return h.hexdigest()


def generator_hash(tensors: dict[str, torch.Tensor], model: ModelConfig) -> str:
    """The identity of a generator: its weights and the config that rebuilds it (as stored on export)."""
    return tensors_hash(tensors, json.dumps(to_dict(model), sort_keys=True))


def export_generator(
    state_dict: dict[str, torch.Tensor],
    model: ModelConfig,
    out: str | Path,
    dtype: torch.dtype | None = None,
    **provenance: Any,
) -> Path:
    """Write G's weights as safetensors with the config and a content hash in its metadata."""
    from safetensors.torch import save

    out = Path(out)
    if out.suffix != ".safetensors":
        raise CatganError(f"--out must end in .safetensors, got {out.name}")
    tensors = {}
    for k, v in state_dict.items():
        v = v.detach().cpu()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        tensors[k] = v.contiguous()
    meta = {
        "format": EXPORT_FORMAT,
        "catgan_version": __version__,
        "model_config": json.dumps(to_dict(model), sort_keys=True),
        "sha256": generator_hash(tensors, model),
        "provenance": json.dumps(provenance, sort_keys=True, default=str),
    }
    # serialised in memory, then written by atomic_write: its OSError becomes a CatganError (save_file
    # raises SafetensorError for an unwritable folder, which would escape as a traceback)
    data = save(tensors, metadata=meta)
    atomic_write(out, lambda tmp: tmp.write_bytes(data), "generator weights")
    write_json(
        out.with_suffix(".json"),
        {
            **{k: v for k, v in meta.items() if k != "model_config"},
            "model_config": to_dict(model),
            "provenance": provenance,
        },
    )
    return out


def load_generator_file(path: str | Path) -> tuple[dict[str, torch.Tensor], ModelConfig, dict[str, Any]]:
    """(state_dict, ModelConfig, provenance) from an exported .safetensors; refuses anything not ours."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CatganError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CatganError(
            f"cannot read {path} as safetensors (truncated or not a weights file): {err}"
        ) from err
    if meta.get("format") != EXPORT_FORMAT:
        raise CatganError(f"{path} is not a catgan generator (metadata format {meta.get('format')!r})")
    if tensors_hash(tensors, meta.get("model_config", "")) != meta.get("sha256"):
        raise CatganError(
            f"{path}: weights do not match their recorded sha256 (file was modified or damaged)"
        )
    try:
        model = from_dict(ModelConfig, json.loads(meta["model_config"]))
        provenance = json.loads(meta.get("provenance", "{}"))
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CatganError(f"{path}: unreadable model config in metadata: {err}") from err
    return tensors, model, provenance
