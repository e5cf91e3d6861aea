"""The DCGAN family: Generator and Discriminator for 16-256 px, in two variants (`arch`).

- "thesis": the original system. G: dense z -> (C, 8, 8) + BN + LeakyReLU(0.2), then 5x5 stride-2
  transposed convs halving the channels, each + BN + LeakyReLU(0.2), then a 5x5 stride-1 transposed
  conv to RGB + tanh. D: 5x5 stride-2 convs doubling the channels, with one extra stride-1 conv before
  the last one, each + BN + LeakyReLU(0.2), then dense -> 1 logit.
- "dcgan": Radford et al. G: 4x4 transposed conv from (z, 1, 1) to (C, 4, 4), 4x4 stride-2 transposed
  convs + BN + ReLU, the last one straight to RGB + tanh. D: 4x4 stride-2 convs + BN (none on the first)
  + LeakyReLU(0.2), then a 4x4 valid conv -> 1 logit.
Channel widths double from `g_base` / `d_base` at the image end up to `max_channels`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from catgan.errors import CatganError
from catgan.models import base

Arch = Literal["thesis", "dcgan"]
Latent = Literal["uniform", "normal"]
IMAGE_SIZES: tuple[int, ...] = (16, 32, 64, 128, 256)


def _check_common(cfg: DCGANGeneratorConfig | DCGANDiscriminatorConfig, *widths: str) -> None:
    base.check_fields(cfg)
    if cfg.image_size not in IMAGE_SIZES:
        raise CatganError(
            f"{type(cfg).__name__}.image_size must be one of {IMAGE_SIZES}, got {cfg.image_size}"
        )
    base.check_positive(cfg, *widths, "max_channels")
    base.check_positive(cfg, "kernel", limit=15)  # arch dcgan ignores it: its kernels are 4x4
    if not 0 < cfg.init_std <= 1:
        raise CatganError(f"{type(cfg).__name__}.init_std must be in (0, 1], got {cfg.init_std}")


@dataclass(frozen=True)
class DCGANGeneratorConfig:
    """G of the DCGAN family; `Generator(cfg)` rebuilds it with no other input."""

    family: Literal["dcgan"] = "dcgan"
    image_size: int = 64
    z_dim: int = 100
    latent: Latent = "uniform"
    arch: Arch = "dcgan"
    g_base: int = 64  # channels of G's last hidden layer (ngf)
    max_channels: int = 1024
    kernel: int = 4
    init_std: float = 0.02

    def __post_init__(self) -> None:
        _check_common(self, "g_base", "z_dim")

    def estimated_params(self) -> int:
        """G's exact parameter count, from the config alone (no tensor is built)."""
        ch, k, s0 = g_channels(self), self.kernel, _start_size(self)
        if self.arch == "thesis":
            n = (self.z_dim + 1) * ch[0] * s0 * s0 + 2 * ch[0]  # dense stem (+ bias) and its BatchNorm
            n += sum(a * b * k * k + 2 * b for a, b in zip(ch[:-1], ch[1:], strict=True))
            return n + ch[-1] * 3 * k * k + 3  # the stride-1 conv to RGB has a bias
        n = self.z_dim * ch[0] * s0 * s0 + 2 * ch[0]
        n += sum(a * b * 16 + 2 * b for a, b in zip(ch[:-1], ch[1:], strict=True))
        return n + ch[-1] * 3 * 16


@dataclass(frozen=True)
class DCGANDiscriminatorConfig:
    """D of the DCGAN family; `Discriminator(cfg)` rebuilds it with no other input."""

    family: Literal["dcgan"] = "dcgan"
    image_size: int = 64
    arch: Arch = "dcgan"
    d_base: int = 64  # channels of D's first layer (ndf)
    max_channels: int = 1024
    kernel: int = 4
    d_batchnorm: bool = True
    spectral_norm: bool = False  # spectral norm on every D layer (BatchNorm is then usually off)
    init_std: float = 0.02

    def __post_init__(self) -> None:
        _check_common(self, "d_base")

    def estimated_params(self) -> int:
        """D's exact parameter count, from the config alone."""
        ch, k = d_channels(self), self.kernel
        n, c_in = 0, 3
        for i, c in enumerate(ch):
            n += c_in * c * k * k + (0 if self.d_batchnorm else c)
            if self.d_batchnorm and not (self.arch == "dcgan" and i == 0):
                n += 2 * c
            c_in = c
        final = _d_final_size(self)
        return n + c_in * final * final + 1  # the head: dense (thesis) or a valid conv (dcgan), with bias


def _d_final_size(cfg: DCGANDiscriminatorConfig) -> int:
    """Spatial size of D's last feature map: the thesis D keeps one size once (its stride-1 conv)."""
    n = len(d_channels(cfg))
    return cfg.image_size >> (n - 1 if cfg.arch == "thesis" else n)


def _start_size(cfg: DCGANGeneratorConfig | DCGANDiscriminatorConfig) -> int:
    """Spatial size of G's first feature map."""
    if cfg.arch == "thesis":
        return 8 if cfg.image_size >= 64 else 4
    return 4


