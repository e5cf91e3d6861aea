"""A loaded generator and drawing from it: load a source (catgan.sources) into a LoadedGenerator in eval
mode, then images by seed (catgan.sampling's rule) or by latent, in batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from catgan.checkpoint import generator_hash
from catgan.errors import CatganError
from catgan.images import to_uint8
from catgan.models import build_generator
from catgan.runtime import resolve_device
from catgan.sampling import check_truncation, latents_from_seeds
from catgan.sources import Source, from_options, read_generator, run_generator


@dataclass
class LoadedGenerator:
    """A generator ready to draw: G in eval mode (BatchNorm uses its running statistics, so each
    image depends only on its own latent), the config that built it, and where it came from."""

    G: nn.Module
    model: Any  # the generator config (catgan.models: family, image_size, z_dim, latent, ...)
    name: str  # for people: "cats-64", "runs/cats64@step-00012000", "cats.safetensors"
    sha256: str  # weights + config hash (checkpoint.generator_hash), as stored on export
    source: str  # "run:PATH", "file:PATH" or "bundled:NAME"
    info: dict[str, Any] = field(default_factory=dict)  # step, ema, provenance, ...
    _directions: Any = field(default=None, repr=False, compare=False)  # directions(), once computed

    @property
    def device(self) -> torch.device:
        return next(self.G.parameters()).device

    def generate(self, seeds: Sequence[int], batch: int = 64, truncation: float = 1.0) -> torch.Tensor:
        """uint8 (N, 3, H, W) on the CPU, one image per seed: the pixels `catgan generate --seeds` draws."""
        return generate_images(self, list(seeds), batch=batch, truncation=truncation)

    def interpolate(
        self, seeds: Sequence[int], frames: int = 60, loop: bool = False, spherical: bool = True,
        truncation: float = 1.0, batch: int = 64,
    ) -> torch.Tensor:  # fmt: skip
        """uint8 (frames, 3, H, W): the walk `catgan interpolate` draws through the seeds' cats."""
        from catgan.sampling import interpolation_latents

        z = interpolation_latents(self.model, list(seeds), frames, loop, spherical, truncation)
        return generate_from_latents(self, z, batch=batch)  # (frames, 3, H, W)

    def save_grid(self, seeds: Sequence[int], path: str | Path, nrow: int | None = None, **kw: Any) -> Path:
        """The seeds' cats as one grid image (.png or .jpg), written atomically; kw: batch, truncation."""
        from catgan.images import image_format, make_grid, save_image

        image_format(path)  # a bad suffix fails before any work
        return save_image(make_grid(self.generate(seeds, **kw), nrow=nrow), path)

    def project(self, image: Any, steps: int = 200, encoder: Any = None, **kw: Any) -> Any:
        """A photo (path: the face found and aligned) or an aligned face (uint8 (3, H, W), PIL, (H, W, 3))
        -> a catgan.projection.project.Projection (latent, image, aligned, losses). encoder: None (the
        shipped encoder of a bundled model, else the mean latent), "none", a file or a LatentEncoder;
        kw: tune, perceptual, seed, hint (a projection.face.FaceHint), progress."""
        from catgan.projection.project import project

        return project(self, image, steps=steps, encoder=encoder, **kw)

    def directions(self, count: int = 10, cache: str | Path | None = None) -> Any:
        """Latent directions found without labels (SeFa), named by what they measurably change:
        catgan.projection.directions.Directions, computed once per object (and kept in `cache`, a .json)."""
        from catgan.projection.directions import DirectionConfig, cached_directions

        cfg = DirectionConfig(count=count)
        if self._directions is None or self._directions.config != cfg:
            self._directions = cached_directions(self, cache, cfg)
        return self._directions

    def edit(self, latent: Any, direction: Any, amount: float | Sequence[float] = 1.0) -> torch.Tensor:
        """uint8 (3, H, W): the cat of `latent` (a tensor (1, z_dim), a .latent.safetensors path or a seed)
        moved `amount` latent std units along `direction` (an index, a name from directions(), or a
        vector); (A, 3, H, W) for a list of amounts."""
        from catgan.projection.directions import edit_images

        return edit_images(self, latent, direction, amount)


def build_checked(tensors: dict[str, torch.Tensor], cfg: Any, where: str, device: torch.device) -> nn.Module:
    G = build_generator(cfg)
    try:
        G.load_state_dict(tensors, strict=True)  # fp16 weights are copied into fp32 parameters
    except RuntimeError as err:
        first = str(err).splitlines()[1:2] or [str(err)]
        raise CatganError(
            f"{where}: weights do not fit the model config they came with: {first[0].strip()}"
        ) from err
    G.requires_grad_(False)
    return G.eval().to(device)


def _load_run(run: str | Path, ema: bool, device: torch.device) -> LoadedGenerator:
    run = Path(run)
    ckpt, state, cfg, sd, used_ema = run_generator(run, ema, "train it first")
    step = int(state.get("step", 0))
    G = build_checked(sd, cfg, str(ckpt), device)
    info = {
        "step": step,
        "epoch": state.get("epoch"),
        "ema": used_ema,
        "checkpoint": str(ckpt),
        "train_config": state.get("train_config"),
    }
    return LoadedGenerator(G, cfg, f"{run.name}@step-{step:08d}", generator_hash(sd, cfg), f"run:{run}", info)


