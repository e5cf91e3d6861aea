"""A perceptual distance from frozen networks that can be had offline (no LPIPS or VGG weights can).

LPIPS' recipe without its learned weights: each stage's feature vectors are scaled to unit length per
pixel, the squared difference is summed over channels, averaged over pixels (or over the pixels a mask
keeps), and the stages are averaged. Networks:
- "lite0": the ImageNet EfficientNet-Lite0 of catgan.backbones, its four stages (1/4 .. 1/32), smaller
  faces upscaled to MIN_SIDE px first (the `projected` extra). At 64 px its stages are 16 .. 2 px; upscaled
  to 128 px Lite0's forward + backward took 105 ms, nearly twice G's 58 ms (docs/projection.md).
- "selfsup": the SimCLR encoder trained on cat faces only (catgan.metrics.selfsup; always shipped), its
  stem and three blocks (1/2 .. 1/16 of 64 px).
"auto" takes lite0 where its weights are installed, else selfsup. The unused one is the independent second
feature space that docs/projection.md scores projections in.

Because the stages are unit-normalised and averaged, distance(x, y) == ||embed(x) - embed(y)||^2: a
search over many images (the best of 10,000 samples) is one matrix product.
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F
from torch import nn

from catgan.errors import CatganError

MIN_SIDE = 64
NAMES = ("auto", "lite0", "selfsup")


def resolve_name(name: str) -> str:
    """'auto' -> 'lite0' when the EfficientNet-Lite0 weights are installed, else 'selfsup'."""
    if name not in NAMES:
        raise CatganError(f"perceptual network must be one of {', '.join(NAMES)}, got {name!r}")
    if name != "auto":
        return name
    from catgan.backbones import WEIGHTS_PACKAGE

    return "lite0" if importlib.util.find_spec(WEIGHTS_PACKAGE) is not None else "selfsup"


class PerceptualDistance(nn.Module):
    """Frozen: images in [-1, 1] (B, 3, H, W) -> per-image distances (B,)."""

    def __init__(self, name: str = "auto"):
        super().__init__()
        self.name = resolve_name(name)
        if self.name == "lite0":
            from catgan.backbones import efficientnet_lite0

            self.net = efficientnet_lite0()
        else:
            from catgan.metrics.selfsup import SelfSupExtractor

            self.net = SelfSupExtractor.load().encoder
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> PerceptualDistance:
        return super().train(False)  # always in eval mode: BatchNorm statistics are fixed

    def maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x (B, 3, H, W) in [-1, 1] -> per-stage feature maps (B, C_i, H_i, W_i), unit length per pixel."""
        if self.name == "lite0":
            if x.shape[-1] < MIN_SIDE:
                x = F.interpolate(x, size=(MIN_SIDE, MIN_SIDE), mode="bilinear", align_corners=False)
            feats = self.net.stages(x)  # 4 maps at 1/4 .. 1/32
        else:
            from catgan.metrics.selfsup import normalise

            size = self.net.cfg.input_size
            h = (x + 1) / 2  # [0, 1]
            if h.shape[-1] != size:
                h = F.interpolate(h, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            h = F.relu(self.net.stem(normalise(h)))  # (B, 32, 32, 32) at 64 px
            feats = [h]
            for block in self.net.blocks:
                h = block(h)
                feats.append(h)  # (B, 64, 16, 16), (B, 128, 8, 8), (B, 256, 4, 4)
        return [f / (f.pow(2).sum(1, keepdim=True) + 1e-10).sqrt() for f in feats]

    def distance(
        self, x: torch.Tensor, y: torch.Tensor | list[torch.Tensor], mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B,) distances between x and y (images, or y's maps() computed once), each in [0, 4].

        mask (B or 1, 1, H, W), 1 = the pixel counts: each stage's per-pixel distances are averaged with
        the mask area-resized to that stage's grid as weights."""
        fx = self.maps(x)
        fy = self.maps(y) if isinstance(y, torch.Tensor) else y
        total = x.new_zeros(x.shape[0])
        for a, b in zip(fx, fy, strict=True):
            d = (a - b).pow(2).sum(1, keepdim=True)  # (B, 1, H_i, W_i)
            if mask is None:
                total = total + d.mean(dim=(1, 2, 3))
            else:
                m = F.adaptive_avg_pool2d(mask.to(d.dtype), d.shape[-2:])
                total = total + (d * m).sum(dim=(1, 2, 3)) / m.sum(dim=(1, 2, 3)).clamp_min(1e-8)
        return total / len(fx)

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) with ||embed(x) - embed(y)||^2 == distance(x, y) (no mask)."""
        maps = self.maps(x)
        return torch.cat([m.flatten(1) / (len(maps) * m[0, 0].numel()) ** 0.5 for m in maps], dim=1)
