"""GAN losses: known values, the right direction for each player, clear errors."""

from __future__ import annotations

import math

import pytest
import torch

from catgan.errors import CatganError
from catgan.losses import D_LOSSES, d_loss, g_loss, r1_penalty

KINDS = sorted(D_LOSSES)
BIG = 8.0


def logits(value: float, n: int = 16) -> torch.Tensor:
    return torch.full((n,), float(value))


@pytest.mark.parametrize("kind", KINDS)
def test_each_player_prefers_winning(kind):
    good_d = d_loss(kind, logits(BIG), logits(-BIG))  # D tells them apart
    bad_d = d_loss(kind, logits(-BIG), logits(BIG))
    assert good_d < bad_d
    fooled = g_loss(kind, logits(-BIG), logits(BIG))  # fakes score above reals
    caught = g_loss(kind, logits(BIG), logits(-BIG))
    assert fooled < caught
    assert torch.isfinite(d_loss(kind, logits(100.0), logits(-100.0)))  # no overflow at extreme logits


def test_known_values():
    sp = math.log(2)  # BCE at logit 0
    assert d_loss("bce", logits(0), logits(0)).item() == pytest.approx(2 * sp)
    assert g_loss("bce", None, logits(0)).item() == pytest.approx(sp)
    assert d_loss("hinge", logits(0), logits(0)).item() == pytest.approx(2.0)
    assert d_loss("hinge", logits(1), logits(-1)).item() == 0.0
    assert g_loss("hinge", None, logits(0.5)).item() == -0.5
    assert d_loss("ralsgan", logits(0.5), logits(-0.5)).item() == pytest.approx(0.0)
    assert d_loss("rasgan", logits(0), logits(0)).item() == pytest.approx(sp)


def test_label_smoothing_is_applied_one_sided():
    real, fake = logits(3.0), logits(-3.0)
    sig = torch.sigmoid(torch.tensor(3.0)).item()
    expected = -(0.9 * math.log(sig) + 0.1 * math.log(1 - sig)) - math.log(sig)  # real -> 0.9, fake -> 0
    assert d_loss("bce", real, fake, real_label=0.9).item() == pytest.approx(expected, rel=1e-5)
    assert d_loss("bce", real, fake, 0.9) > d_loss("bce", real, fake, 1.0)


def test_errors():
    with pytest.raises(CatganError, match="unknown loss 'wgan'"):
        d_loss("wgan", logits(0), logits(0))
    with pytest.raises(CatganError, match="unknown loss"):
        g_loss("wgan", None, logits(0))
    with pytest.raises(ValueError, match="needs D's logits on real images"):
        g_loss("rasgan", None, logits(0))


def test_r1_of_a_linear_d_is_its_squared_weight_norm():
    w = torch.randn(3 * 4 * 4)
    x = torch.randn(5, 3, 4, 4, requires_grad=True)
    out = x.flatten(1) @ w  # (5,)
    assert r1_penalty(x, out).item() == pytest.approx(w.pow(2).sum().item(), rel=1e-5)
