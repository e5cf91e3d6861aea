"""Grow a trained generator to twice its image size, so that it first draws the same pictures.

    big_state = grow_generator(small_state, small_cfg, big_cfg)   # e.g. cats-64 -> cats-128-lite

A DCGAN G of S px is a trunk (every layer up to its last hidden map, (B, C, S/2, S/2)) and a to-RGB
transposed conv. The G of 2S px whose hidden channels are the small one's plus one more layer
(cats-64: 512-256-128-64, cats-128-lite: 512-256-128-64-32) takes the trunk as it is and sets its new
layers so that it draws the small G's pictures upsampled (function-preserving growth, as in Net2Net; the
role of PGGAN's fade-in), instead of the grey noise a fresh head draws:
- the new hidden conv (C -> C') computes the old to-RGB's pre-activation a (3 channels, S x S) twice,
  as +a and -a, in its first 6 channels; the other C' - 6 start as any fresh layer;
- its BatchNorm passes those 6 channels through: weight = their standard deviation and bias = their
  mean, measured on batches of latents with the trunk in train mode (as training runs it);
- after the ReLU, the new to-RGB conv adds ReLU(a) - ReLU(-a) = a with the taps (1, 3, 3, 1) / 4 of
  each axis, i.e. bilinear 2x upsampling, and starts at zero from the other C' - 6 channels.
So the grown G draws tanh(bilinear_2x(a)): the small G's pictures at twice the size, up to the order of
tanh and upsampling, and the outermost ring of pixels, whose pre-activation has weight 3/4 (corners 9/16).

Why: trained from a fresh head, the new layers draw grey noise that a new D rejects at once, and G's
first steps against it damage the trunk (measured in docs/benchmarks.md); a grown G starts where the
small one stood, and training only has to add the detail a bigger picture holds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from catgan.config import ModelConfig, diff
from catgan.errors import CatganError
from catgan.models.dcgan import Generator, g_channels, sample_latents

# each axis of a stride-2, 4-tap transposed conv: output 2i takes taps 1 (input i) and 3 (input i - 1),
# output 2i + 1 takes taps 2 (input i) and 0 (input i + 1): these are bilinear 2x (align_corners=False)
BILINEAR_TAPS = (0.25, 0.75, 0.75, 0.25)
# ModelConfig fields that only shape D (a grown G starts with a new D) or G's widths (g_channels checks)
_MAY_DIFFER = {"image_size", "g_base", "max_channels", "d_base", "d_batchnorm", "spectral_norm"}


def check_growable(small: ModelConfig, big: ModelConfig) -> None:
    """Raise one CatganError line unless a G of `small` can grow into one of `big` (see the module doc)."""
    fixed = [d for d in diff(small, big) if d.split(":")[0] not in _MAY_DIFFER]
    if fixed:
        changed = "; ".join(fixed)
        raise CatganError(f"cannot grow the generator: its model differs in more than size ({changed})")
    if small.arch != "dcgan":
        raise CatganError(f"cannot grow a {small.arch!r} generator: growing needs arch 'dcgan'")
    if big.image_size != 2 * small.image_size:
        raise CatganError(
            f"cannot grow a {small.image_size} px generator to {big.image_size} px: it grows by one layer, "
            f"to {2 * small.image_size} px"
        )
    have, want = g_channels(small), g_channels(big)
    if want[:-1] != have or want[-1] < 6:
        raise CatganError(
            f"cannot grow a G with layers {'-'.join(map(str, have))} into one with layers "
            f"{'-'.join(map(str, want))}: the bigger G's layers must be the smaller's plus one of at least "
            f"6 channels (g_base {small.g_base // 2}: cats-64 grows into cats-128-lite)"
        )


@torch.no_grad()
def grow_generator(
    state: dict[str, torch.Tensor],
    small: ModelConfig,
    big: ModelConfig,
    seed: int = 0,
    batches: int = 8,
    batch: int = 64,
) -> dict[str, torch.Tensor]:
    """The state dict of a `big` G grown from a `small` G's `state` (fp32; see the module doc).

    `seed` draws the new layers' other channels (DCGAN init) and the latents that measure the BatchNorm
    statistics (`batches` x `batch`); the caller's global random state is left as it was.
    """
    check_growable(small, big)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        G_small, G_big = Generator(small), Generator(big)
    G_small.load_state_dict({k: v.float() for k, v in state.items()})
    n = len(G_small.body) - 2  # the trunk's modules in body; then the to-RGB conv and the tanh
    G_big.stem_act.load_state_dict(G_small.stem_act.state_dict())
    G_big.body[:n].load_state_dict(G_small.body[:n].state_dict())
    to_rgb: nn.ConvTranspose2d = G_small.body[n]  # (C, 3, 4, 4) weight
    conv, bn, new_rgb = G_big.body[n], G_big.body[n + 1], G_big.body[n + 3]

    # the old to-RGB's pre-activation a, as training sees it: trunk in train mode (batch statistics)
    G_small.train()
    rng = torch.Generator().manual_seed(seed)
    pre = []
    for _ in range(batches):
        z = sample_latents(small, batch, rng).view(batch, -1, 1, 1)  # (B, z, 1, 1)
        h = G_small.body[:n](G_small.stem_act(z))  # (B, C, S/2, S/2)
        pre.append(F.conv_transpose2d(h, to_rgb.weight, stride=2, padding=1))  # (B, 3, S, S)
    a = torch.cat(pre)
    mean, var = a.mean((0, 2, 3)), a.var((0, 2, 3), unbiased=False)  # (3,), (3,)

    conv.weight[:, 0:3] = to_rgb.weight  # (C, C', 4, 4): channels 0-2 compute +a, 3-5 compute -a
    conv.weight[:, 3:6] = -to_rgb.weight
    bn.weight[0:3] = bn.weight[3:6] = (var + bn.eps).sqrt()  # BN(x) = x for these channels' statistics
    bn.bias[0:3], bn.bias[3:6] = mean, -mean
    bn.running_mean[0:3], bn.running_mean[3:6] = mean, -mean  # eval mode draws the same
    bn.running_var[0:3] = bn.running_var[3:6] = var
    taps = torch.tensor(BILINEAR_TAPS)
    new_rgb.weight.zero_()  # (C', 3, 4, 4): the other channels start silent
    for c in range(3):
        new_rgb.weight[c, c] = torch.outer(taps, taps)  # + ReLU(a)
        new_rgb.weight[3 + c, c] = -torch.outer(taps, taps)  # - ReLU(-a)
    return {k: v.detach().clone() for k, v in G_big.state_dict().items()}


def new_layers(G: Generator) -> nn.Sequential:
    """The layers a grown G added to the small G's trunk: hidden conv, BatchNorm, ReLU, to-RGB, tanh."""
    return G.body[-5:]


def trunk_parameters(G: Generator) -> list[nn.Parameter]:
    """A grown G's parameters that came from the small G (everything but new_layers)."""
    return [*G.stem_act.parameters(), *G.body[:-5].parameters()]
