"""GAN losses, one function per (loss, player). Every function takes D's raw logits, shape (B,).

Relativistic losses compare real and fake logits, so the G loss needs the real logits too; the
non-relativistic G losses ignore them. All return a scalar to minimise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from catgan.errors import CatganError


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


# (1) Update D: push real logits up and fake logits down.


def d_bce(real: torch.Tensor, fake: torch.Tensor, real_label: float = 1.0) -> torch.Tensor:
    """Sigmoid cross-entropy; real_label < 1 is one-sided label smoothing (the original used 0.9)."""
    return _bce(real, real_label) + _bce(fake, 0.0)


def d_hinge(real: torch.Tensor, fake: torch.Tensor, real_label: float = 1.0) -> torch.Tensor:
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def d_rasgan(real: torch.Tensor, fake: torch.Tensor, real_label: float = 1.0) -> torch.Tensor:
    """Relativistic average standard GAN (Jolicoeur-Martineau 2018): real vs the average fake."""
    return (_bce(real - fake.mean(), real_label) + _bce(fake - real.mean(), 0.0)) / 2


def d_ralsgan(real: torch.Tensor, fake: torch.Tensor, real_label: float = 1.0) -> torch.Tensor:
    """Relativistic average least squares: the best published FID on the CAT faces."""
    return (((real - fake.mean() - 1) ** 2).mean() + ((fake - real.mean() + 1) ** 2).mean()) / 2


# (2) Update G: push fake logits up (relativistic: above the real ones).


def g_bce(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The non-saturating G loss: -log D(G(z))."""
    return _bce(fake, 1.0)


def g_hinge(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()


def g_rasgan(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return (_bce(fake - real.mean(), 1.0) + _bce(real - fake.mean(), 0.0)) / 2


def g_ralsgan(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return (((fake - real.mean() - 1) ** 2).mean() + ((real - fake.mean() + 1) ** 2).mean()) / 2


D_LOSSES = {"bce": d_bce, "hinge": d_hinge, "rasgan": d_rasgan, "ralsgan": d_ralsgan}
G_LOSSES = {"bce": g_bce, "hinge": g_hinge, "rasgan": g_rasgan, "ralsgan": g_ralsgan}
RELATIVISTIC = frozenset({"rasgan", "ralsgan"})


def d_loss(kind: str, real: torch.Tensor, fake: torch.Tensor, real_label: float = 1.0) -> torch.Tensor:
    if kind not in D_LOSSES:
        raise CatganError(f"unknown loss {kind!r}; choose one of {sorted(D_LOSSES)}")
    return D_LOSSES[kind](real, fake, real_label)


def g_loss(kind: str, real: torch.Tensor | None, fake: torch.Tensor) -> torch.Tensor:
    if kind not in G_LOSSES:
        raise CatganError(f"unknown loss {kind!r}; choose one of {sorted(G_LOSSES)}")
    if kind in RELATIVISTIC and real is None:
        raise ValueError(f"the {kind} G loss needs D's logits on real images")
    return G_LOSSES[kind](real if real is not None else fake, fake)


def r1_penalty(real_images: torch.Tensor, real_logits: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): E ||grad_x D(x)||^2 on real images; real_images must require grad."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)  # (B, 3, H, W)
    return grad.pow(2).flatten(1).sum(1).mean()
