"""Seeds, latents and interpolation: which latent a seed names, and walks between seeds' latents.

A seed is the unit of reproducibility (as EDM's `--seeds=0-63`): seed s always gives the latent drawn
from `torch.Generator().manual_seed(s)` on the CPU, whatever the batch and whatever other seeds are asked
for, so any single image can be drawn again. The trainer draws its fixed sample grid by the same rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from catgan.errors import CatganError
from catgan.models.base import sample_latents

SEED_LIMIT = 2**32  # seeds are integers in [0, 2^32)
MAX_SEEDS = 1_000_000  # one request; a guard against "0-4294967295" filling memory with a list


def _seed_int(token: str, text: str) -> int:
    # ASCII digits only: str.isdigit() also takes "²", which int() refuses; also refuses "-3", "1.5", ""
    if not (token.isascii() and token.isdigit()):
        raise CatganError(
            f"bad seed {token[:40]!r} in {text[:80]!r}: seeds are whole numbers in [0, 2^32), e.g. 0-63,70"
        )
    if len(token.lstrip("0")) > len(str(SEED_LIMIT)):  # before int(): Python refuses 4,300+ digits
        raise CatganError(
            f"seed {token[:20]}... in {text[:80]!r} is too large: seeds are in [0, {SEED_LIMIT - 1}]"
        )
    value = int(token)
    if value >= SEED_LIMIT:
        raise CatganError(f"seed {value} in {text[:80]!r} is too large: seeds are in [0, {SEED_LIMIT - 1}]")
    return value


def parse_seeds(text: str, limit: int = MAX_SEEDS) -> list[int]:
    """ "0-63,70,80-82" -> [0, 1, ..., 63, 70, 80, 81, 82], in the order given (repeats kept); more than
    `limit` seeds is refused before any range is expanded (the web app asks for at most a grid's)."""
    if not text or not text.strip():
        raise CatganError("no seeds given: use e.g. --seeds 0-63 or --seeds 3,7,11")
    seeds: list[int] = []
    for raw in text.split(","):
        token = raw.strip()
        if not token:
            raise CatganError(
                f"empty item in seeds {text!r}: write e.g. 0-63,70 (no doubled or trailing comma)"
            )
        lo_text, sep, hi_text = token.partition("-")
        if not sep:
            seeds.append(_seed_int(token, text))
            continue
        lo, hi = _seed_int(lo_text.strip(), text), _seed_int(hi_text.strip(), text)
        if hi < lo:
            raise CatganError(f"seed range {token!r} goes down: write it as {hi}-{lo}")
        if len(seeds) + hi - lo + 1 > limit:
            raise CatganError(f"seeds {text[:80]!r} ask for more than {limit} images at once")
        seeds.extend(range(lo, hi + 1))
    if len(seeds) > limit:
        raise CatganError(f"seeds {text[:80]!r} ask for more than {limit} images at once")
    return seeds


def format_seeds(seeds: Sequence[int]) -> str:
    """The inverse of parse_seeds for display: [0, 1, 2, 5] -> "0-2,5"."""
    parts: list[str] = []
    i = 0
    while i < len(seeds):
        j = i
        while j + 1 < len(seeds) and seeds[j + 1] == seeds[j] + 1:
            j += 1
        parts.append(str(seeds[i]) if i == j else f"{seeds[i]}-{seeds[j]}")
        i = j + 1
    return ",".join(parts)


def latents_from_seeds(
    cfg: Any, seeds: Sequence[int], device: str | torch.device | None = None
) -> torch.Tensor:
    """z (N, z_dim): row i is seed i's latent, drawn alone on the CPU so it never depends on the others."""
    if len(seeds) == 0:
        raise CatganError("no seeds given: need at least one seed")
    rows = []
    for seed in seeds:
        if not 0 <= int(seed) < SEED_LIMIT:
            raise CatganError(f"seed {seed} is out of range: seeds are in [0, {SEED_LIMIT - 1}]")
        gen = torch.Generator().manual_seed(int(seed))
        rows.append(sample_latents(cfg, 1, gen))  # (1, z_dim), CPU
    z = torch.cat(rows)  # (N, z_dim)
    return z if device is None else z.to(device)


def check_truncation(truncation: float) -> None:
    """Refuse a truncation psi outside [0, 1] (1 = none; z * psi moves each latent toward the mean)."""
    if not 0.0 <= truncation <= 1.0:
        raise CatganError(f"truncation must be in [0, 1] (1 = none), got {truncation}")


def slerp(a: torch.Tensor, b: torch.Tensor, t: float | torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Spherical interpolation from a (t=0) to b (t=1) along the great circle between them.

    a, b: (..., D); t: a number or a tensor broadcastable to a's leading dims -> (..., D).
    The endpoints are returned exactly; equal-norm inputs keep that norm all the way (a Gaussian
    latent stays on the shell where it has mass, which a straight line leaves). Nearly parallel or
    antiparallel inputs (sin(angle) < eps) fall back to a straight line.
    """
    t = torch.as_tensor(t, dtype=a.dtype, device=a.device)
    t = t.unsqueeze(-1)  # (..., 1)
    na, nb = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    cos = ((a / na.clamp_min(1e-12)) * (b / nb.clamp_min(1e-12))).sum(-1, keepdim=True).clamp(-1, 1)
    omega = torch.arccos(cos)  # (..., 1) angle between a and b
    so = torch.sin(omega)
    parallel = so.abs() < eps
    safe = torch.where(parallel, torch.ones_like(so), so)
    wa = torch.where(parallel, 1 - t, torch.sin((1 - t) * omega) / safe)
    wb = torch.where(parallel, t, torch.sin(t * omega) / safe)
    return wa * a + wb * b


def keyframe_indices(n_seeds: int, frames: int, loop: bool = False) -> list[int]:
    """Which frames are exactly the seeds' latents: spread evenly, first at 0, last at frames-1
    (or, with loop, the path returns to the first seed one frame after the end)."""
    segments = n_seeds if loop else n_seeds - 1
    span = frames if loop else frames - 1
    return [round(i * span / segments) for i in range(n_seeds)]


def check_interpolation(n_seeds: int, frames: int) -> None:
    """Refuse a walk that cannot pass through every seed (called before any work is done)."""
    if n_seeds < 2:
        raise CatganError(f"interpolation needs at least 2 seeds, got {n_seeds}: e.g. --seeds 3,7,11")
    if frames < n_seeds:
        raise CatganError(f"--frames {frames} is fewer than the {n_seeds} seeds; use at least {n_seeds}")


def interpolation_latents(
    cfg: Any,
    seeds: Sequence[int],
    frames: int,
    loop: bool = False,
    spherical: bool = True,
    truncation: float = 1.0,
) -> torch.Tensor:
    """z (frames, z_dim) walking through the seeds' latents in order, slerp between neighbours.

    Frame keyframe_indices(...)[i] is exactly seed i's latent (times `truncation`). With loop=True the
    walk continues from the last seed back toward the first, so a looping GIF has no jump.
    """
    check_interpolation(len(seeds), frames)
    check_truncation(truncation)
    keys = latents_from_seeds(cfg, seeds) * truncation  # (K, z_dim)
    idx = keyframe_indices(len(seeds), frames, loop)
    ends = idx[1:] + ([frames] if loop else [])  # each segment runs from one key frame to the next
    starts_z = keys
    ends_z = torch.cat([keys[1:], keys[:1]]) if loop else keys[1:]
    out = torch.empty(frames, cfg.z_dim)
    for i, (start, end) in enumerate(zip(idx, ends, strict=False)):
        steps = torch.arange(start, end) - start
        t = steps.to(torch.float32) / (end - start)  # [0, 1) over the segment
        a, b = starts_z[i].expand(len(t), -1), ends_z[i].expand(len(t), -1)
        out[start:end] = slerp(a, b, t) if spherical else a + t[:, None] * (b - a)
    if not loop:
        out[-1] = keys[-1]
    return out
