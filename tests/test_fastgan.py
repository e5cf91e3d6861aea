"""The FastGAN generator: shapes and range at every size, skip-layer excitation, noise, a few steps."""

from __future__ import annotations

import pytest
import torch

from catgan.errors import CatganError
from catgan.models.base import count_params, sample_latents
from catgan.models.fastgan import FastGANConfig, Generator

TINY = dict(ngf=4, z_dim=8)


@pytest.mark.parametrize("size", [64, 128, 256])
def test_images_in_range_and_params_as_estimated(size):
    cfg = FastGANConfig(image_size=size, **TINY)
    g = Generator(cfg)
    x = g(sample_latents(cfg, 2))
    assert x.shape == (2, 3, size, size)
    assert x.abs().max() <= 1 and x.std() > 0
    assert cfg.estimated_params() == count_params(g)
    # skip-layer excitation: 4 -> 64 always, 8 -> 128 from 128 px, 16 -> 256 at 256 px
    assert sorted(int(s) for s in g.sle) == [s for s in (64, 128, 256) if s <= size]


def test_the_excitation_gates_change_the_image():
    torch.manual_seed(0)
    cfg = FastGANConfig(image_size=64, **TINY)
    g = Generator(cfg).eval()
    z = sample_latents(cfg, 2)
    before = g(z)
    with torch.no_grad():  # zeroing the gate's last conv sets every gate to sigmoid(0) = 0.5
        last = g.sle["64"].gate[3]
        last.parametrizations.weight.original.zero_()
    assert not torch.allclose(before, g(z))


def test_noise_injection_is_off_by_default_and_learnt_when_on():
    cfg = FastGANConfig(image_size=64, **TINY)
    g = Generator(cfg).eval()
    z = sample_latents(cfg, 2)
    torch.testing.assert_close(g(z), g(z))  # by seed: the same z, the same image
    noisy = Generator(FastGANConfig(image_size=64, noise=True, **TINY))
    weights = [p for n, p in noisy.named_parameters() if n.endswith("weight") and p.numel() == 1]
    assert weights and all(w.item() == 0.0 for w in weights)  # starts as a no-op
    noisy(z).mean().backward()
    assert all(w.grad is not None for w in weights)
    with torch.no_grad():
        for w in weights:
            w.fill_(1.0)
        noisy.eval()
        assert not torch.allclose(noisy(z), noisy(z))  # fresh noise each call


def test_a_few_steps_move_the_weights_toward_a_target():
    torch.manual_seed(0)
    cfg = FastGANConfig(image_size=64, spectral_norm=False, **TINY)
    g = Generator(cfg)
    opt = torch.optim.Adam(g.parameters(), lr=1e-2)
    z, target = sample_latents(cfg, 4), torch.full((4, 3, 64, 64), 0.5)
    start = [p.detach().clone() for p in g.parameters()]
    losses = []
    for _ in range(5):
        loss = (g(z) - target).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(not torch.equal(a, b) for a, b in zip(start, g.parameters(), strict=True))


def test_bad_configs_name_the_field():
    with pytest.raises(CatganError, match="image_size must be one of"):
        FastGANConfig(image_size=96)
    with pytest.raises(CatganError, match="ngf must be even"):
        FastGANConfig(ngf=5)
    with pytest.raises(CatganError, match="latent"):
        FastGANConfig(latent="gaussian")
    with pytest.raises(CatganError, match="z_dim"):
        FastGANConfig(z_dim=0)