def _loaded_file(tensors, cfg, provenance: dict[str, Any], source: Source, dev) -> LoadedGenerator:
    G = build_checked(tensors, cfg, source.value, dev)
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in tensors.values() if t.is_floating_point()})
    info = {"provenance": provenance, "dtype": ",".join(dtypes), "step": provenance.get("step")}
    name = source.value if source.kind == "bundled" else Path(source.value).stem
    return LoadedGenerator(G, cfg, name, generator_hash(tensors, cfg), source.label, info)


def load(source: Source, ema: bool = True, device: str | torch.device = "cpu") -> LoadedGenerator:
    """The generator `source` names, in eval mode on `device`; `ema` picks a run's EMA weights when it
    has them (exported files already hold the chosen weights)."""
    dev = resolve_device(device)
    if source.kind in ("run", "checkpoint"):
        return _load_run(source.value, ema, dev)
    tensors, cfg, provenance = read_generator(source)
    return _loaded_file(tensors, cfg, provenance, source, dev)


def load_generator(
    run: str | Path | None = None,
    weights: str | Path | None = None,
    model: str | None = None,
    ema: bool = True,
    device: str | torch.device = "cpu",
) -> LoadedGenerator:
    """A generator from a run folder, an exported .safetensors file, or a bundled model by name.

    At most one of run / weights / model; with none, the bundled DEFAULT_MODEL ("cats-64").
    `ema` picks a run's EMA weights when it has them (exported files already hold the chosen weights).
    """
    given = [n for n, v in (("run", run), ("weights", weights), ("model", model)) if v is not None]
    if len(given) > 1:
        raise CatganError(f"give only one of --run, --weights, --model (got {', '.join(given)})")
    return load(from_options(run, weights, model), ema, device)


def _check_eval(G: nn.Module) -> None:
    training = [n or type(G).__name__ for n, m in G.named_modules() if m.training]
    if training:
        raise CatganError(
            f"generator module {training[0]!r} is in training mode: BatchNorm would mix the images of a "
            "batch; call .eval() first"
        )


def generate_images(
    gen: LoadedGenerator,
    seeds: Sequence[int],
    batch: int = 64,
    truncation: float = 1.0,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """uint8 images (N, 3, H, W) on the CPU, one per seed, in the order of `seeds`.

    Batched for speed; a seed's image does not depend on the batch or the other seeds (G is in eval
    mode). `device` defaults to G's own; another device moves G there. truncation psi in [0, 1]
    scales each latent toward the distribution's mean (0): z * psi.
    Note: on the CPU the dcgan family is bit-exact across batch sizes; the thesis family's dense stem is
    a GEMM whose rounding depends on the batch size (~1e-7), which can move a rare pixel by one level.
    For more images than memory should hold at once, iter_images yields them batch by batch.
    """
    batches = iter_images(gen, seeds, batch, truncation, device)
    with torch.inference_mode():
        return torch.cat([images for _, images in batches])


def iter_images(
    gen: LoadedGenerator,
    seeds: Sequence[int],
    batch: int = 64,
    truncation: float = 1.0,
    device: str | torch.device | None = None,
) -> Iterator[tuple[Sequence[int], torch.Tensor]]:
    """(the batch's seeds, their uint8 images (B, 3, H, W) on the CPU) per batch of `seeds`, each drawn
    only when asked for: memory stays flat however many seeds (`catgan generate --out-dir` writes each
    batch before drawing the next). The pixels are generate_images'. Arguments are checked at the call,
    before the first batch."""
    if batch < 1:
        raise CatganError(f"batch must be >= 1, got {batch}")
    check_truncation(truncation)
    _check_eval(gen.G)
    if len(seeds) == 0:
        raise CatganError("no seeds given: need at least one seed")
    dev = gen.device if device is None else resolve_device(device)
    if dev != gen.device:
        gen.G.to(dev)
    return _batches(gen, seeds, batch, truncation, dev)


def _batches(gen: LoadedGenerator, seeds: Sequence[int], batch: int, truncation: float, dev: torch.device):
    for i in range(0, len(seeds), batch):
        chunk = seeds[i : i + batch]
        with torch.inference_mode():  # not held across the yield: the caller's code runs outside it
            z = latents_from_seeds(gen.model, chunk) * truncation  # (B, z_dim), CPU
            images = to_uint8(gen.G(z.to(dev)))  # (B, 3, H, W) uint8
        yield chunk, images


def generate_from_latents(gen: LoadedGenerator, z: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """uint8 images (N, 3, H, W) on the CPU for latents z (N, z_dim), e.g. interpolation_latents."""
    if batch < 1:
        raise CatganError(f"batch must be >= 1, got {batch}")
    _check_eval(gen.G)
    out = []
    with torch.inference_mode():
        for i in range(0, len(z), batch):
            out.append(to_uint8(gen.G(z[i : i + batch].to(gen.device))))
    return torch.cat(out)


def describe(gen: LoadedGenerator) -> str:
    """One line for logs: name, size, step, EMA, source."""
    step = gen.info.get("step")
    kind = getattr(gen.model, "arch", gen.model.family)  # the DCGAN family's variant, else the family
    parts = [gen.name, f"{kind} {gen.model.image_size}px"]
    if step is not None:
        parts.append(f"step {step}")
    if gen.info.get("ema"):
        parts.append("EMA")
    return ", ".join(parts) + f" ({gen.source})"
