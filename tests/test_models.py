"""Every preset builds with the layer shapes, parameter counts and analytic FLOPs of the design."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from catgan.config import PRESETS, GANConfig, dcgan, get_preset
from catgan.models import build_discriminator, build_generator, model_info
from catgan.models.base import sample_latents, standing_stats
from catgan.models.dcgan import d_channels, g_channels


def nets(model: GANConfig):
    return build_generator(model.generator), build_discriminator(model.discriminator)


def info_of(model: GANConfig) -> dict:
    return model_info(model.generator, model.discriminator)


def feature_shapes(net: nn.Module, x: torch.Tensor, kinds=(nn.Conv2d, nn.ConvTranspose2d)) -> list[tuple]:
    """Output shape (C, H, W) of every conv / transposed conv, in order."""
    shapes = []
    x = x.to(next(net.parameters()).device)
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:]))) for m in net.modules()
             if isinstance(m, kinds)]  # fmt: skip
    with torch.no_grad():
        net.eval()(x)
    for h in hooks:
        h.remove()
    return shapes


def count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_thesis_128_is_the_original_layer_by_layer():
    cfg = get_preset("thesis-128").model
    with torch.device("meta"):  # shapes and counts without allocating or computing anything
        G, D = nets(cfg)
    assert isinstance(G.stem[0], nn.Linear) and G.stem[0].out_features == 1024 * 8 * 8  # z(100) -> 8x8x1024
    assert feature_shapes(G, torch.zeros(1, 100)) == [
        (512, 16, 16), (256, 32, 32), (128, 64, 64), (64, 128, 128), (3, 128, 128)
    ]  # fmt: skip
    assert all(m.kernel_size == (5, 5) for m in G.modules() if isinstance(m, nn.ConvTranspose2d))
    assert sum(isinstance(m, nn.LeakyReLU) for m in G.modules()) == 5 and isinstance(G.body[-1], nn.Tanh)
    assert feature_shapes(D, torch.zeros(1, 3, 128, 128)) == [
        (64, 64, 64), (128, 32, 32), (256, 16, 16), (512, 16, 16), (1024, 8, 8)
    ]  # fmt: skip
    assert sum(isinstance(m, nn.BatchNorm2d) for m in D.modules()) == 5
    assert isinstance(D.head[-1], nn.Linear) and D.head[-1].in_features == 1024 * 8 * 8
    # hand count: dense 100 -> 65536 (+bias), 5x5 transposed convs without bias, BN (weight + bias)
    g = 100 * 65536 + 65536 + 25 * (1024 * 512 + 512 * 256 + 256 * 128 + 128 * 64 + 64 * 3) + 3
    g += 2 * (1024 + 512 + 256 + 128 + 64)
    d = 25 * (3 * 64 + 64 * 128 + 128 * 256 + 256 * 512 + 512 * 1024) + 2 * (64 + 128 + 256 + 512 + 1024)
    d += 1024 * 64 + 1
    assert (count(G), count(D)) == (g, d) == (24_035_907, 17_482_305)
    assert (cfg.generator.estimated_params(), cfg.discriminator.estimated_params()) == (g, d)
    info = info_of(cfg)
    assert (info["g_params"], info["d_params"]) == (g, d)
    assert info["g_gflop"] == pytest.approx(6.88, abs=0.01)
    assert info["d_gflop"] == pytest.approx(4.23, abs=0.01)
    assert info["step_gflop"] == pytest.approx(54.4, abs=0.1)


def test_dcgan_64_is_radford_et_al():
    cfg = get_preset("dcgan-64").model
    G, D = nets(cfg)
    assert feature_shapes(G, torch.zeros(1, 100)) == [
        (512, 4, 4), (256, 8, 8), (128, 16, 16), (64, 32, 32), (3, 64, 64)
    ]  # fmt: skip
    assert feature_shapes(D, torch.zeros(1, 3, 64, 64)) == [
        (64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4), (1, 1, 1)
    ]  # fmt: skip
    assert not isinstance(D.features[1], nn.BatchNorm2d)  # no BN on D's first layer
    info = info_of(cfg)
    assert info["g_params"] == 3_576_704  # pytorch/examples dcgan netG
    assert info["d_params"] == 2_765_568 + 1  # netD plus the bias of the last conv
    assert (info["g_gflop"], info["d_gflop"], info["step_gflop"]) == pytest.approx(
        (0.209, 0.208, 2.27), abs=0.005
    )


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds_and_runs_forward_and_backward(name):
    cfg = PRESETS[name].model
    with torch.device("meta"):
        full = nets(cfg)
    assert all(count(net) > 1000 for net in full)
    # the config knows its size before anything is built
    assert [count(n) for n in full] == [
        cfg.generator.estimated_params(),
        cfg.discriminator.estimated_params(),
    ]
    if cfg.generator.family == "dcgan":  # run it at an eighth of its width: the same layers at 1/64 the cost
        g = dataclasses.replace(cfg.generator, g_base=8, max_channels=64)
        d = cfg.discriminator
        if d.family == "dcgan":
            d = dataclasses.replace(d, d_base=8, max_channels=64)
        cfg = GANConfig(g, d)
    G, D = nets(cfg)
    z = sample_latents(cfg.generator, 2)
    x = G(z)  # (2, 3, S, S)
    assert x.shape == (2, 3, cfg.image_size, cfg.image_size) and x.abs().max() <= 1
    logits = D(x)
    assert logits.shape[0] == 2 and logits.ndim in (1, 2)  # (2,) or, per patch, (2, K)
    logits.sum().backward()
    assert all(p.grad is not None for p in G.parameters())


@pytest.mark.parametrize("arch", ["thesis", "dcgan"])
@pytest.mark.parametrize("size", [16, 32, 64, 128, 256])
def test_every_size_and_tiny_widths(arch, size):
    model = dcgan(arch=arch, image_size=size, kernel=5 if arch == "thesis" else 4, z_dim=8, g_base=2,
                  d_base=2, max_channels=16)  # fmt: skip
    G, D = nets(model)
    with torch.no_grad():
        x = G(torch.randn(2, 8))
        assert x.shape == (2, 3, size, size)
        assert D(x).shape == (2,)
    assert max(g_channels(model.generator) + d_channels(model.discriminator)) <= 16
    assert model.generator.estimated_params() == count(G)
    assert model.discriminator.estimated_params() == count(D)


def test_init_is_dcgan_normal_and_latents_follow_the_config():
    torch.manual_seed(0)
    G = build_generator(get_preset("thesis-128").model.generator)
    w = torch.cat([m.weight.flatten() for m in G.modules() if isinstance(m, nn.ConvTranspose2d)])
    assert w.mean().abs() < 1e-3 and w.std().item() == pytest.approx(0.02, rel=0.02)
    bn = torch.cat([m.weight for m in G.modules() if isinstance(m, nn.BatchNorm2d)])
    assert bn.mean().item() == pytest.approx(1.0, abs=0.01)
    assert all(m.bias.abs().sum() == 0 for m in G.modules() if isinstance(m, nn.BatchNorm2d))
    uniform = sample_latents(get_preset("thesis-128").model.generator, 4096, torch.Generator().manual_seed(0))
    assert uniform.min() >= -1 and uniform.max() <= 1 and uniform.shape == (4096, 100)
    normal = sample_latents(get_preset("dcgan-64").model.generator, 4096, torch.Generator().manual_seed(0))
    assert normal.std().item() == pytest.approx(1.0, abs=0.02)


def test_standing_stats_are_the_average_batch_statistics_of_the_weights_themselves():
    cfg = get_preset("tiny-16").model.generator
    G = build_generator(cfg).eval()
    bn = next(m for m in G.modules() if isinstance(m, nn.BatchNorm2d))
    inputs: list[torch.Tensor] = []
    handle = bn.register_forward_hook(lambda m, args, out: inputs.append(args[0].detach()))
    assert standing_stats(G, cfg, batches=3, batch=5, seed=7) == sum(
        isinstance(m, nn.BatchNorm2d) for m in G.modules()
    )
    handle.remove()
    assert not G.training and bn.momentum == 0.1 and len(inputs) == 3
    x = torch.stack(inputs)  # (3 batches, 5, C, H, W): the first BN layer's inputs
    want_mean = x.mean(dim=(1, 3, 4)).mean(0)  # per channel: the average of the batch means
    want_var = x.transpose(1, 2).flatten(2).var(dim=2, unbiased=True).mean(0)  # (C,)
    assert torch.allclose(bn.running_mean, want_mean, atol=1e-5)
    assert torch.allclose(bn.running_var, want_var, atol=1e-4)
    assert int(bn.num_batches_tracked) == 3 and bn.running_mean.abs().sum() > 0  # was all zeros
    same = build_generator(cfg).eval()
    same.load_state_dict(G.state_dict())
    standing_stats(same, cfg, batches=3, batch=5, seed=7)
    assert all(torch.equal(a, b) for a, b in zip(same.buffers(), G.buffers(), strict=True))  # seeded
    assert standing_stats(G, cfg, batches=0) == 0


def test_spectral_norm_wraps_every_d_layer():
    cfg = dataclasses.replace(
        get_preset("tiny-16").model.discriminator, spectral_norm=True, d_batchnorm=False
    )
    D = build_discriminator(cfg)
    assert cfg.estimated_params() == count(D)
    layers = [m for m in D.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert layers and all(hasattr(m, "parametrizations") for m in layers)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in D.modules())


def test_cli_info_prints_parameters_and_gflop(capsys):
    from catgan.cli import main

    assert main(["info", "--preset", "dcgan-64"]) == 0
    out = capsys.readouterr().out
    assert "3,576,704" in out and "2,765,569" in out
    assert "0.209 GFLOP" in out and "2.275 GFLOP" in out
