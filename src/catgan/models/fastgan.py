"""The FastGAN generator (Liu et al., ICLR 2021, "Towards Faster and Stabilized GAN Training for
High-fidelity Few-shot Image Synthesis"), at 64, 128 or 256 px.

z (B, z_dim) -> 4x4 transposed conv + BatchNorm + GLU (B, 16 ngf, 4, 4) -> upsampling blocks to the image
size, each nearest x2 + 3x3 conv to twice the width + BatchNorm + GLU (the gate halves the width again);
every other block ("comp") has a second conv and optional noise injection. Skip-layer excitation (SLE)
lets a small map gate a large one channel-wise: 4 -> 64, 8 -> 128, 16 -> 256 px, a cheap long-range path
that the paper found to speed up and stabilise training on small datasets. Then a 3x3 conv to RGB + tanh.

Widths per resolution follow the paper's table (ngf x 16, 8, 4, 2, 2, 1, 0.5 from 4 to 256 px), and every
conv has spectral norm (as in the paper's G) unless `spectral_norm` is off. With `noise` on, each comp
block adds per-pixel Gaussian noise scaled by a learnt (zero-initialised) weight; then a seed fixes z but
not the noise, so sampling by seed is exact only with noise off (the default).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from catgan.errors import CatganError
from catgan.models import base

SIZES = (64, 128, 256)
WIDTH = {4: 16, 8: 8, 16: 4, 32: 2, 64: 2, 128: 1, 256: 0.5}  # x ngf (the paper's nfc table)
COMP = {8, 32, 128}  # resolutions built by the two-conv ("comp") block, as in the paper
SLE = {64: 4, 128: 8, 256: 16}  # large map <- the small map that gates it


@dataclass(frozen=True)
class FastGANConfig:
    family: Literal["fastgan"] = "fastgan"
    image_size: int = 128
    z_dim: int = 256
    latent: Literal["uniform", "normal"] = "normal"
    ngf: int = 64  # base width: 1024 channels at 4 x 4, 64 at 128 x 128
    noise: bool = False  # per-pixel noise injection in the two-conv blocks
    spectral_norm: bool = True

    def __post_init__(self) -> None:
        base.check_fields(self)
        base.check_positive(self, "z_dim", "ngf", limit=8192)
        if self.image_size not in SIZES:
            raise CatganError(f"FastGANConfig.image_size must be one of {SIZES}, got {self.image_size}")
        if self.ngf % 2:
            raise CatganError(
                f"FastGANConfig.ngf must be even (256 px uses ngf / 2 channels), got {self.ngf}"
            )

    def width(self, size: int) -> int:
        return int(WIDTH[size] * self.ngf)

    def estimated_params(self) -> int:
        """Counted on the meta device: the real module's shapes, no memory allocated (spectral norm adds
        no parameters, only buffers, and is slow on meta tensors, so the count is taken without it)."""
        with torch.device("meta"):
            return base.count_params(Generator(dataclasses.replace(self, spectral_norm=False)))


class NoiseInjection(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))  # starts as a no-op; G learns how much noise helps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        return x + self.weight * torch.randn(b, 1, h, w, device=x.device, dtype=x.dtype)


def _conv(sn: bool, *args, **kwargs) -> nn.Module:
    conv = nn.Conv2d(*args, **kwargs)
    return spectral_norm(conv) if sn else conv


def up_block(c_in: int, c_out: int, comp: bool, cfg: FastGANConfig) -> nn.Sequential:
    """(B, c_in, s, s) -> (B, c_out, 2s, 2s): nearest x2, [3x3 conv, (noise), BN, GLU] once or twice."""
    layers: list[nn.Module] = [nn.Upsample(scale_factor=2, mode="nearest")]
    for c in (c_in, c_out)[: 2 if comp else 1]:
        layers.append(_conv(cfg.spectral_norm, c, 2 * c_out, 3, 1, 1, bias=False))  # (B, 2 c_out, 2s, 2s)
        if comp and cfg.noise:
            layers.append(NoiseInjection())
        layers += [nn.BatchNorm2d(2 * c_out), nn.GLU(dim=1)]  # GLU: first half * sigmoid(second half)
    return nn.Sequential(*layers)


class SkipExcitation(nn.Module):
    """SLE: small (B, c_small, s, s) -> channel gates (B, c_big, 1, 1) in (0, 1) that scale the big map."""

    def __init__(self, c_small: int, c_big: int, sn: bool):
        super().__init__()
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(4),  # (B, c_small, 4, 4)
            _conv(sn, c_small, c_big, 4, 1, 0, bias=False),  # (B, c_big, 1, 1)
            nn.SiLU(),  # swish, as in the paper
            _conv(sn, c_big, c_big, 1, 1, 0, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, small: torch.Tensor, big: torch.Tensor) -> torch.Tensor:
        return big * self.gate(small)


class Generator(nn.Module):
    """z (B, z_dim) -> images (B, 3, S, S) in [-1, 1]."""

    def __init__(self, cfg: FastGANConfig):
        super().__init__()
        self.cfg = cfg
        c4 = cfg.width(4)
        first = nn.ConvTranspose2d(cfg.z_dim, 2 * c4, 4, 1, 0, bias=False)  # (B, 2 c4, 4, 4)
        self.init = nn.Sequential(
            spectral_norm(first) if cfg.spectral_norm else first, nn.BatchNorm2d(2 * c4), nn.GLU(dim=1)
        )
        self.sizes = [2**i for i in range(3, cfg.image_size.bit_length())]  # 8, 16, ..., S
        self.ups = nn.ModuleDict(
            {str(s): up_block(cfg.width(s // 2), cfg.width(s), s in COMP, cfg) for s in self.sizes}
        )
        self.sle = nn.ModuleDict(
            {
                str(s): SkipExcitation(cfg.width(SLE[s]), cfg.width(s), cfg.spectral_norm)
                for s in SLE
                if s in self.sizes
            }
        )
        self.to_rgb = _conv(cfg.spectral_norm, cfg.width(cfg.image_size), 3, 3, 1, 1, bias=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        feats = {4: self.init(z.view(z.shape[0], -1, 1, 1))}  # (B, 16 ngf, 4, 4)
        for s in self.sizes:
            h = self.ups[str(s)](feats[s // 2])  # (B, width(s), s, s)
            if str(s) in self.sle:
                h = self.sle[str(s)](feats[SLE[s]], h)
            feats[s] = h
        return torch.tanh(self.to_rgb(feats[self.cfg.image_size]))  # (B, 3, S, S)
