"""Typed, frozen configuration: what the networks are (GANConfig: a generator and a discriminator config,
each naming its family), how they train (TrainConfig: everything that changes the weights) and how a run
executes (RunOptions: device, precision, threads, progress, and the cadence of its logs, samples,
checkpoints and evaluations).

A checkpoint carries the configs as plain dicts, so `build_generator(generator_config(saved))` rebuilds a
network with no other input; files of the first release (one flat "model" dict, no family) still read
(model_from_dict). Named presets bundle a GANConfig and a TrainConfig; `thesis-128` is the original system,
the others what the field learned since (their measured figures: docs/benchmarks.md).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass, field
from typing import Any

from catgan.errors import CatganError

# Importing this module loads no torch (the CLI parser and `catgan prepare` read it): what needs the
# networks (the model families, the loss and augmentation names) is imported where it is used.


@dataclass(frozen=True)
class GANConfig:
    """The two networks of a GAN, each a family's config (see catgan.models)."""

    generator: Any
    discriminator: Any

    def __post_init__(self) -> None:
        g, d = self.generator.image_size, self.discriminator.image_size
        if g != d:
            raise CatganError(f"the generator draws {g} px but the discriminator judges {d} px images")

    @property
    def image_size(self) -> int:
        return self.generator.image_size


def model_from_dict(data: Any, where: str = "model config") -> GANConfig:
    """A GANConfig from its saved dict: {"generator": {...}, "discriminator": {...}}, or a first-release
    flat model dict (the DCGAN family, no `family` key)."""
    from catgan.models import discriminator_config, generator_config, split_legacy

    if isinstance(data, dict) and "generator" in data and "discriminator" in data and len(data) == 2:
        g, d = data["generator"], data["discriminator"]
    else:
        g, d = split_legacy(data, where)
    return GANConfig(
        generator_config(g, f"{where}: generator"), discriminator_config(d, f"{where}: discriminator")
    )


def dcgan(**fields: Any) -> GANConfig:
    """A DCGAN-family GANConfig from the first release's flat fields (arch, image_size, z_dim, ...)."""
    from catgan.models import split_legacy
    from catgan.models.dcgan import DCGANDiscriminatorConfig, DCGANGeneratorConfig

    g, d = split_legacy(fields, "dcgan()")
    return GANConfig(DCGANGeneratorConfig(**g), DCGANDiscriminatorConfig(**d))


@dataclass(frozen=True)
class RunOptions:
    """How a run executes, apart from what changes the weights (TrainConfig): the device and precision,
    and what it writes along the way (the cadence, OUTPUT_FIELDS: every count in steps). A resumed run may
    change any of them; the cadence is recorded in the run's config.json ("output"), which a resume keeps
    unless told otherwise (training.state.resolve_configs)."""

    device: str = "auto"
    amp: bool = False  # bf16 autocast (CUDA; also works on the CPU)
    compile: bool = False  # torch.compile G and D
    threads: int | None = None  # CPU threads for the call (default: every core; restored on return)
    progress: bool = True
    channels_last: bool | None = None  # default: on CUDA
    allow_new_data: bool = False  # resume a run on other data than it records (fine-tuning on purpose)
    log_every: int = 10  # steps per metrics.jsonl record and per loss check (each syncs with the device)
    sample_every: int = 500  # steps between sample grids; 0 = at the start and the end only
    checkpoint_every: int = 500  # steps between checkpoints; 0 = at the end (and on Ctrl-C) only
    # a run made before the cadence counted steps: its config.json's "train.checkpoint_every", which
    # counted epochs; kept in its unit (legacy_output) so such a run checkpoints where it always did
    checkpoint_every_epochs: int = 0
    keep_checkpoints: int = 3  # step checkpoints kept (the newest); best.pt is apart
    eval_every: int = 0  # steps between FID evaluations (selfsup space, held-out faces: best.pt); 0 = off
    eval_n: int = 2000  # generated images per evaluation

    def __post_init__(self) -> None:
        for name in OUTPUT_FIELDS:
            value, least = getattr(self, name), int(name in ("log_every", "keep_checkpoints", "eval_n"))
            if isinstance(value, bool) or not isinstance(value, int):
                raise CatganError(f"{name} must be a whole number, got {value!r}")
            if value < least:
                raise CatganError(f"{name} must be >= {least}, got {value}")
        if self.threads is not None and self.threads < 1:
            raise CatganError(f"threads must be >= 1, got {self.threads}")

    def output(self) -> dict[str, int]:
        """The cadence, as config.json records it."""
        return {name: getattr(self, name) for name in OUTPUT_FIELDS}


