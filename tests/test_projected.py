"""The projected discriminator: the D contract, gradients through the frozen part, a few hinge steps."""

from __future__ import annotations

import pytest
import torch

from catgan.augment import diff_augment
from catgan.errors import CatganError
from catgan.losses import d_loss, g_loss
from catgan.models.base import count_params
from catgan.models.projected import Discriminator, ProjectedDConfig

TINY = dict(image_size=64, channels=8, max_channels=16)


@pytest.fixture(scope="module")
def tiny_d():
    return Discriminator(ProjectedDConfig(**TINY))


def test_logits_shape_and_estimated_params(tiny_d):
    cfg = tiny_d.cfg
    assert tiny_d(torch.zeros(3, 3, 64, 64)).shape == (3, cfg.num_logits()) == (3, 52)
    assert cfg.estimated_params() == count_params(tiny_d)
    assert ProjectedDConfig(image_size=128).num_logits() == 64


def test_contract_frozen_parts_stay_frozen_and_in_eval(tiny_d):
    frozen = {id(p) for m in tiny_d.frozen_modules() for p in m.parameters()}
    trainable = tiny_d.trainable_parameters()
    assert trainable and all(p.requires_grad and id(p) not in frozen for p in trainable)
    assert len(trainable) + len(frozen) == len(list(tiny_d.parameters()))
    tiny_d.train()
    assert tiny_d.heads.training
    assert not any(m.training for f in tiny_d.frozen_modules() for m in f.modules())
    tiny_d.requires_grad_(False)  # the G phase's toggle, off and on again: the frozen part stays frozen
    assert not any(p.requires_grad for p in tiny_d.parameters())
    tiny_d.requires_grad_(True)
    assert all(p.requires_grad for p in trainable)
    assert not any(p.requires_grad for m in tiny_d.frozen_modules() for p in m.parameters())


def test_gradient_reaches_the_input_but_not_the_frozen_weights(tiny_d):
    tiny_d.zero_grad(set_to_none=True)
    x = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_()
    tiny_d(x).mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # G learns through D
    assert all(p.grad is None for m in tiny_d.frozen_modules() for p in m.parameters())
    assert all(p.grad is not None for p in tiny_d.trainable_parameters())


@pytest.mark.parametrize("dtype,channels_last", [("float32", False), ("bfloat16", True)])
def test_frozen_part_precision_and_layout_keep_the_features(dtype, channels_last):
    ref = Discriminator(ProjectedDConfig(**TINY, frozen_dtype="float32", channels_last=False)).eval()
    d = Discriminator(ProjectedDConfig(**TINY, frozen_dtype=dtype, channels_last=channels_last)).eval()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        for a, b in zip(ref.features(x), d.features(x), strict=True):
            assert b.dtype == torch.float32
            rel = (a - b).norm() / a.norm()
            assert rel < (0.05 if dtype == "bfloat16" else 1e-5)


@pytest.mark.parametrize("native", [True, False])
def test_frozen_dtype_auto_follows_the_cpus_bf16(native, monkeypatch):
    """The default, "auto", runs the frozen part in bf16 only where the CPU has native bf16: an AVX2 CPU
    runs bf16 convs on a slow path (docs/benchmarks.md). Explicit choices win; CUDA takes bf16."""
    from catgan.models import projected

    monkeypatch.setattr(projected, "cpu_has_native_bf16", lambda: native)
    auto = Discriminator(ProjectedDConfig(**TINY)).eval()
    assert auto.cfg.frozen_dtype == "auto"
    assert auto.frozen_bf16("cpu") is native and auto.frozen_bf16("cuda") is True
    for dtype, want in (("float32", False), ("bfloat16", True)):
        explicit = Discriminator(ProjectedDConfig(**TINY, frozen_dtype=dtype))
        assert explicit.frozen_bf16("cpu") is want and explicit.frozen_bf16("cuda") is want
    ref = Discriminator(ProjectedDConfig(**TINY, frozen_dtype="float32")).eval()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        diffs = [(a - b).abs().max().item() for a, b in zip(ref.features(x), auto.features(x), strict=True)]
    assert (max(diffs) > 0) is native  # bf16 rounds; float32 is the reference bit for bit
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # --amp: G's images in bf16
        logits = auto(x.bfloat16())
    assert logits.shape == (2, auto.cfg.num_logits()) and torch.isfinite(logits).all()


def test_state_dict_leaves_out_the_backbone_and_reloads(tiny_d):
    state = tiny_d.state_dict()
    assert state and not any(k.startswith("backbone.") for k in state)
    assert any(k.startswith("projector.") for k in state)  # the random mixing is saved with D
    other = Discriminator(ProjectedDConfig(**TINY, proj_seed=1))
    assert not torch.equal(other.projector.ccm[0].weight, tiny_d.projector.ccm[0].weight)
    other.load_state_dict(state)  # strict: only the backbone's keys may be absent
    torch.testing.assert_close(other.projector.ccm[0].weight, tiny_d.projector.ccm[0].weight)


def test_hinge_steps_with_diffaugment_move_only_the_heads():
    torch.manual_seed(0)
    d = Discriminator(ProjectedDConfig(**TINY, frozen_dtype="float32"))
    opt = torch.optim.Adam(d.trainable_parameters(), lr=2e-3, betas=(0.0, 0.99))
    heads0 = [p.detach().clone() for p in d.trainable_parameters()]
    frozen0 = [p.detach().clone() for m in d.frozen_modules() for p in m.parameters()]
    real = torch.rand(4, 3, 64, 64) * 2 - 1
    fake = torch.zeros(4, 3, 64, 64).uniform_(-0.2, 0.2)  # easy to tell apart: D should learn it
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(6):
        policy = "color,translation,cutout"
        loss = d_loss("hinge", d(diff_augment(real, policy, gen)), d(diff_augment(fake, policy, gen)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    assert all(not torch.equal(a, b) for a, b in zip(heads0, d.trainable_parameters(), strict=True))
    frozen1 = [p for m in d.frozen_modules() for p in m.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(frozen0, frozen1, strict=True))
    assert torch.isfinite(g_loss("hinge", None, d(fake)))


def test_bad_configs_name_the_field():
    with pytest.raises(CatganError, match="image_size must be a multiple of 32"):
        ProjectedDConfig(image_size=48)
    with pytest.raises(CatganError, match="frozen_dtype"):
        ProjectedDConfig(frozen_dtype="float16")
    with pytest.raises(CatganError, match="channels"):
        ProjectedDConfig(channels=0)
