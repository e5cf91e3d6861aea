"""Generator and Discriminator built from a ModelConfig, for 16-256 px.

Two families share one builder:
- "thesis": the original system. G: dense z -> (C, 8, 8) + BN + LeakyReLU(0.2), then 5x5 stride-2
  transposed convs halving the channels, each + BN + LeakyReLU(0.2), then a 5x5 stride-1 transposed
  conv to RGB + tanh. D: 5x5 stride-2 convs doubling the channels, with one extra stride-1 conv before
  the last one, each + BN + LeakyReLU(0.2), then dense -> 1 logit.
- "dcgan": Radford et al. G: 4x4 transposed conv from (z, 1, 1) to (C, 4, 4), 4x4 stride-2 transposed
  convs + BN + ReLU, the last one straight to RGB + tanh. D: 4x4 stride-2 convs + BN (none on the first)
  + LeakyReLU(0.2), then a 4x4 valid conv -> 1 logit.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from catgan.config import ModelConfig


def _start_size(cfg: ModelConfig) -> int:
    """Spatial size of G's first feature map."""
    if cfg.arch == "thesis":
        return 8 if cfg.image_size >= 64 else 4
    return 4


def _num_up(cfg: ModelConfig) -> int:
    """How many stride-2 upsamplings G needs from its first map to the image."""
    return int(math.log2(cfg.image_size // _start_size(cfg)))


def g_channels(cfg: ModelConfig) -> list[int]:
    """G's hidden channels, first to last; thesis-128: [1024, 512, 256, 128, 64]."""
    n_hidden = _num_up(cfg) + (1 if cfg.arch == "thesis" else 0)
    return [min(cfg.g_base * 2 ** (n_hidden - 1 - i), cfg.max_channels) for i in range(n_hidden)]


def d_channels(cfg: ModelConfig) -> list[int]:
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

    def __init__(self, cfg: ModelConfig):
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


class Discriminator(nn.Module):
    """images (B, 3, S, S) in [-1, 1] -> logits (B,)."""

    def __init__(self, cfg: ModelConfig):
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


def sample_latents(
    cfg: ModelConfig, n: int, generator: torch.Generator | None = None, device=None
) -> torch.Tensor:
    """z (n, z_dim) from the config's latent distribution: U(-1, 1) (the original) or N(0, 1)."""
    if cfg.latent == "uniform":
        return torch.rand(n, cfg.z_dim, generator=generator, device=device) * 2 - 1
    return torch.randn(n, cfg.z_dim, generator=generator, device=device)


@torch.no_grad()
def standing_stats(G: nn.Module, cfg: ModelConfig, batches: int = 100, batch: int = 64, seed: int = 0) -> int:
    """Re-estimate G's BatchNorm running statistics for its own weights, in place (BigGAN's "standing
    statistics"): each layer's mean and variance averaged over `batches` batches of latents drawn with
    `seed`. Returns how many BatchNorm layers were re-estimated; G is left in eval mode.

    Why: an EMA generator's BatchNorm buffers are copies of the live G's (train.update_ema), i.e. the
    statistics of other weights; re-estimating them for the averaged weights draws better cats.
    """
    layers = [m for m in G.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if batches < 1 or not layers:
        return 0
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average: every batch counts the same
    rng = torch.Generator().manual_seed(seed)
    device = next(G.parameters()).device
    G.train()
    try:
        for _ in range(batches):
            G(sample_latents(cfg, batch, rng).to(device))  # (batch, z) -> updates the running stats
    finally:
        G.eval()
        for m, momentum in zip(layers, momenta, strict=True):
            m.momentum = momentum
    return len(layers)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def forward_flops(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Analytic FLOPs (2 x multiply-adds) of one forward pass for one input, over conv/linear layers."""
    flops = 0

    def hook(m: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal flops
        x = inputs[0]
        if isinstance(m, nn.ConvTranspose2d):  # every input pixel scatters a k x k x C_out patch
            flops += 2 * x[0].numel() * m.out_channels * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Conv2d):  # every output pixel gathers a k x k x C_in patch
            flops += 2 * out[0].numel() * m.in_channels * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            flops += 2 * m.in_features * m.out_features

    handles = [
        m.register_forward_hook(hook)
        for m in module.modules()
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))
    ]
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(torch.zeros(1, *input_shape, device=next(module.parameters()).device))
    finally:
        module.train(was_training)
        for h in handles:
            h.remove()
    return flops


def model_info(cfg: ModelConfig) -> dict[str, float]:
    """Parameter counts and analytic GFLOP per image: G forward, D forward and one training step.

    A step is one D update on a real and a fake batch plus one G update that reuses the same fake batch:
    3 x G (forward + backward ~ 2x forward) + 9 x D (three forward passes, each with a 2x backward).
    """
    g, d = Generator(cfg), Discriminator(cfg)
    g_f = forward_flops(g, (cfg.z_dim,))
    d_f = forward_flops(d, (3, cfg.image_size, cfg.image_size))
    return {
        "g_params": count_params(g),
        "d_params": count_params(d),
        "g_gflop": g_f / 1e9,
        "d_gflop": d_f / 1e9,
        "step_gflop": (3 * g_f + 9 * d_f) / 1e9,
    }
