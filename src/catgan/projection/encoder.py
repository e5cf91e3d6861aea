"""An encoder image -> latent for one generator: the instant first guess that optimisation refines.

Trained on G's own samples, whose latents are known (latent MSE, plus pixel L1 between G(E(G(z))) and
G(z)), and optionally on real faces (pixel L1 between G(E(x)) and x, and the latent prior on E(x)), the
real faces being what users bring. Saved as NAME.safetensors (weights; metadata: its config, the
generator's sha256 and name) with NAME.json beside it (the same, the file's own sha256 and the training
log), so an encoder is refused for any generator but its own.

    enc = train_encoder(gen, EncoderTrainConfig(steps=3000), real=faces)   # faces: uint8 (N, 3, S, S)
    save_encoder(enc, "cats-64.safetensors", gen, info)
    enc = load_encoder("cats-64.safetensors", gen)         # refuses another G
    z = enc(x)                                             # (B, 3, S, S) in [-1, 1] -> (B, z_dim)
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from catgan.errors import CatganError
from catgan.models.base import sample_latents
from catgan.projection.invert import latent_prior

ENCODER_FORMAT = "catgan-encoder-v1"
Latent = Literal["normal", "uniform"]


@dataclass(frozen=True)
class LatentEncoderConfig:
    """The encoder's shape: 4x4 stride-2 convs from image_size down to 4 x 4, channels doubling from
    `width` up to `max_width`, then one linear layer to z_dim (tanh for uniform latents)."""

    image_size: int
    z_dim: int
    latent: Latent = "normal"
    width: int = 32
    max_width: int = 256

    def __post_init__(self) -> None:
        if (
            not isinstance(self.image_size, int)
            or self.image_size < 8
            or self.image_size & (self.image_size - 1)
        ):
            raise CatganError(f"encoder image_size must be a power of two >= 8, got {self.image_size!r}")
        for name in ("z_dim", "width", "max_width"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 4096:
                raise CatganError(f"encoder {name} must be a whole number in [1, 4096], got {value!r}")
        if self.latent not in ("normal", "uniform"):
            raise CatganError(f"encoder latent must be normal or uniform, got {self.latent!r}")

    @classmethod
    def for_generator(cls, model: Any, **kw: Any) -> LatentEncoderConfig:
        """The default encoder for a generator config: ~1.1 M parameters at 64 and 128 px."""
        width = kw.pop("width", max(8, 2048 // model.image_size))
        return cls(model.image_size, model.z_dim, model.latent, width=width, **kw)


class LatentEncoder(nn.Module):
    """x (B, 3, S, S) in [-1, 1] -> z (B, z_dim)."""

    def __init__(self, cfg: LatentEncoderConfig):
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        c_in, c, size = 3, cfg.width, cfg.image_size
        while size > 4:
            layers += [
                nn.Conv2d(c_in, c, 4, 2, 1, bias=c_in == 3),
                *([nn.BatchNorm2d(c)] if c_in != 3 else []),
            ]
            layers.append(nn.LeakyReLU(0.2))
            c_in, c, size = c, min(2 * c, cfg.max_width), size // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in * 16, cfg.z_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x).flatten(1)  # (B, C * 4 * 4)
        z = self.head(h)  # (B, z_dim)
        return torch.tanh(z) if self.cfg.latent == "uniform" else z


@dataclass(frozen=True)
class EncoderTrainConfig:
    """`steps` of Adam (or fewer when `minutes` of wall time run out).

    G is expensive on a CPU, so its samples come from a bank: `bank` (z, G(z)) pairs drawn at the start,
    `refresh` of them replaced by new ones each step. Each step: latent MSE on `batch` bank pairs (the
    encoder alone), and the image terms through G on `recon_batch` pairs (pixel L1 of G(E(x)) against x)
    plus, with real faces, `recon_batch` real faces (pixel L1, and the latent prior on E(x))."""

    steps: int = 3000
    minutes: float | None = None
    batch: int = 64
    recon_batch: int = 4
    bank: int = 4096
    refresh: int = 16
    lr: float = 1e-3
    latent_weight: float = 1.0
    pixel_weight: float = 1.0
    real_weight: float = 1.0
    prior_weight: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 1:
            raise CatganError(f"--steps must be a whole number >= 1, got {self.steps!r}")
        if self.minutes is not None and not (math.isfinite(self.minutes) and self.minutes > 0):
            raise CatganError(f"--minutes must be a number > 0, got {self.minutes!r}")
        for name in ("batch", "bank"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise CatganError(f"{name} must be a whole number >= 1, got {v!r}")
        for name in ("recon_batch", "refresh"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise CatganError(f"{name} must be a whole number >= 0, got {v!r}")
        for name in ("lr", "latent_weight", "pixel_weight", "real_weight", "prior_weight"):
            v = getattr(self, name)
            if not math.isfinite(v) or v < 0:
                raise CatganError(f"{name} must be a finite number >= 0, got {v!r}")


@dataclass
class EncoderTrainLog:
    steps: int
    seconds: float
    first: dict[str, float]  # loss terms over the first 1% of steps (at least one)
    last: dict[str, float]  # over the last 10%
    history: list[float]  # total loss per step


class SampleBank:
    """(z, G(z) as uint8) pairs, drawn in batches with no gradient; refreshed a few at a time."""

    def __init__(self, G: nn.Module, model: Any, n: int, rng: torch.Generator, device: torch.device):
        self.G, self.model, self.rng, self.device = G, model, rng, device
        self.z = sample_latents(model, n, rng)  # (n, z_dim), CPU
        self.x = torch.cat([self._draw(self.z[i : i + 64]) for i in range(0, n, 64)])  # (n, 3, S, S) uint8

    @torch.no_grad()
    def _draw(self, z: torch.Tensor) -> torch.Tensor:
        x = self.G(z.to(self.device))
        return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()

    def refresh(self, k: int) -> None:
        if k:
            idx = torch.randint(len(self.z), (k,), generator=self.rng)
            self.z[idx] = sample_latents(self.model, k, self.rng)
            self.x[idx] = self._draw(self.z[idx])

    def batch(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(z (k, z_dim), x (k, 3, S, S) in [-1, 1]) on the device."""
        idx = torch.randint(len(self.z), (k,), generator=self.rng)
        return self.z[idx].to(self.device), self.x[idx].to(self.device).float() / 127.5 - 1


