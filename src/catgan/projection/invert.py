"""Inversion: the latent whose image best matches a target, by Adam on the latent (stylegan2-ada's
projector, for a z-space DCGAN), then optionally a short fine-tune of a copy of G around it (pivotal
tuning, Roich et al. 2021).

Loss per image: pixel L1 + a perceptual distance (projection.perceptual) + a prior that keeps the latent
where G was trained: for N(0, 1) latents (mean(z^2) - 1)^2 (smooth at z = 0, so the mean latent can be
a start; it holds |z| near sqrt(z_dim), the shell where normal latents live); uniform latents are clamped
to [-1, 1] after every step. Each image of a batch is inverted independently (G is in eval mode, the loss
is a sum over images and Adam's state is per coordinate): with `noise` 0 a batch is only faster, never
different; the early latent noise is drawn per batch row (row i from seed + i).

The degradation and the mask make the same function restore damaged photos (catgan restore):
    invert(G, cfg, target, mask=keep)                      # inpainting: masked-out pixels do not count
    invert(G, cfg, small, degrade=lambda x: F.avg_pool2d(x, 2))   # super-resolution
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from catgan.errors import CatganError
from catgan.projection.perceptual import PerceptualDistance


@dataclass(frozen=True)
class InvertConfig:
    """Optimisation settings. Weights multiply per-image losses; lr follows stylegan2-ada's projector
    (a cosine ramp-down over the last quarter); `noise` is the std of the latent noise added early on
    (decaying to 0 at 3/4 of the steps), drawn with `seed`."""

    steps: int = 200
    lr: float = 0.05
    pixel_weight: float = 1.0
    perceptual_weight: float = 1.0
    prior_weight: float = 0.05
    noise: float = 0.05
    seed: int = 0
    tune_steps: int = 0  # pivotal tuning: steps of Adam on a copy of G's weights, the latent fixed
    tune_lr: float = 3e-4

    def __post_init__(self) -> None:
        for name in ("steps", "tune_steps", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise CatganError(f"{name} must be a whole number >= 0, got {value!r}")
        for name in ("lr", "pixel_weight", "perceptual_weight", "prior_weight", "noise", "tune_lr"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise CatganError(f"{name} must be a finite number >= 0, got {value!r}")


@dataclass
class Inversion:
    """z (B, z_dim) on the CPU; image (B, 3, H, W) in [-1, 1] on the CPU: G's drawing of z (before any
    degradation; the tuned G's when tuned); losses: final per-image terms, each a (B,) CPU tensor;
    history: the mean total loss after each step (latent steps, then tuning steps); G: the tuned copy of G
    (eval mode, frozen) or None when not tuned."""

    z: torch.Tensor
    image: torch.Tensor
    losses: dict[str, torch.Tensor]
    history: list[float] = field(default_factory=list)
    G: nn.Module | None = None


def mean_latent(cfg: Any, n: int = 1) -> torch.Tensor:
    """The mean of G's latent distribution (0 for both N(0, 1) and U(-1, 1)), (n, z_dim)."""
    return torch.zeros(n, cfg.z_dim)


def latent_prior(z: torch.Tensor, cfg: Any) -> torch.Tensor:
    """(B,) penalty on z (B, z_dim) leaving where G was trained: (mean(z^2) - 1)^2 for normal latents,
    0 for uniform ones (clamped instead)."""
    if cfg.latent == "uniform":
        return z.new_zeros(z.shape[0])
    return (z.pow(2).mean(dim=1) - 1).pow(2)


def _check(target: torch.Tensor, mask: torch.Tensor | None, z: torch.Tensor, cfg: Any) -> None:
    if target.ndim != 4 or target.shape[1] != 3 or not target.is_floating_point():
        raise CatganError(f"target must be float images (B, 3, H, W) in [-1, 1], got {tuple(target.shape)}")
    if z.shape != (target.shape[0], cfg.z_dim):
        raise CatganError(f"z_init must be (B, z_dim) = {(target.shape[0], cfg.z_dim)}, got {tuple(z.shape)}")
    if mask is not None:
        if mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[-2:] != target.shape[-2:]:
            raise CatganError(
                f"mask must be (B or 1, 1, H, W) with the target's H, W {tuple(target.shape[-2:])}, "
                f"got {tuple(mask.shape)}"
            )
        if mask.shape[0] not in (1, target.shape[0]) or not bool((mask.sum(dim=(1, 2, 3)) > 0).all()):
            raise CatganError("mask must be one per target (or one for all) and keep at least one pixel")


