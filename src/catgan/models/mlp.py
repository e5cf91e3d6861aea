"""A tiny test family: a 2-layer MLP generator and discriminator over flattened pixels.

It exists to show (and test) that a family is one module plus one registry line: it trains through
`catgan train`, exports, and draws through `catgan.load` like the DCGAN family.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from catgan.models import base

Latent = Literal["uniform", "normal"]


def _check(cfg: MLPGeneratorConfig | MLPDiscriminatorConfig, *names: str) -> None:
    base.check_fields(cfg)
    base.check_positive(cfg, "image_size", limit=256)
    base.check_positive(cfg, *names)


@dataclass(frozen=True)
class MLPGeneratorConfig:
    family: Literal["mlp"] = "mlp"
    image_size: int = 16
    z_dim: int = 16
    latent: Latent = "normal"
    hidden: int = 64

    def __post_init__(self) -> None:
        _check(self, "z_dim", "hidden")

    def estimated_params(self) -> int:
        pixels = 3 * self.image_size**2
        return (self.z_dim + 1) * self.hidden + (self.hidden + 1) * pixels


@dataclass(frozen=True)
class MLPDiscriminatorConfig:
    family: Literal["mlp"] = "mlp"
    image_size: int = 16
    hidden: int = 64

    def __post_init__(self) -> None:
        _check(self, "hidden")

    def estimated_params(self) -> int:
        return (3 * self.image_size**2 + 1) * self.hidden + self.hidden + 1


class Generator(nn.Module):
    """z (B, z_dim) -> (B, 3, S, S) in [-1, 1]."""

    def __init__(self, cfg: MLPGeneratorConfig):
        super().__init__()
        self.cfg = cfg
        s = cfg.image_size
        self.net = nn.Sequential(
            nn.Linear(cfg.z_dim, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, 3 * s * s)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        s = self.cfg.image_size
        return torch.tanh(self.net(z)).view(-1, 3, s, s)  # (B, 3, S, S)


class Discriminator(base.Discriminator):
    """(B, 3, S, S) -> logits (B,)."""

    def __init__(self, cfg: MLPDiscriminatorConfig):
        super().__init__()
        self.cfg = cfg
        pixels = 3 * cfg.image_size**2
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(pixels, cfg.hidden), nn.LeakyReLU(0.2), nn.Linear(cfg.hidden, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).view(-1)  # (B,)