def train_encoder(
    gen: Any,
    config: EncoderTrainConfig,
    real: torch.Tensor | None = None,
    encoder: LatentEncoder | None = None,
    progress: bool = False,
) -> tuple[LatentEncoder, EncoderTrainLog]:
    """Train an encoder for `gen` (a LoadedGenerator: G in eval mode, never changed). real: uint8
    (N, 3, S, S) faces at G's size, or None (samples only)."""
    G, model, device = gen.G, gen.model, gen.device
    if real is not None and tuple(real.shape[1:]) != (3, model.image_size, model.image_size):
        raise CatganError(
            f"real faces are {tuple(real.shape[1:])}, the generator draws (3, {model.image_size}, "
            f"{model.image_size}): prepare them at its size"
        )
    torch.manual_seed(config.seed)
    enc = (encoder or LatentEncoder(LatentEncoderConfig.for_generator(model))).to(device).train()
    opt = torch.optim.Adam(enc.parameters(), lr=config.lr, betas=(0.9, 0.999))
    rng = torch.Generator().manual_seed(config.seed)
    start, deadline = time.perf_counter(), (config.minutes or math.inf) * 60
    bank = SampleBank(G, model, config.bank, rng, device)
    rows: list[dict[str, float]] = []
    bar = _bar(config.steps, progress)
    try:
        for step in range(config.steps):
            seconds = time.perf_counter() - start
            if seconds > deadline:
                break
            for group in opt.param_groups:
                group["lr"] = config.lr * lr_factor(step, config.steps, seconds, deadline)
            terms = _step_terms(G, model, enc, config, bank, real, rng, device)
            total = sum(terms.values())
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            bank.refresh(config.refresh)
            rows.append({k: float(v.detach()) for k, v in terms.items()} | {"total": float(total.detach())})
            bar.update()
    finally:
        bar.close()
    enc.eval().requires_grad_(False)
    return enc, _log(rows, time.perf_counter() - start)


def lr_factor(step: int, steps: int, seconds: float, deadline: float) -> float:
    """Cosine decay to 0 over the run: over the planned steps, or over the wall-clock budget (--minutes)
    where that runs out first, so a run its budget stops has annealed instead of ending at a high rate."""
    done = max(step / steps, seconds / deadline)  # deadline may be inf
    return 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))


def _step_terms(G, model, enc, config: EncoderTrainConfig, bank: SampleBank, real, rng, device):
    z, x = bank.batch(config.batch)  # (B, z_dim), (B, 3, S, S)
    z_hat = enc(x)
    terms = {"latent_mse": config.latent_weight * F.mse_loss(z_hat, z)}
    k = config.recon_batch
    if k and config.pixel_weight > 0:
        terms["pixel_l1"] = config.pixel_weight * (G(z_hat[:k]) - x[:k]).abs().mean()
    if real is not None and k and config.real_weight > 0:
        idx = torch.randint(len(real), (k,), generator=rng)
        xr = real[idx].to(device).float() / 127.5 - 1  # (k, 3, S, S) in [-1, 1]
        zr = enc(xr)
        terms["real_l1"] = config.real_weight * (G(zr) - xr).abs().mean()
        terms["real_prior"] = config.prior_weight * latent_prior(zr, model).mean()
    return terms