def _num_up(cfg: DCGANGeneratorConfig | DCGANDiscriminatorConfig) -> int:
    """How many stride-2 upsamplings G needs from its first map to the image."""
    return int(math.log2(cfg.image_size // _start_size(cfg)))


def g_channels(cfg: DCGANGeneratorConfig) -> list[int]:
    """G's hidden channels, first to last; thesis-128: [1024, 512, 256, 128, 64]."""
    n_hidden = _num_up(cfg) + (1 if cfg.arch == "thesis" else 0)
    return [min(cfg.g_base * 2 ** (n_hidden - 1 - i), cfg.max_channels) for i in range(n_hidden)]


def d_channels(cfg: DCGANDiscriminatorConfig) -> list[int]:
    """D's conv channels; thesis-128: [64, 128, 256, 512, 1024], dcgan-64: [64, 128, 256, 512]."""
    n_down = _num_up(cfg) if cfg.arch == "dcgan" else _num_up(cfg) + 1
    return [min(cfg.d_base * 2**i, cfg.max_channels) for i in range(n_down)]


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """DCGAN init: conv/linear weights ~ N(0, std), BatchNorm weight ~ N(1, std), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)


class Generator(nn.Module):
    """z (B, z_dim) -> images (B, 3, S, S) in [-1, 1]."""

    def __init__(self, cfg: DCGANGeneratorConfig):
        super().__init__()
        self.cfg = cfg
        ch = g_channels(cfg)
        k, s0 = cfg.kernel, _start_size(cfg)
        pad, out_pad = (k - 1) // 2, k % 2  # out = 2 * in for k = 4 (pad 1) and k = 5 (pad 2, out_pad 1)
        if cfg.arch == "thesis":
            self.stem = nn.Sequential(nn.Linear(cfg.z_dim, ch[0] * s0 * s0))  # (B, C0 * s0 * s0)
            self.stem_act = nn.Sequential(nn.BatchNorm2d(ch[0]), nn.LeakyReLU(0.2))  # (B, C0, s0, s0)
            act: type[nn.Module] = nn.LeakyReLU
            blocks = []
            for c_in, c_out in zip(ch[:-1], ch[1:], strict=True):  # each doubles H and W
                blocks += [
                    nn.ConvTranspose2d(c_in, c_out, k, 2, pad, out_pad, bias=False),
                    nn.BatchNorm2d(c_out),
                    act(0.2),
                ]
            # stride-1 to RGB at full size: (B, 3, S, S)
            blocks += [nn.ConvTranspose2d(ch[-1], 3, k, 1, (k - 1) // 2), nn.Tanh()]
        else:
            self.stem = nn.Sequential()  # z enters as (B, z, 1, 1)
            self.stem_act = nn.Sequential(
                nn.ConvTranspose2d(cfg.z_dim, ch[0], s0, 1, 0, bias=False),  # (B, C0, 4, 4)
                nn.BatchNorm2d(ch[0]),
                nn.ReLU(),
            )
            blocks = []
            for c_in, c_out in zip(ch[:-1], ch[1:], strict=True):
                blocks += [
                    nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False),
                    nn.BatchNorm2d(c_out),
                    nn.ReLU(),
                ]
            blocks += [nn.ConvTranspose2d(ch[-1], 3, 4, 2, 1, bias=False), nn.Tanh()]  # (B, 3, S, S)
        self.body = nn.Sequential(*blocks)
        self._c0, self._s0 = ch[0], s0
        init_weights(self, cfg.init_std)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.cfg.arch == "thesis":
            x = self.stem(z).view(-1, self._c0, self._s0, self._s0)  # (B, C0, 8, 8)
        else:
            x = z.view(z.shape[0], -1, 1, 1)  # (B, z, 1, 1)
        return self.body(self.stem_act(x))


class Discriminator(base.Discriminator):
    """images (B, 3, S, S) in [-1, 1] -> logits (B,)."""

    def __init__(self, cfg: DCGANDiscriminatorConfig):
        super().__init__()
        self.cfg = cfg
        ch = d_channels(cfg)
        k = cfg.kernel
        sn = spectral_norm if cfg.spectral_norm else (lambda m: m)
        layers: list[nn.Module] = []
        c_in, size = 3, cfg.image_size
        for i, c_out in enumerate(ch):
            # thesis: the second-to-last conv keeps the size (the original's 512-channel stride-1 layer)
            stride = 1 if cfg.arch == "thesis" and i == len(ch) - 2 else 2
            pad = (k - 1) // 2 if cfg.arch == "thesis" else 1
            layers.append(sn(nn.Conv2d(c_in, c_out, k, stride, pad, bias=not cfg.d_batchnorm)))
            first_dcgan = cfg.arch == "dcgan" and i == 0
            if cfg.d_batchnorm and not first_dcgan:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.LeakyReLU(0.2))
            c_in, size = c_out, size // stride
        self.features = nn.Sequential(*layers)  # (B, C_last, s, s): thesis-128 (B, 1024, 8, 8)
        if cfg.arch == "thesis":
            self.head: nn.Module = nn.Sequential(nn.Flatten(), sn(nn.Linear(c_in * size * size, 1)))
        else:
            self.head = nn.Sequential(sn(nn.Conv2d(c_in, 1, size, 1, 0)), nn.Flatten())  # (B, 1)
        init_weights(self, cfg.init_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).view(-1)  # (B,)
