"""What every model family shares: config field checks, the discriminator contract, parameter and FLOP counts.

A family is one module holding a generator config, a discriminator config (frozen dataclasses whose first
field is `family`) and the two networks, plus one line in catgan.models' registries. The configs check
their own fields (`check_fields`) and estimate their parameter count without building anything, so a
loader refuses an absurd file in one line before it allocates.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from catgan.errors import CatganError

# A loader refuses a network above this many parameters before building it (4 GB of float32 weights): a
# corrupt or hostile file with z_dim 1.5e6 must not reach the allocator.
MAX_PARAMS = 1_000_000_000


def check_fields(cfg: Any) -> None:
    """Each field of a config dataclass has its declared type: int (not bool, not 1.5), float (an int is
    fine; finite), bool, str, or one of a Literal's values. One CatganError naming the field otherwise."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value, kind = getattr(cfg, f.name), hints[f.name]
        where = f"{type(cfg).__name__}.{f.name}"
        if typing.get_origin(kind) is typing.Literal:
            if value not in typing.get_args(kind):
                raise CatganError(f"{where} must be one of {typing.get_args(kind)}, got {value!r}")
        elif kind is bool and not isinstance(value, bool):
            raise CatganError(f"{where} must be true or false, got {value!r}")
        elif kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise CatganError(f"{where} must be a whole number, got {value!r}")
        elif kind is float and (
            isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
        ):
            raise CatganError(f"{where} must be a finite number, got {value!r}")
        elif kind is str and not isinstance(value, str):
            raise CatganError(f"{where} must be a string, got {value!r}")


def check_positive(cfg: Any, *names: str, limit: int = 1 << 20) -> None:
    """Integer fields in [1, limit]: a width or a latent size outside it is a typo or a damaged file."""
    for name in names:
        value = getattr(cfg, name)
        if not 1 <= value <= limit:
            raise CatganError(f"{type(cfg).__name__}.{name} must be in [1, {limit}], got {value}")


def check_size(cfg: Any) -> None:
    """Refuse a config whose network would exceed MAX_PARAMS, from its estimated_params(), before building."""
    n = cfg.estimated_params()
    if n > MAX_PARAMS:
        raise CatganError(
            f"{type(cfg).__name__} would have {n:,} parameters (more than {MAX_PARAMS:,}): "
            f"check its widths and z_dim ({cfg})"
        )


def config_from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Rebuild a config dataclass from a JSON dict, refusing unknown keys and non-dicts in one line."""
    prefix = f"{where}: " if where else ""
    if not isinstance(data, dict):
        raise CatganError(f"{prefix}{cls.__name__} must be a JSON object, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise CatganError(
            f"{prefix}{cls.__name__} has no field(s) {unknown}: saved by a newer or foreign catgan?"
        )
    return cls(**data)


class Discriminator(nn.Module):
    """Base of every discriminator: it says which of its parts train.

    A family with a frozen pretrained part returns it from frozen_modules(); the optimizer then gets only
    trainable_parameters(), train() keeps the frozen part in eval mode, the G phase never turns its
    gradients on, and data-parallel BatchNorm conversion leaves it alone.
    """

    def frozen_modules(self) -> list[nn.Module]:
        return []

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What D's optimizer gets: every parameter outside the frozen part, which is checked to be frozen
        (a frozen network asked to train is refused, not silently half-trained)."""
        self.check_frozen()
        frozen = {id(p) for m in self.frozen_modules() for p in m.parameters()}
        return [p for p in self.parameters() if id(p) not in frozen]

    def check_frozen(self) -> None:
        """One CatganError if a parameter of the frozen part requires grad (someone turned it on)."""
        for m in self.frozen_modules():
            for name, p in m.named_parameters():
                if p.requires_grad:
                    raise CatganError(
                        f"{type(self).__name__}'s frozen part {type(m).__name__} has a parameter that "
                        f"requires grad ({name}): a pretrained or random frozen network cannot train; "
                        "optimise trainable_parameters() only"
                    )

    def step_flops(self, g: Flops, d: Flops) -> StepFlops:
        """FLOPs of one training step per image (training.step.GANStep, R1 aside) from the forward Flops
        of G (from a latent) and of this D (from an image):

        - G: one forward, reused by both phases; in the G phase one backward: every weight gradient and
          the input gradient of every layer but those fed by z alone.
        - D phase, on a real and a fake batch (neither needs a gradient): each pass a forward, the weight
          gradients of the trainable layers and the input gradients downstream of the first trainable
          weight only. So a frozen part in front of the heads runs forward alone.
        - G phase, on the fakes: a forward and the input gradient of every layer down to the image (a
          frozen part included), no weight gradient (D's trainable parameters are frozen for it).

        A family whose step differs (another input, a second pass) overrides this.
        """
        generator = g.total + g.trainable + g.trainable_grad_in + g.frozen_grad_in
        trainable = 2 * (2 * d.trainable + d.trainable_grad_in) + 2 * d.trainable
        frozen = 2 * (d.frozen + d.frozen_grad_in) + 2 * d.frozen
        return StepFlops(generator, trainable, frozen)

    def train(self, mode: bool = True) -> Discriminator:
        super().train(mode)
        for m in self.frozen_modules():
            m.eval()
        return self


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@dataclass(frozen=True)
class Flops:
    """Analytic FLOPs (2 x multiply-adds) of one forward pass for one image, over conv and linear layers
    (what torch.utils.flop_counter counts; BatchNorm, activations and resampling are left out), split by
    what a backward pass does in each layer. A conv's or linear layer's weight gradient and its input
    gradient each cost what its forward costs, and autograd computes only the ones some leaf needs."""

    trainable: int  # in layers whose weights train: a backward also computes their weight gradient
    frozen: int  # in the layers of frozen modules (pretrained, random projections): no weight gradient
    # of each: in layers whose input needs a gradient although the network's input does not (downstream
    # of a trainable weight), i.e. what a backward for the weights alone spends on input gradients
    trainable_grad_in: int = 0
    frozen_grad_in: int = 0

    @property
    def total(self) -> int:
        return self.trainable + self.frozen