def _log(rows: list[dict[str, float]], seconds: float) -> EncoderTrainLog:
    if not rows:
        raise CatganError("the encoder trained for no steps: raise --minutes")

    def mean(part: list[dict[str, float]]) -> dict[str, float]:
        return {k: round(sum(r[k] for r in part) / len(part), 5) for k in part[0]}

    n = len(rows)
    return EncoderTrainLog(
        n, round(seconds, 1), mean(rows[: max(1, n // 100)]), mean(rows[-max(1, n // 10) :]),
        [r["total"] for r in rows],
    )  # fmt: skip


def _bar(total: int, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="train-encoder", unit="step", disable=not progress, dynamic_ncols=True)


# ---- files ----------------------------------------------------------------------------------------


def save_encoder(enc: LatentEncoder, path: str | Path, gen: Any, info: dict | None = None) -> Path:
    """Write enc as safetensors (metadata: format, config, the generator's sha256 and name) and a .json
    beside it (the same plus the file's sha256 and `info`), each atomically."""
    from safetensors.torch import save

    from catgan.io import atomic_write, write_json

    path = Path(path)
    if path.suffix != ".safetensors":
        raise CatganError(f"--out must end in .safetensors, got {path.name}")
    tensors = {k: v.detach().cpu().contiguous() for k, v in enc.state_dict().items()}
    meta = {
        "format": ENCODER_FORMAT,
        "encoder_config": json.dumps(asdict(enc.cfg), sort_keys=True),
        "generator_sha256": gen.sha256,
        "generator": gen.name,
    }
    data = save(tensors, metadata=meta)
    atomic_write(path, lambda tmp: tmp.write_bytes(data), "encoder weights")
    sha = hashlib.sha256(data).hexdigest()
    write_json(
        path.with_suffix(".json"),
        {**meta, "encoder_config": asdict(enc.cfg), "sha256": sha, **(info or {})},
        "encoder metadata",
    )
    return path


def load_encoder(path: str | Path, gen: Any, device: str | torch.device | None = None) -> LatentEncoder:
    """The encoder in `path` for the generator `gen`, in eval mode. One CatganError for a missing,
    damaged or foreign file, and for an encoder trained for another generator."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    if not path.is_file():
        raise CatganError(f"encoder {path} not found (train one with `catgan train-encoder`)")
    data = path.read_bytes()
    _check_sidecar(path, data)
    try:
        tensors = load(data)
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise CatganError(f"{path} is not a readable safetensors file: {err}") from None
    if meta.get("format") != ENCODER_FORMAT:
        raise CatganError(f"{path} is not a catgan encoder (format {meta.get('format')!r})")
    if meta.get("generator_sha256") != gen.sha256:
        raise CatganError(
            f"encoder {path.name} was trained for generator {meta.get('generator', '?')} (sha256 "
            f"{str(meta.get('generator_sha256'))[:12]}...), not {gen.name} ({gen.sha256[:12]}...); train "
            "one for it with `catgan train-encoder`, or project without --encoder"
        )
    try:
        cfg = LatentEncoderConfig(**json.loads(meta["encoder_config"]))
        enc = LatentEncoder(cfg)
        enc.load_state_dict(tensors, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CatganError(f"{path} does not hold a valid encoder: {str(err).splitlines()[0]}") from None
    return enc.to(device if device is not None else gen.device).eval().requires_grad_(False)


def _check_sidecar(path: Path, data: bytes) -> None:
    """Where the .json beside the weights exists, its sha256 must match (a damaged or swapped file)."""
    side = path.with_suffix(".json")
    if not side.is_file():
        return
    try:
        expected = json.loads(side.read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        raise CatganError(f"{side} is unreadable: remove it or train the encoder again") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise CatganError(
            f"{path} has sha256 {actual[:12]}..., its .json records {expected[:12]}...: the file was changed "
            "or damaged; train the encoder again"
        )


def bundled_encoder(name: str) -> Path | None:
    """The shipped encoder of bundled model `name` (weights/encoders/NAME.safetensors), or None."""
    path = Path(__file__).resolve().parents[1] / "weights" / "encoders" / f"{name}.safetensors"
    return path if path.is_file() else None
