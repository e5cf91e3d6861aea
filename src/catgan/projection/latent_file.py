"""A projected cat's latent on disk: NAME.latent.safetensors.

One tensor "latent" shaped (1, z_dim), float32, and metadata {"format": "catgan-latent-v1",
"generator_sha256": the hash of the generator it was found in (LoadedGenerator.sha256), "generator":
its name, for people}. Read with safetensors only (no pickle); the shape, dtype and values are checked,
and against a generator its z_dim (and, unless told otherwise, its sha256) too: one CatganError line each.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from catgan.errors import CatganError
from catgan.io import atomic_write

LATENT_FORMAT = "catgan-latent-v1"
LATENT_SUFFIX = ".latent.safetensors"
MAX_LATENT_BYTES = 16 * 2**20  # a latent is a few hundred floats; anything far larger is not one
MAX_Z_DIM = 1 << 20


@dataclass(frozen=True)
class LatentFile:
    latent: torch.Tensor  # (1, z_dim) float32, CPU
    generator_sha256: str
    meta: dict[str, Any] = field(default_factory=dict)  # every metadata entry, as strings


def save_latent(path: str | Path, latent: torch.Tensor, generator_sha256: str, **extra: Any) -> Path:
    """Write latent (z_dim,) or (1, z_dim) as NAME.latent.safetensors, atomically; `extra` metadata values
    are stored as strings (JSON for non-strings)."""
    from safetensors.torch import save_file

    z = latent.detach().to("cpu", torch.float32).reshape(1, -1).contiguous()  # (1, z_dim)
    if not torch.isfinite(z).all():
        raise CatganError("refusing to save a latent with NaN or infinite values")
    meta = {"format": LATENT_FORMAT, "generator_sha256": str(generator_sha256)}
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in extra.items()})
    return atomic_write(path, lambda tmp: save_file({"latent": z}, str(tmp), metadata=meta), "latent file")


def load_latent(path: str | Path) -> LatentFile:
    """A latent file, checked on its own (format, one finite float tensor (1, z_dim)). Raises CatganError."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CatganError(f"latent file not found: {path}")
    if path.stat().st_size > MAX_LATENT_BYTES:
        raise CatganError(f"{path} is {path.stat().st_size:,} bytes: too large to be a latent file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            keys = list(f.keys())
            tensor = f.get_tensor("latent") if keys == ["latent"] else None
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CatganError(f"cannot read {path} as a latent file (safetensors): {str(err)[:120]}") from err
    if meta.get("format") != LATENT_FORMAT:
        raise CatganError(f"{path} is not a catgan latent file (metadata format {meta.get('format')!r})")
    if tensor is None:
        raise CatganError(f"{path} must hold exactly one tensor named 'latent', has {keys[:5]}")
    if not tensor.is_floating_point() or tensor.ndim != 2 or tensor.shape[0] != 1:
        shape = tuple(tensor.shape)
        raise CatganError(f"{path}: 'latent' must be float (1, z_dim), got {tensor.dtype} {shape}")
    if not 1 <= tensor.shape[1] <= MAX_Z_DIM:
        raise CatganError(f"{path}: 'latent' has z_dim {tensor.shape[1]}, outside [1, {MAX_Z_DIM}]")
    z = tensor.to(torch.float32)
    if not torch.isfinite(z).all():
        raise CatganError(f"{path}: 'latent' holds NaN or infinite values")
    return LatentFile(z, str(meta.get("generator_sha256", "")), meta)


def latent_for(path: str | Path, gen: Any, strict: bool = True) -> torch.Tensor:
    """The latent (1, z_dim) of `path`, checked against the loaded generator `gen`: its z_dim must match,
    and (with strict) the generator it was found in must be this one (sha256)."""
    lf = load_latent(path)
    z_dim = gen.model.z_dim
    if lf.latent.shape[1] != z_dim:
        raise CatganError(
            f"{path}: latent has z_dim {lf.latent.shape[1]}, the generator {gen.name} takes {z_dim}"
        )
    if strict and lf.generator_sha256 != gen.sha256:
        made = lf.meta.get("generator") or lf.generator_sha256[:12] or "an unnamed generator"
        raise CatganError(
            f"{path} was projected into {made}, not {gen.name} (sha256 {gen.sha256[:12]}); "
            "use that generator, or project the photo again"
        )
    return lf.latent
