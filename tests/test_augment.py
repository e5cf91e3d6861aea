"""DiffAugment: shapes kept, reproducible from a generator, differentiable, each op doing its one thing."""

from __future__ import annotations

import pytest
import torch

from catgan.augment import OPS, color, cutout, diff_augment, translation


def batch(n: int = 8, size: int = 16) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_empty_policy_is_identity():
    x = batch()
    assert torch.equal(diff_augment(x, ""), x)


@pytest.mark.parametrize("policy", [*OPS, "color,translation,cutout"])
def test_shape_reproducible_and_differentiable(policy):
    x = batch().requires_grad_(True)
    a = diff_augment(x, policy, torch.Generator().manual_seed(0))
    b = diff_augment(x, policy, torch.Generator().manual_seed(0))
    c = diff_augment(x, policy, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_translation_moves_pixels_and_fills_with_zero():
    x = torch.ones(64, 1, 16, 16)
    y = translation(x, torch.Generator().manual_seed(0))
    assert set(y.unique().tolist()) <= {0.0, 1.0}
    assert (y == 0).any()  # some images were shifted, exposing the zero padding
    assert (y.flatten(1) == 1).all(1).any()  # and some were not moved at all


def test_cutout_zeros_a_quarter_of_each_image_at_most():
    y = cutout(torch.ones(32, 3, 16, 16), torch.Generator().manual_seed(0))
    zero_frac = (y[:, 0] == 0).float().mean((1, 2))  # per image
    assert (zero_frac > 0).all() and (zero_frac <= 0.25).all()


def test_color_changes_values_per_image():
    x = batch()
    y = color(x, torch.Generator().manual_seed(0))
    assert not torch.allclose(x, y)
    shifts = (y - x).mean((1, 2, 3))
    assert shifts.std() > 0  # each image draws its own parameters