class _Loss:
    """The per-image loss terms against a fixed target (its perceptual maps computed once)."""

    def __init__(self, target, mask, degrade, distance, config: InvertConfig):
        self.target, self.mask, self.degrade, self.distance, self.config = (
            target,
            mask,
            degrade,
            distance,
            config,
        )
        self.maps = None
        if distance is not None and config.perceptual_weight > 0:
            with torch.no_grad():
                self.maps = distance.maps(target)

    def __call__(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        seen = self.degrade(image) if self.degrade is not None else image  # (B, 3, h, w) like the target
        if seen.shape != self.target.shape:
            raise CatganError(
                f"degrade(G(z)) has shape {tuple(seen.shape)} but the target is {tuple(self.target.shape)}"
            )
        diff = (seen - self.target).abs()  # (B, 3, h, w)
        if self.mask is None:
            pixel = diff.mean(dim=(1, 2, 3))
        else:
            m = self.mask.to(diff.dtype)
            pixel = (diff * m).sum(dim=(1, 2, 3)) / (3 * m.sum(dim=(1, 2, 3)))
        terms = {"pixel_l1": pixel}
        if self.maps is not None:
            terms["perceptual"] = self.distance.distance(seen, self.maps, self.mask)
        return terms

    def total(self, terms: dict[str, torch.Tensor], prior: torch.Tensor | None = None) -> torch.Tensor:
        c = self.config
        t = c.pixel_weight * terms["pixel_l1"]
        if "perceptual" in terms:
            t = t + c.perceptual_weight * terms["perceptual"]
        if prior is not None:
            t = t + c.prior_weight * prior
        return t  # (B,)


def invert(
    G: nn.Module,
    cfg: Any,
    target: torch.Tensor,
    *,
    z_init: torch.Tensor | None = None,
    config: InvertConfig | None = None,
    distance: PerceptualDistance | None = None,
    mask: torch.Tensor | None = None,
    degrade: Callable[[torch.Tensor], torch.Tensor] | None = None,
    progress: bool = False,
) -> Inversion:
    """Find z with G(z) ~ target; optionally fine-tune a copy of G around it. Returns an Inversion.

    G: the generator, in eval mode (its weights are never changed; tuning works on a copy). cfg: its
    config (`z_dim`, `latent`: "normal" or "uniform"). target (B, 3, h, w) float in [-1, 1]: what the loss
    compares with, i.e. the photo as degraded (h, w may differ from G's output when `degrade` resizes).
    z_init (B, z_dim): the start (an encoder's guess); None: the mean latent. config: InvertConfig.
    distance: the perceptual network (None: pixel L1 and prior only). mask (B or 1, 1, h, w), 1 = the pixel
    counts (in the L1 and as weights of the perceptual distance's pixels). degrade: a differentiable map
    applied to G(z) (B, 3, H, W) before the loss, giving the target's shape (blur, downsampling, noise).
    progress: a tqdm bar.
    """
    config = config or InvertConfig()
    device = next(G.parameters()).device
    z0 = (z_init if z_init is not None else mean_latent(cfg, target.shape[0])).detach().float()
    _check(target, mask, z0, cfg)
    if any(m.training for m in G.modules()):
        raise CatganError("invert needs G in eval mode (BatchNorm would mix the images of a batch)")
    target = target.to(device).float()
    mask = mask.to(device) if mask is not None else None
    loss = _Loss(target, mask, degrade, distance, config)
    z = z0.to(device).clone().requires_grad_(True)
    history: list[float] = []
    bar = _bar(config.steps + config.tune_steps, progress)
    try:
        _optimise_latent(G, cfg, z, loss, config, history, bar)
        tuned = _tune(G, z.detach(), loss, config, history, bar) if config.tune_steps else None
    finally:
        bar.close()
    z = z.detach()
    with torch.no_grad():
        image = (tuned if tuned is not None else G)(z)
        terms = loss(image)
        prior = latent_prior(z, cfg)
        terms["prior"] = prior
        terms["total"] = loss.total(terms, prior)
    return Inversion(z.cpu(), image.cpu(), {k: v.detach().cpu() for k, v in terms.items()}, history, tuned)


def _bar(total: int, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(
        total=total, desc="project", unit="step", disable=not progress, leave=False, dynamic_ncols=True
    )


def _optimise_latent(G, cfg, z, loss: _Loss, config: InvertConfig, history: list[float], bar) -> None:
    if config.steps == 0:
        return
    opt = torch.optim.Adam([z], lr=config.lr, betas=(0.9, 0.999))
    gens = [torch.Generator().manual_seed(config.seed + i) for i in range(z.shape[0])]
    for step in range(config.steps):
        t = step / config.steps
        for group in opt.param_groups:  # stylegan2-ada: full rate, cosine ramp-down over the last 25%
            group["lr"] = config.lr * min(1.0, 0.5 - 0.5 * math.cos(math.pi * min(1.0, (1 - t) / 0.25)))
        noise_std = config.noise * max(0.0, 1 - t / 0.75) ** 2
        noise = torch.stack([torch.randn(z.shape[1], generator=g) for g in gens]).to(z.device) * noise_std
        terms = loss(G(z + noise))
        total = loss.total(terms, latent_prior(z, cfg))  # (B,)
        opt.zero_grad(set_to_none=True)
        total.sum().backward()
        opt.step()
        if cfg.latent == "uniform":
            with torch.no_grad():
                z.clamp_(-1, 1)
        history.append(float(total.detach().mean()))
        bar.update()


def _tune(G, z, loss: _Loss, config: InvertConfig, history: list[float], bar) -> nn.Module:
    """Pivotal tuning: a copy of G trained (in eval mode: BatchNorm statistics fixed) to draw the target
    at the fixed latent z."""
    tuned = copy.deepcopy(G).eval()
    params = [p for p in tuned.parameters() if p.is_floating_point()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=config.tune_lr)
    for _ in range(config.tune_steps):
        total = loss.total(loss(tuned(z)))  # (B,)
        opt.zero_grad(set_to_none=True)
        total.sum().backward()
        opt.step()
        history.append(float(total.detach().mean()))
        bar.update()
    return tuned.requires_grad_(False)
