"""Where code runs: device choice and CPU threads. Pure functions, no global state changed on import."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from catgan.errors import CatganError

if TYPE_CHECKING:
    import torch  # imported where used, so data-only commands (prepare) can use cpu_count without it


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """ "auto" -> cuda when available, else cpu. "cuda" without a GPU is an error, not a silent fallback.
    A torch.device is taken as it is."""
    import torch

    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CatganError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
        try:
            device = torch.device(name)
        except RuntimeError:  # "cudax", "cuda:-1", "cuda:a"
            raise CatganError(f"--device must be auto, cpu or cuda[:N], got {name!r}") from None
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise CatganError(
                f"--device {name}: this machine has {count} CUDA device(s): cuda:0..{count - 1}"
            )
        return device
    if name == "cpu":
        return torch.device("cpu")
    raise CatganError(f"--device must be auto, cpu or cuda[:N], got {name!r}")


def cpu_count() -> int:
    """Cores this process may use (respects affinity masks and cgroups where the OS reports them)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def cpu_has_native_bf16() -> bool:
    """True on CPUs with bf16 matrix instructions (AMX, AVX-512 BF16), where bf16 autocast is fast."""
    import torch

    if "AMX" in torch.backends.cpu.get_cpu_capability().upper():
        return True
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no cheap way to tell, so stay exact
        return False
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []
    )
    return "amx_bf16" in flags or "avx512_bf16" in flags