@dataclass(frozen=True)
class StepFlops:
    """FLOPs of one training step per image, by where they are spent (forwards and backwards)."""

    generator: int
    trainable: int  # D's trainable layers
    frozen: int  # D's frozen part

    @property
    def total(self) -> int:
        return self.generator + self.trainable + self.frozen


def forward_flops(module: nn.Module, x: torch.Tensor, frozen: Sequence[nn.Module] = ()) -> Flops:
    """The Flops of one forward pass of `module` (in eval mode) over the single input x (1, ...), which
    needs no gradient; the layers of the `frozen` modules count apart."""
    in_frozen = {id(m) for f in frozen for m in f.modules()}
    counts = dict.fromkeys(("trainable", "frozen", "trainable_grad_in", "frozen_grad_in"), 0)
    handles = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            handles.append(m.register_forward_hook(_flop_hook(counts, id(m) in in_frozen)))
    was_training = module.training
    try:
        module.eval()
        with torch.enable_grad():  # the hooks read which layers' inputs need a gradient
            module(x.to(next(module.parameters()).device).detach())
    finally:
        module.train(was_training)
        for h in handles:
            h.remove()
    return Flops(**counts)


def _flop_hook(counts: dict[str, int], frozen: bool):
    def hook(m: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        x = inputs[0]
        if isinstance(m, nn.ConvTranspose2d):  # every input pixel scatters a k x k x C_out/groups patch
            n = 2 * x[0].numel() * m.out_channels // m.groups * math.prod(m.kernel_size)
        elif isinstance(m, nn.Conv2d):  # every output pixel gathers a k x k x C_in/groups patch
            n = 2 * out[0].numel() * m.in_channels // m.groups * math.prod(m.kernel_size)
        else:
            n = 2 * x[0].numel() // x.shape[-1] * m.in_features * m.out_features
        part = "frozen" if frozen else "trainable"
        counts[part] += n
        if x.requires_grad:
            counts[f"{part}_grad_in"] += n

    return hook


def sample_latents(cfg: Any, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """z (n, z_dim) from a generator config's latent distribution: U(-1, 1) (the original) or N(0, 1)."""
    if cfg.latent == "uniform":
        return torch.rand(n, cfg.z_dim, generator=generator, device=device) * 2 - 1
    return torch.randn(n, cfg.z_dim, generator=generator, device=device)


@torch.no_grad()
def standing_stats(G: nn.Module, cfg: Any, batches: int = 100, batch: int = 64, seed: int = 0) -> int:
    """Re-estimate G's BatchNorm running statistics for its own weights, in place (BigGAN's "standing
    statistics"): each layer's mean and variance averaged over `batches` batches of latents drawn with
    `seed`. Returns how many BatchNorm layers were re-estimated; G is left in eval mode.

    Why: an EMA generator's BatchNorm buffers are copies of the live G's (training.step's EMA), i.e. the
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
