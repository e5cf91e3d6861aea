"""Saving and loading runs, checkpoints and exported generators. Every write is atomic (catgan.io); no load
unpickles.

Run folder:
    config.json                  {"format": RUN_FORMAT, "model": GANConfig, "train": TrainConfig,
                                  "output": RunOptions' cadence, "dataset": what it trains on, ...}
    checkpoints/step-00001234.pt one training state (G, D, EMA, optimizers, step, epoch, RNG states)
    checkpoints/best.pt          the best state by FID, when training evaluates
Exported generator: NAME.safetensors holding G's tensors, with its generator config (naming its family), a
content hash and provenance in the safetensors metadata (and a NAME.json beside it for people to read).
Files of the first release (EXPORT_FORMAT_V1; run folders and checkpoints with one flat "model" config and
no format key) read as the DCGAN family.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import torch

from catgan import __version__
from catgan.checkpoint_integrity import check_fields, save_torch, utf8_name
from catgan.config import (
    GANConfig,
    TrainConfig,
    legacy_output,
    model_from_dict,
    output_from_dict,
    to_dict,
    train_from_dict,
)
from catgan.errors import CatganError
from catgan.io import atomic_write, write_json

RUN_CONFIG = "config.json"
CHECKPOINT_DIR = "checkpoints"
EXPORT_FORMAT = "catgan-generator-v2"  # the generator config names its family
EXPORT_FORMAT_V1 = "catgan-generator-v1"  # a first-release file: a flat DCGAN model config
RUN_FORMAT = "catgan-run-v2"
CHECKPOINT_FORMAT = "catgan-checkpoint-v2"
_STEP_RE = re.compile(r"^step-(\d{8,})\.pt$")


# ---- run config ----------------------------------------------------------------------------------


def save_run_config(run_dir: str | Path, model: GANConfig, train: TrainConfig, **extra: Any) -> Path:
    data = {"format": RUN_FORMAT, "model": to_dict(model), "train": to_dict(train)}
    data.update(catgan_version=__version__, **extra)
    return write_json(Path(run_dir) / RUN_CONFIG, data)


def _read_run_config(run_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    path = Path(run_dir) / RUN_CONFIG
    if not path.is_file():
        raise CatganError(f"{run_dir} is not a catgan run folder: {RUN_CONFIG} is missing")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CatganError(f"{path} is not a valid catgan run config: {err}") from err
    if not isinstance(data, dict) or not isinstance(data.get("train"), dict) or "model" not in data:
        raise CatganError(f"{path} is not a valid catgan run config: no model and train configs")
    return path, data


def load_run_config(run_dir: str | Path) -> tuple[GANConfig, TrainConfig]:
    path, data = _read_run_config(run_dir)
    try:
        return model_from_dict(data["model"], str(path)), train_from_dict(data["train"], str(path))
    except (KeyError, TypeError) as err:
        raise CatganError(f"{path} is not a valid catgan run config: {err}") from err


def load_run_output(run_dir: str | Path) -> dict[str, int]:
    """The cadence a run records (RunOptions fields): its config.json's "output", or in a file written
    before that existed, the cadence fields of its "train" (config.legacy_output)."""
    path, data = _read_run_config(run_dir)
    if "output" in data:
        return output_from_dict(data["output"], str(path))
    return output_from_dict(legacy_output(data["train"]), str(path))


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


def saved_configs(state: dict[str, Any], where: str | Path) -> tuple[GANConfig, TrainConfig]:
    """The model and training configs saved in a loaded checkpoint; one error naming `where` if unreadable."""
    try:
        model = model_from_dict(state["model_config"], f"{where}: model_config")
        return model, train_from_dict(state["train_config"], f"{where}: train_config")
    except (KeyError, TypeError, ValueError) as err:
        raise CatganError(f"{where}: unreadable saved config: {err}") from err


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """torch.save of plain tensors, numbers, strings and dicts (loadable with weights_only=True); a full
    disk is one CatganError (checkpoint_integrity.save_torch keeps the OSError torch.save hides)."""
    return atomic_write(path, lambda tmp: save_torch(state, tmp), "checkpoint")


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
    check_fields(state, path)  # every field's type, before anything uses one
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


def generator_hash(tensors: dict[str, torch.Tensor], gcfg: Any) -> str:
    """The identity of a generator: its weights and the generator config that rebuilds it (as stored on
    export; a first-release file's weights hash the same once read, whatever format they came in)."""
    return tensors_hash(tensors, json.dumps(to_dict(gcfg), sort_keys=True))


def export_generator(
    state_dict: dict[str, torch.Tensor],
    gcfg: Any,
    out: str | Path,
    dtype: torch.dtype | None = None,
    **provenance: Any,
) -> Path:
    """Write G's weights as safetensors with its generator config and a content hash in its metadata."""
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
        "generator_config": json.dumps(to_dict(gcfg), sort_keys=True),
        "sha256": generator_hash(tensors, gcfg),
        "provenance": json.dumps(provenance, sort_keys=True, default=str),
    }
    # serialised in memory, then written by atomic_write: its OSError becomes a CatganError (save_file
    # raises SafetensorError for an unwritable folder, which would escape as a traceback)
    data = save(tensors, metadata=meta)
    atomic_write(out, lambda tmp: tmp.write_bytes(data), "generator weights")
    write_json(
        out.with_suffix(".json"),
        {
            **{k: v for k, v in meta.items() if k != "generator_config"},
            "generator_config": to_dict(gcfg),
            "provenance": provenance,
        },
    )
    return out


def load_generator_file(path: str | Path) -> tuple[dict[str, torch.Tensor], Any, dict[str, Any]]:
    """(state_dict, generator config, provenance) from an exported .safetensors; refuses anything not ours.
    The config is checked (types, ranges, size) before any network is built from it."""
    from catgan.models import generator_config, legacy_generator_config, split_legacy

    path = Path(path)
    tensors, meta = _read_safetensors(path)
    fmt = meta.get("format")
    if fmt not in (EXPORT_FORMAT, EXPORT_FORMAT_V1):
        raise CatganError(f"{path} is not a catgan generator (metadata format {fmt!r})")
    key = "generator_config" if fmt == EXPORT_FORMAT else "model_config"
    if tensors_hash(tensors, meta.get(key, "")) != meta.get("sha256"):
        raise CatganError(
            f"{path}: weights do not match their recorded sha256 (file was modified or damaged)"
        )
    try:
        saved = json.loads(meta[key])
        provenance = json.loads(meta.get("provenance", "{}"))
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CatganError(f"{path}: unreadable generator config in metadata: {err}") from err
    if not isinstance(provenance, dict):
        raise CatganError(f"{path}: provenance in metadata must be a JSON object, got {provenance!r:.40}")
    if fmt == EXPORT_FORMAT:
        return tensors, generator_config(saved, f"{path}: {key}"), provenance
    # a first-release file's one config described D too: a run started from it builds its new D by that
    provenance.setdefault("discriminator_config", split_legacy(saved, f"{path}: {key}")[1])
    return tensors, legacy_generator_config(saved, f"{path}: {key}"), provenance


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    if not path.is_file():
        raise CatganError(f"weights file not found: {path}")
    try:
        with utf8_name(path) as name, safe_open(name, framework="pt") as f:
            meta = f.metadata() or {}
            return load_file(name), meta
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CatganError(
            f"cannot read {path} as safetensors (truncated or not a weights file): {err}"
        ) from err
