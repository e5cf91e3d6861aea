"""Differentiable augmentation (DiffAugment, Zhao et al. 2020) for D's inputs, real and fake alike.

Every op is differentiable in the images, so G learns through it, and each image draws its own
random parameters from the given torch.Generator (reproducible, resumable).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _rand(n: int, x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """(n, 1, 1, 1) uniform [0, 1) on x's device."""
    return torch.rand(n, 1, 1, 1, generator=gen, device=x.device, dtype=x.dtype)


def color(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """Random brightness (+-0.5), saturation (x0..2) and contrast (x0.5..1.5) on (B, 3, H, W) in [-1, 1]."""
    b = x.shape[0]
    x = x + (_rand(b, x, gen) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand(b, x, gen) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(b, x, gen) + 0.5) + mean


def translation(x: torch.Tensor, gen: torch.Generator | None = None, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to ratio * size pixels, filling with zeros (mid-grey)."""
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (b, 1, 1), generator=gen, device=x.device)
    dx = torch.randint(-sw, sw + 1, (b, 1, 1), generator=gen, device=x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    gy = torch.clamp(gy[None] + dy + 1, 0, h + 1)  # (B, H, W) indices into the 1-px zero-padded image
    gx = torch.clamp(gx[None] + dx + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])  # (B, C, H + 2, W + 2)
    flat = padded.permute(0, 2, 3, 1).reshape(b, (h + 2) * (w + 2), -1)  # (B, (H+2)(W+2), C)
    idx = (gy * (w + 2) + gx).reshape(b, -1, 1).expand(-1, -1, x.shape[1])
    return flat.gather(1, idx).reshape(b, h, w, -1).permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, gen: torch.Generator | None = None, ratio: float = 0.5) -> torch.Tensor:
    """Zero a random square of ratio * size per image."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h, (b, 1, 1), generator=gen, device=x.device)  # centre of the square
    ox = torch.randint(0, w, (b, 1, 1), generator=gen, device=x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    inside = ((gy[None] >= oy - ch // 2) & (gy[None] < oy - ch // 2 + ch)) & (
        (gx[None] >= ox - cw // 2) & (gx[None] < ox - cw // 2 + cw)
    )  # (B, H, W)
    return x * (~inside).unsqueeze(1).to(x.dtype)


OPS = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(x: torch.Tensor, policy: str, gen: torch.Generator | None = None) -> torch.Tensor:
    """Apply the comma-separated policy in order ("color,translation,cutout"); "" returns x unchanged."""
    for name in filter(None, policy.split(",")):
        x = OPS[name](x, gen)
    return x.contiguous()
