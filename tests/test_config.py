"""Configs: validation names the bad value, JSON round-trips, readable diffs, sane presets."""

import json

import pytest

from catgan.config import (
    PRESETS,
    RunOptions,
    TrainConfig,
    dcgan,
    diff,
    dumps,
    from_dict,
    get_preset,
    model_from_dict,
)
from catgan.errors import CatganError
from catgan.models.dcgan import DCGANGeneratorConfig


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(batch=0), "batch must be >= 1, got 0"),
        (dict(loss="wgan"), "loss must be one of"),
        (dict(ema=1.0), r"ema must be in \[0, 1\), got 1.0"),
        (dict(label_smoothing=0.0), "label_smoothing must be in"),
        (dict(lr_d=0.0), "lr_d must be > 0"),
        (dict(beta1=1.0), r"beta1 must be in \[0, 1\)"),
        (dict(beta2=-0.5), r"beta2 must be in \[0, 1\)"),
        (dict(r1_gamma=-1.0), "r1_gamma must be >= 0"),
        (dict(lr_decay_steps=-1), "lr_decay_steps must be >= 0, got -1"),
        (dict(diffaug="color,zoom"), r"diffaug policy .* \['zoom'\]"),
        (dict(batch=8.0), r"TrainConfig.batch must be a whole number, got 8.0"),
        (dict(flip="no"), r"TrainConfig.flip must be true or false"),
    ],
)
def test_train_config_rejects_bad_values(kwargs, message):
    with pytest.raises(CatganError, match=message):
        TrainConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(arch="resnet"), "arch must be one of"),
        (dict(image_size=100), "image_size must be one of .* got 100"),
        (dict(latent="cauchy"), "latent must be one of"),
        (dict(z_dim=0), r"z_dim must be in \[1, 1048576\], got 0"),
    ],
)
def test_model_config_rejects_bad_values(kwargs, message):
    with pytest.raises(CatganError, match=message):
        dcgan(**kwargs)


def test_run_options_are_checked():
    with pytest.raises(CatganError, match="log_every must be >= 1, got 0"):
        RunOptions(log_every=0)


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_round_trip_through_json(name):
    p = get_preset(name)
    data = json.loads(dumps(model=p.model, train=p.train))
    assert model_from_dict(data["model"]) == p.model
    assert from_dict(TrainConfig, data["train"]) == p.train


def test_thesis_preset_is_the_original_system():
    p = get_preset("thesis-128")
    g = p.model.generator
    assert (g.arch, g.image_size, g.kernel, g.z_dim, g.latent, p.model.discriminator.kernel) == (
        "thesis",
        128,
        5,
        100,
        "uniform",
        5,
    )
    assert (p.train.lr_d, p.train.lr_g, p.train.beta1, p.train.batch) == (5e-5, 2e-4, 0.5, 64)
    assert (p.train.loss, p.train.label_smoothing) == ("bce", 0.9)


def test_unknown_fields_and_presets_are_refused():
    with pytest.raises(CatganError, match=r"DCGANGeneratorConfig has no field\(s\) \['depth'\]"):
        from_dict(DCGANGeneratorConfig, {"family": "dcgan", "depth": 3})
    with pytest.raises(CatganError, match="unknown preset 'cats-512'; choose one of: thesis-128"):
        get_preset("cats-512")


def test_diff_lists_changed_fields_only():
    a = TrainConfig()
    b = TrainConfig(lr_d=5e-5, flip=True)
    assert diff(a, b) == ["lr_d: 0.0002 -> 5e-05", "flip: False -> True"]
    assert diff(a, a) == []
