"""A learned 2x upsampler and its patch discriminator: a 64 px cat -> the same cat at 128 px.

The 128 px model a CPU can train well is a cascade: the bundled 64 px generator draws the cat, and this
small fully-convolutional network adds the detail a 128 px face has. It predicts a residual on top of a
bicubic upsampling, so an untrained one is already bicubic upsampling. It is trained on pairs of real
faces (the prepared 64 px image -> the prepared 128 px image of the same face) with an L1 loss and an
adversarial loss from a patch discriminator (SRGAN / ESRGAN without their VGG loss: no download).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from catgan.config import ModelConfig
from catgan.models.dcgan import Generator


class _ResBlock(nn.Module):
    """x (B, C, H, W) -> x + conv(relu(conv(x))) (B, C, H, W)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(channels, channels, 3, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Upsampler(nn.Module):
    """images (B, 3, S, S) in [-1, 1] -> (B, 3, 2S, 2S): bicubic upsampling + a learned residual."""

    def __init__(self, channels: int = 32, blocks: int = 4):
        super().__init__()
        self.head = nn.Conv2d(3, channels, 3, 1, 1)  # (B, C, S, S)
        self.blocks = nn.Sequential(*[_ResBlock(channels) for _ in range(blocks)])  # (B, C, S, S)
        self.up = nn.Sequential(  # nearest 2x then conv: no checkerboard of transposed convs
            nn.Upsample(scale_factor=2, mode="nearest"),  # (B, C, 2S, 2S)
            nn.Conv2d(channels, channels, 3, 1, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(channels, 3, 3, 1, 1),  # (B, 3, 2S, 2S)
        )
        nn.init.zeros_(self.up[-1].weight)  # starts as plain bicubic upsampling
        nn.init.zeros_(self.up[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)  # (B, 3, 2S, 2S)
        h = self.head(x)
        return base + self.up(h + self.blocks(h))


def base_config(cfg: ModelConfig) -> ModelConfig:
    """The GAN part of a cascade: the same config at image_size / 2, without an upsampler."""
    return dataclasses.replace(cfg, image_size=cfg.image_size // 2, upsampler=0)


class Cascade(nn.Module):
    """z (B, z_dim) -> images (B, 3, S, S) in [-1, 1]: `base` draws (B, 3, S/2, S/2), `up` doubles it."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.base = Generator(base_config(cfg))
        self.up = Upsampler(cfg.upsampler, cfg.upsampler_blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.up(self.base(z)).clamp(-1.0, 1.0)


def build_generator(cfg: ModelConfig) -> nn.Module:
    """The generator a ModelConfig describes: a Generator, or a Cascade when cfg.upsampler > 0."""
    return Cascade(cfg) if cfg.upsampler else Generator(cfg)


class PatchDiscriminator(nn.Module):
    """images (B, 3, S, S) -> patch logits (B, S/16 * S/16): is each patch a real face's detail?

    4x4 stride-2 convs doubling from `channels`, LeakyReLU(0.2), spectral norm on every layer.
    """

    def __init__(self, channels: int = 32, layers: int = 4):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        body: list[nn.Module] = []
        c_in = 3
        for i in range(layers):
            c_out = channels * 2**i
            body += [sn(nn.Conv2d(c_in, c_out, 4, 2, 1)), nn.LeakyReLU(0.2)]
            c_in = c_out
        body.append(sn(nn.Conv2d(c_in, 1, 3, 1, 1)))  # (B, 1, S/2^layers, S/2^layers)
        self.body = nn.Sequential(*body)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).flatten(1)  # (B, P)
