"""Typed, frozen configuration: what the networks are (ModelConfig) and how they train (TrainConfig).

A checkpoint carries both as plain dicts, so `ModelConfig(**saved)` rebuilds a network with no other input.
Named presets bundle the two; `thesis-128` is the original system, the others what the field learned since.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from catgan.errors import CatganError

Arch = Literal["thesis", "dcgan"]
Loss = Literal["bce", "hinge", "rasgan", "ralsgan"]
Latent = Literal["uniform", "normal"]

ARCHS: tuple[str, ...] = ("thesis", "dcgan")
LOSSES: tuple[str, ...] = ("bce", "hinge", "rasgan", "ralsgan")
LATENTS: tuple[str, ...] = ("uniform", "normal")
IMAGE_SIZES: tuple[int, ...] = (16, 32, 64, 128, 256)


@dataclass(frozen=True)
class ModelConfig:
    """The generator and discriminator architecture.

    arch="thesis": dense z -> 8x8 (4x4 below 64 px), 5x5 stride-2 transposed convs, a final stride-1
        transposed conv to RGB; D has an extra stride-1 conv before its last stride-2 conv (the original).
    arch="dcgan": Radford et al.'s 4x4 all-convolutional DCGAN; G uses ReLU, D has no BatchNorm on its
        first layer.
    Channel widths double from `g_base` / `d_base` at the image end up to `max_channels`.
    """

    arch: Arch = "dcgan"
    image_size: int = 64
    z_dim: int = 100
    latent: Latent = "uniform"
    g_base: int = 64  # channels of G's last hidden layer (ngf)
    d_base: int = 64  # channels of D's first layer (ndf)
    max_channels: int = 1024
    kernel: int = 4
    d_batchnorm: bool = True
    spectral_norm: bool = False  # spectral norm on every D layer (BatchNorm is then usually off)
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise CatganError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if self.image_size not in IMAGE_SIZES:
            raise CatganError(f"image_size must be one of {IMAGE_SIZES}, got {self.image_size}")
        if self.latent not in LATENTS:
            raise CatganError(f"latent must be one of {LATENTS}, got {self.latent!r}")
        for name in ("z_dim", "g_base", "d_base", "max_channels", "kernel"):
            if getattr(self, name) < 1:
                raise CatganError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class TrainConfig:
    """How a run trains. Everything that changes the weights a run produces lives here."""

    batch: int = 64
    lr_d: float = 2e-4
    lr_g: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    loss: Loss = "bce"
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
    sample_every: int = 500  # steps between sample grids
    checkpoint_every: int = 1  # epochs between checkpoints
    keep_checkpoints: int = 3
    eval_every: int = 0  # steps between FID evaluations; 0 = off
    eval_n: int = 2000
    sync_batchnorm: bool = False  # under torchrun: BatchNorm statistics across ranks

    @property
    def real_label(self) -> float:
        """D's target for real images: label_smoothing with BCE; the other losses have no targets."""
        return self.label_smoothing if self.loss == "bce" else 1.0

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise CatganError(f"loss must be one of {LOSSES}, got {self.loss!r}")
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
        bad = [p for p in self.diffaug.split(",") if p and p not in ("color", "translation", "cutout")]
        if bad:
            raise CatganError(f"diffaug policy must use color, translation, cutout; got {bad}")


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    model: ModelConfig
    train: TrainConfig = field(default_factory=TrainConfig)