# RunOptions' cadence: what a run writes along the way, and when (a run's config.json "output")
OUTPUT_FIELDS = (
    "log_every", "sample_every", "checkpoint_every", "checkpoint_every_epochs", "keep_checkpoints",
    "eval_every", "eval_n",
)  # fmt: skip
# The cadence fields that files written before RunOptions held them keep under "train" (config.json, a
# checkpoint's train_config, an export's provenance), by their name there -> RunOptions' name
LEGACY_OUTPUT = {
    "sample_every": "sample_every", "checkpoint_every": "checkpoint_every_epochs",
    "keep_checkpoints": "keep_checkpoints", "eval_every": "eval_every", "eval_n": "eval_n",
}  # fmt: skip


def legacy_output(train: Any) -> dict[str, int]:
    """The cadence an old file's "train" dict holds, as RunOptions fields (its checkpoint_every counted
    epochs: checkpoint_every_epochs, and no step cadence); {} for a dict written since."""
    if not isinstance(train, dict):
        return {}
    found = {new: train[old] for old, new in LEGACY_OUTPUT.items() if old in train}
    return {**found, "checkpoint_every": 0} if "checkpoint_every_epochs" in found else found


def output_from_dict(data: Any, where: str = "") -> dict[str, int]:
    """A run's recorded cadence (config.json "output") as RunOptions fields, checked; unknown keys refused."""
    prefix = f"{where}: " if where else ""
    if not isinstance(data, dict):
        raise CatganError(f"{prefix}output must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(OUTPUT_FIELDS))
    if unknown:
        raise CatganError(f"{prefix}output has no field(s) {unknown}: saved by a newer or foreign catgan?")
    try:
        RunOptions(**data)  # the checks, one line each
    except CatganError as err:
        raise CatganError(f"{prefix}{err}") from None
    return dict(data)


@dataclass(frozen=True)
class TrainConfig:
    """How a run trains. Everything that changes the weights a run produces lives here (what it writes
    along the way, and when: RunOptions)."""

    batch: int = 64
    lr_d: float = 2e-4
    lr_g: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    loss: str = "bce"  # a name in catgan.losses.D_LOSSES
    label_smoothing: float = 1.0  # target for real images in BCE; 0.9 = one-sided smoothing
    ema: float = 0.0  # decay of the EMA copy of G; 0 = no EMA
    ema_start: int = 0  # steps before EMA starts tracking (it copies G until then)
    r1_gamma: float = 0.0  # R1 penalty weight on real images; 0 = off
    r1_every: int = 1  # lazy R1: apply every N D steps (scaled by N)
    diffaug: str = ""  # DiffAugment policy: comma list of "color", "translation", "cutout"; "" = off
    flip: bool = False  # random horizontal flip of real images
    epochs: int = 25  # 0 = no epoch limit: max_steps decides
    max_steps: int = 0  # stop after this many steps (0 = only epochs decide)
    lr_decay_steps: int = 0  # the run's last N steps lower both lrs linearly towards 0; 0 = constant lrs
    d_warmup: int = 0  # the run's first N steps train D alone (G frozen), e.g. a new D for a given G
    seed: int = 0
    sync_batchnorm: bool = False  # under torchrun: BatchNorm statistics across ranks

    @property
    def real_label(self) -> float:
        """D's target for real images: label_smoothing with BCE; the other losses have no targets."""
        return self.label_smoothing if self.loss == "bce" else 1.0

    def __post_init__(self) -> None:
        from catgan.augment import OPS
        from catgan.losses import D_LOSSES
        from catgan.models.base import check_fields

        check_fields(self)
        if self.loss not in D_LOSSES:
            raise CatganError(f"loss must be one of {tuple(D_LOSSES)}, got {self.loss!r}")
        if self.batch < 1:
            raise CatganError(f"batch must be >= 1, got {self.batch}")
        if not 0.0 <= self.ema < 1.0:
            raise CatganError(f"ema must be in [0, 1), got {self.ema}")
        if not 0.0 < self.label_smoothing <= 1.0:
            raise CatganError(f"label_smoothing must be in (0, 1], got {self.label_smoothing}")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise CatganError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.lr_decay_steps < 0:
            raise CatganError(f"lr_decay_steps must be >= 0, got {self.lr_decay_steps}")
        if self.epochs < 0 or self.max_steps < 0:
            raise CatganError(f"epochs and max_steps must be >= 0, got {self.epochs} and {self.max_steps}")
        if not self.epochs and not self.max_steps:
            raise CatganError("epochs 0 (no epoch limit) needs a max_steps > 0 to stop the run")
        if self.d_warmup < 0:
            raise CatganError(f"d_warmup must be >= 0, got {self.d_warmup}")
        if self.r1_gamma < 0:
            raise CatganError(f"r1_gamma must be >= 0, got {self.r1_gamma}")
        for name in ("lr_d", "lr_g"):
            if getattr(self, name) <= 0:
                raise CatganError(f"{name} must be > 0, got {getattr(self, name)}")
        bad = [p for p in self.diffaug.split(",") if p and p not in OPS]
        if bad:
            raise CatganError(f"diffaug policy must use {', '.join(OPS)}; got {bad}")


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    model: GANConfig
    train: TrainConfig = field(default_factory=TrainConfig)


def _recipes() -> dict[str, TrainConfig]:
    """The training recipes the presets share, by name."""
    thesis = TrainConfig(batch=64, lr_d=5e-5, lr_g=2e-4, beta1=0.5, loss="bce", label_smoothing=0.9)
    # What small-data GANs learned since DCGAN: a Lipschitz D (spectral norm), hinge loss, an EMA of G,
    # and augmentations D sees on real and fake alike, so it cannot memorise ~7k faces. TTUR (D 4x G's
    # rate): at equal rates G undid each D step and D sat at chance (docs/benchmarks.md).
    small_data = TrainConfig(
        batch=64, lr_d=4e-4, lr_g=1e-4, beta1=0.5, beta2=0.99, loss="hinge", ema=0.999,
        diffaug="color,translation,cutout", flip=True,
    )  # fmt: skip
    # dcgan-64 + an EMA of G + flips: the bundled cats-64's recipe (what flips bring: docs/benchmarks.md)
    cats = TrainConfig(batch=64, lr_d=2e-4, lr_g=2e-4, beta1=0.5, loss="bce", ema=0.999, flip=True)
    # Sauer et al.'s Projected GAN recipe: equal rates, Adam betas (0, 0.99), hinge, DiffAugment on all
    # D sees (the frozen features cannot memorise, the heads could), an EMA of G
    projected = TrainConfig(
        batch=64, lr_d=2e-4, lr_g=2e-4, beta1=0.0, beta2=0.99, loss="hinge", ema=0.999,
        diffaug="color,translation,cutout", flip=True,
    )  # fmt: skip
    dcgan = TrainConfig(batch=64, lr_d=2e-4, lr_g=2e-4, beta1=0.5, loss="bce")
    return {"thesis": thesis, "small_data": small_data, "cats": cats, "projected": projected, "dcgan": dcgan}


THESIS = dict(arch="thesis", image_size=128, kernel=5, latent="uniform")
DCGAN64 = dict(arch="dcgan", image_size=64, kernel=4, latent="normal", max_channels=512)


def _dcgan_presets(r: dict[str, TrainConfig]) -> list[Preset]:
    """The DCGAN family's presets: the original system, Radford et al.'s DCGAN, the bundled recipes."""
    return [
        Preset(
            "thesis-128",
            "The original system, bugs fixed: 128 px, 5x5 kernels, BCE with real=0.9, lr D 5e-5 / G 2e-4.",
            dcgan(**THESIS),
            r["thesis"],
        ),
        Preset(
            "thesis-64",
            "The original architecture at 64 px.",
            dcgan(**{**THESIS, "image_size": 64, "max_channels": 512}),
            r["thesis"],
        ),
        Preset(
            "dcgan-64",
            "Radford et al.'s DCGAN at 64 px (pytorch/examples): 4x4 kernels, ngf = ndf = 64, lr 2e-4.",
            dcgan(**DCGAN64),
            r["dcgan"],
        ),
        Preset(
            "cats-64",
            "The bundled 64 px recipe: dcgan-64 plus an EMA copy of G and random horizontal flips.",
            dcgan(**DCGAN64),
            r["cats"],
        ),
        Preset(
            "cats-64-diffaug",
            "DCGAN-64 with the small-data recipe: spectral norm, hinge loss, TTUR, EMA, DiffAugment, flips.",
            dcgan(**DCGAN64, d_batchnorm=False, spectral_norm=True),
            r["small_data"],
        ),
        Preset(
            "cats-128",
            "cats-128-lite at full width (ngf = ndf = 64): the GPU recipe; the bundled cats-128 model is "
            "cats-128-lite's.",
            dcgan(**{**DCGAN64, "image_size": 128}),
            r["cats"],
        ),
        Preset(
            "cats-128-lite",
            "cats-64's recipe (EMA, flips) at 128 px with half-width layers (ngf = ndf = 32): the 128 px "
            "model a CPU can train.",
            dcgan(**{**DCGAN64, "image_size": 128}, g_base=32, d_base=32),
            r["cats"],
        ),
    ]


def _other_presets(r: dict[str, TrainConfig]) -> list[Preset]:
    """Presets of the other families: projected discriminators, FastGAN, and the test toys."""
    from catgan.models.fastgan import FastGANConfig
    from catgan.models.mlp import MLPDiscriminatorConfig, MLPGeneratorConfig
    from catgan.models.projected import ProjectedDConfig

    lite128 = dcgan(**{**DCGAN64, "image_size": 128}, g_base=32, d_base=32)  # cats-128-lite's networks
    return [
        Preset(
            "projected-64",
            "cats-64's DCGAN generator against a projected discriminator (frozen ImageNet EfficientNet-Lite0 "
            "features, random mixing, four patch heads; Sauer et al. 2021): hinge, DiffAugment, EMA, flips.",
            GANConfig(dcgan(**DCGAN64).generator, ProjectedDConfig(image_size=64)),
            r["projected"],
        ),
        Preset(
            "projected-128",
            "A FastGAN generator (skip-layer excitation, ngf 32) against a projected discriminator at "
            "128 px; projected-64's recipe.",
            GANConfig(FastGANConfig(image_size=128, ngf=32), ProjectedDConfig(image_size=128)),
            r["projected"],
        ),
        Preset(
            "projected-128-small",
            "A FastGAN generator at half projected-128's width (ngf 16) against its projected "
            "discriminator; projected-64's recipe. 6.1 GFLOP per image and step: the 128 px projected "
            "model a CPU can train (varied faces where projected-128-lite's DCGAN G collapses).",
            GANConfig(FastGANConfig(image_size=128, ngf=16), ProjectedDConfig(image_size=128)),
            r["projected"],
        ),
        Preset(
            "projected-128-lite",
            "cats-128-lite's DCGAN generator against a projected discriminator at 128 px; projected-64's "
            "recipe. A third of projected-128's FLOPs; on the CPU its G collapses to a few faces within "
            "250 steps (docs/log/2026-12.md): train projected-128-small instead.",
            GANConfig(lite128.generator, ProjectedDConfig(image_size=128)),
            r["projected"],
        ),
        Preset(
            "tiny-16",
            "A 16 px toy for tests and smoke runs.",
            dcgan(arch="dcgan", image_size=16, z_dim=16, g_base=8, d_base=8, max_channels=32),
            TrainConfig(batch=8),
        ),
        Preset(
            "mlp-16",
            "A 2-layer MLP generator and discriminator at 16 px: the test family (catgan.models.mlp).",
            GANConfig(MLPGeneratorConfig(), MLPDiscriminatorConfig()),
            TrainConfig(batch=8),
        ),
    ]


@functools.cache
def presets() -> dict[str, Preset]:
    """Every named preset, by name (built on first use: the model families import torch)."""
    recipes = _recipes()
    return {p.name: p for p in [*_dcgan_presets(recipes), *_other_presets(recipes)]}


def __getattr__(name: str) -> Any:
    """`catgan.config.PRESETS`: presets(), built on first use (PEP 562)."""
    if name == "PRESETS":
        return presets()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_preset(name: str) -> Preset:
    try:
        return presets()[name]
    except KeyError:
        raise CatganError(f"unknown preset {name!r}; choose one of: {', '.join(presets())}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config dataclass as a JSON-ready dict."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Rebuild a config dataclass, refusing unknown keys with a clear message."""
    from catgan.models.base import config_from_dict

    return config_from_dict(cls, data, where)


def train_from_dict(data: Any, where: str = "") -> TrainConfig:
    """A saved TrainConfig; an old file's cadence fields in it (LEGACY_OUTPUT: RunOptions' now, read by
    legacy_output) are left out, so every file written so far still reads."""
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k not in LEGACY_OUTPUT}
    return from_dict(TrainConfig, data, where)


def diff(a: Any, b: Any) -> list[str]:
    """Human-readable differences between two configs: ["lr_d: 5e-05 -> 0.0002", ...]; nested configs
    (a GANConfig's) as "generator.z_dim: ...", configs of different families as their family."""
    return _diff(to_dict(a), to_dict(b), "")


def _diff(da: dict[str, Any], db: dict[str, Any], prefix: str) -> list[str]:
    if da.get("family") != db.get("family"):
        return [f"{prefix}family: {da.get('family')!r} -> {db.get('family')!r}"]
    out = []
    for k in list(da) + [k for k in db if k not in da]:
        va, vb = da.get(k), db.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {va!r} -> {vb!r}")
    return out


def dumps(**configs: Any) -> str:
    """{"model": {"generator": {...}, "discriminator": {...}}, "train": {...}} as indented JSON."""
    return json.dumps({k: to_dict(v) for k, v in configs.items()}, indent=2, sort_keys=True)
