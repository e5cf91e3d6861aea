"""Model families by name: plain-dict registries, the builders that dispatch on a config's `family`, and
the reading of saved configs (old files, written before families existed, still read as "dcgan").

Adding a family = one module (its two configs and two networks, on catgan.models.base) + one line in each
registry below.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from catgan.errors import CatganError
from catgan.models import base, dcgan, fastgan, mlp, projected

# family -> (config class, module class)
GENERATORS: dict[str, tuple[type, type[nn.Module]]] = {
    "dcgan": (dcgan.DCGANGeneratorConfig, dcgan.Generator),
    "fastgan": (fastgan.FastGANConfig, fastgan.Generator),
    "mlp": (mlp.MLPGeneratorConfig, mlp.Generator),
}
DISCRIMINATORS: dict[str, tuple[type, type[nn.Module]]] = {
    "dcgan": (dcgan.DCGANDiscriminatorConfig, dcgan.Discriminator),
    "mlp": (mlp.MLPDiscriminatorConfig, mlp.Discriminator),
    "projected": (projected.ProjectedDConfig, projected.Discriminator),
}

# The one config of the first release (catgan 0.1, `model_config` / `"model"` in its files): both
# networks of the DCGAN family in one dict, without a family. Which of its keys each network takes:
_LEGACY_G = ("image_size", "z_dim", "latent", "arch", "g_base", "max_channels", "kernel", "init_std")
_LEGACY_D = ("image_size", "arch", "d_base", "max_channels", "kernel", "d_batchnorm", "spectral_norm")
_LEGACY_D += ("init_std",)


def _lookup(registry: dict[str, tuple[type, type[nn.Module]]], family: Any, what: str, where: str = ""):
    if not isinstance(family, str) or family not in registry:
        prefix = f"{where}: " if where else ""
        raise CatganError(f"{prefix}unknown {what} family {family!r}; known: {', '.join(registry)}")
    return registry[family]


def build_generator(cfg: Any) -> nn.Module:
    """The generator a config describes (its size checked first: nothing absurd is allocated)."""
    base.check_size(cfg)
    return _lookup(GENERATORS, cfg.family, "generator")[1](cfg)


def build_discriminator(cfg: Any) -> base.Discriminator:
    base.check_size(cfg)
    return _lookup(DISCRIMINATORS, cfg.family, "discriminator")[1](cfg)


def _saved_config(registry: dict[str, tuple[type, type[nn.Module]]], data: Any, what: str, where: str) -> Any:
    """A config from its saved dict (the `family` key picks the class in `registry`), checked and sized."""
    if not isinstance(data, dict):
        raise CatganError(f"{where} must be a JSON object, got {type(data).__name__}")
    cls = _lookup(registry, data.get("family"), what, where)[0]
    cfg = base.config_from_dict(cls, data, where)
    base.check_size(cfg)
    return cfg


def generator_config(data: Any, where: str = "generator config") -> Any:
    """A generator config from its saved dict, checked and sized."""
    return _saved_config(GENERATORS, data, "generator", where)


def discriminator_config(data: Any, where: str = "discriminator config") -> Any:
    """A discriminator config from its saved dict, checked and sized."""
    return _saved_config(DISCRIMINATORS, data, "discriminator", where)


def split_legacy(model: Any, where: str = "model config") -> tuple[dict[str, Any], dict[str, Any]]:
    """A first-release model config dict -> (generator dict, discriminator dict) of the dcgan family."""
    if not isinstance(model, dict):
        raise CatganError(f"{where} must be a JSON object, got {type(model).__name__}")
    unknown = sorted(set(model) - set(_LEGACY_G) - set(_LEGACY_D))
    if unknown:
        raise CatganError(f"{where} has no field(s) {unknown}: saved by a newer or foreign catgan?")
    g = {"family": "dcgan", **{k: model[k] for k in _LEGACY_G if k in model}}
    d = {"family": "dcgan", **{k: model[k] for k in _LEGACY_D if k in model}}
    return g, d


def legacy_generator_config(model: Any, where: str = "model config") -> Any:
    """The generator config of a first-release model config dict (an exported v1 file's metadata)."""
    return generator_config(split_legacy(model, where)[0], where)


def model_info(gcfg: Any, dcfg: Any) -> dict[str, float]:
    """Parameter counts and analytic GFLOP per image: G forward, D forward (its frozen part and its
    trainable part apart) and one training step, as the discriminator counts it (base.Discriminator.
    step_flops: a frozen part's forward on reals and fakes, its backward to the input for the G phase)."""
    import torch

    G, D = build_generator(gcfg), build_discriminator(dcfg)
    g = base.forward_flops(G, torch.zeros(1, gcfg.z_dim))
    d = base.forward_flops(D, torch.zeros(1, 3, dcfg.image_size, dcfg.image_size), D.frozen_modules())
    trainable = sum(p.numel() for p in D.trainable_parameters())
    step = D.step_flops(g, d)
    return {
        "g_params": base.count_params(G),
        "d_params": base.count_params(D),
        "d_trainable_params": trainable,
        "d_frozen_params": base.count_params(D) - trainable,
        "g_gflop": g.total / 1e9,
        "d_gflop": d.total / 1e9,
        "d_frozen_gflop": d.frozen / 1e9,
        "d_trainable_gflop": d.trainable / 1e9,
        "step_gflop": step.total / 1e9,
        "step_g_gflop": step.generator / 1e9,  # of step_gflop: in G, D's trainable part, D's frozen part
        "step_d_trainable_gflop": step.trainable / 1e9,
        "step_d_frozen_gflop": step.frozen / 1e9,
    }