def _presets() -> dict[str, Preset]:
    thesis = ModelConfig(arch="thesis", image_size=128, kernel=5, latent="uniform")
    dcgan = ModelConfig(arch="dcgan", image_size=64, kernel=4, latent="normal", max_channels=512)
    # What small-data GANs learned since DCGAN: a Lipschitz D (spectral norm), hinge loss, an EMA of G,
    # and augmentations D sees on real and fake alike, so it cannot memorise ~7k faces. TTUR (D 4x G's
    # rate): at equal rates G undid each D step and D sat at chance (FID-2k 187 at step 6,000; 41 with TTUR).
    small_data = TrainConfig(
        batch=64,
        lr_d=4e-4,
        lr_g=1e-4,
        beta1=0.5,
        beta2=0.99,
        loss="hinge",
        ema=0.999,
        diffaug="color,translation,cutout",
        flip=True,
    )
    # dcgan-64 + an EMA of G + flips: the bundled cats-64's recipe (flips: FID-10k 9.71 -> 8.34, fewer steps)
    cats = TrainConfig(batch=64, lr_d=2e-4, lr_g=2e-4, beta1=0.5, loss="bce", ema=0.999, flip=True)
    return {
        "thesis-128": Preset(
            "thesis-128",
            "The original system, bugs fixed: 128 px, 5x5 kernels, BCE with real=0.9, lr D 5e-5 / G 2e-4.",
            thesis,
            TrainConfig(batch=64, lr_d=5e-5, lr_g=2e-4, beta1=0.5, loss="bce", label_smoothing=0.9),
        ),
        "thesis-64": Preset(
            "thesis-64",
            "The original architecture at 64 px.",
            dataclasses.replace(thesis, image_size=64, max_channels=512),
            TrainConfig(batch=64, lr_d=5e-5, lr_g=2e-4, beta1=0.5, loss="bce", label_smoothing=0.9),
        ),
        "dcgan-64": Preset(
            "dcgan-64",
            "Radford et al.'s DCGAN at 64 px (pytorch/examples): 4x4 kernels, ngf = ndf = 64, lr 2e-4.",
            dcgan,
            TrainConfig(batch=64, lr_d=2e-4, lr_g=2e-4, beta1=0.5, loss="bce"),
        ),
        "cats-64": Preset(
            "cats-64",
            "The bundled 64 px recipe: dcgan-64 plus an EMA copy of G and random horizontal flips.",
            dcgan,
            cats,
        ),
        "cats-64-diffaug": Preset(
            "cats-64-diffaug",
            "DCGAN-64 with the small-data recipe: spectral norm, hinge loss, TTUR, EMA, DiffAugment, flips.",
            dataclasses.replace(dcgan, d_batchnorm=False, spectral_norm=True),
            small_data,
        ),
        "cats-128": Preset(
            "cats-128",
            "cats-128-lite at full width (ngf = ndf = 64; 11.6 GFLOP per image and step, a fifth of "
            "thesis-128's): the GPU recipe (FID-10k 17.09 after 148 s on an H200); the bundled cats-128 "
            "model is cats-128-lite's.",
            dataclasses.replace(dcgan, image_size=128),
            cats,
        ),
        "cats-128-lite": Preset(
            "cats-128-lite",
            "cats-64's recipe (EMA, flips) at 128 px with half-width layers (ngf = ndf = 32): the 128 px "
            "model a CPU can train (3.4 GFLOP per image and step, about 70 steps/min on 2 cores).",
            dataclasses.replace(dcgan, image_size=128, g_base=32, d_base=32),
            cats,
        ),
        "tiny-16": Preset(
            "tiny-16",
            "A 16 px toy for tests and smoke runs.",
            ModelConfig(arch="dcgan", image_size=16, z_dim=16, g_base=8, d_base=8, max_channels=32),
            TrainConfig(batch=8, sample_every=10),
        ),
    }


PRESETS: dict[str, Preset] = _presets()


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise CatganError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config dataclass as a JSON-ready dict."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a config dataclass, refusing unknown keys with a clear message."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise CatganError(f"{cls.__name__} has no field(s) {unknown}: saved by a newer or foreign catgan?")
    return cls(**data)


def diff(a: Any, b: Any) -> list[str]:
    """Human-readable differences between two configs of the same type: ["lr_d: 5e-05 -> 0.0002", ...]."""
    da, db = to_dict(a), to_dict(b)
    return [f"{k}: {da[k]!r} -> {db[k]!r}" for k in da if da[k] != db.get(k)]


def dumps(**configs: Any) -> str:
    """{"model": {...}, "train": {...}} as indented JSON."""
    return json.dumps({k: to_dict(v) for k, v in configs.items()}, indent=2, sort_keys=True)
