"""Drawing cats from a trained generator: latents from seeds, batches, grids, interpolation, export.

A seed is the unit of reproducibility (as EDM's `--seeds=0-63`): seed s always gives the latent drawn
from `torch.Generator().manual_seed(s)` on the CPU, whatever the batch and whatever other seeds are asked
for, so any single image can be drawn again. The trainer draws its fixed sample grid by the same rule.

A generator comes from one of three places, all returned as a `LoadedGenerator` in eval mode:
a run folder (its latest checkpoint, EMA weights by default), an exported `.safetensors` file,
or a model bundled in the package (`src/catgan/weights/NAME.safetensors`).
"""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from catgan.checkpoint import (
    RUN_CONFIG,
    atomic_write,
    export_generator,
    generator_hash,
    latest_checkpoint,
    load_checkpoint,
    load_generator_file,
    run_folder,
    step_checkpoints,
)
from catgan.config import PRESETS, ModelConfig, from_dict
from catgan.data.dataset import to_uint8 as dataset_to_uint8
from catgan.errors import CatganError
from catgan.models.dcgan import Generator, sample_latents, standing_stats
from catgan.runtime import resolve_device

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable  # Python >= 3.11; only for the annotation

DEFAULT_MODEL = "cats-64"
SEED_LIMIT = 2**32  # seeds are integers in [0, 2^32)
MAX_SEEDS = 1_000_000  # one request; a guard against "0-4294967295" filling memory with a list
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
GIF_MAX_FRAME_MS = 655_350  # a GIF stores a frame's delay in centiseconds, in 16 bits
_MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# ---- seeds and latents ---------------------------------------------------------------------------


def _seed_int(token: str, text: str) -> int:
    if not token.isdigit():  # also refuses "-3", "+3", "1.5", ""
        raise CatganError(
            f"bad seed {token!r} in {text!r}: seeds are whole numbers in [0, 2^32), e.g. 0-63,70"
        )
    value = int(token)
    if value >= SEED_LIMIT:
        raise CatganError(f"seed {value} in {text!r} is too large: seeds are in [0, {SEED_LIMIT - 1}]")
    return value


def parse_seeds(text: str) -> list[int]:
    """ "0-63,70,80-82" -> [0, 1, ..., 63, 70, 80, 81, 82], in the order given (repeats kept)."""
    if not text or not text.strip():
        raise CatganError("no seeds given: use e.g. --seeds 0-63 or --seeds 3,7,11")
    seeds: list[int] = []
    for raw in text.split(","):
        token = raw.strip()
        if not token:
            raise CatganError(
                f"empty item in seeds {text!r}: write e.g. 0-63,70 (no doubled or trailing comma)"
            )
        lo_text, sep, hi_text = token.partition("-")
        if not sep:
            seeds.append(_seed_int(token, text))
            continue
        lo, hi = _seed_int(lo_text.strip(), text), _seed_int(hi_text.strip(), text)
        if hi < lo:
            raise CatganError(f"seed range {token!r} goes down: write it as {hi}-{lo}")
        if len(seeds) + hi - lo + 1 > MAX_SEEDS:
            raise CatganError(f"seeds {text!r} ask for more than {MAX_SEEDS} images at once")
        seeds.extend(range(lo, hi + 1))
    if len(seeds) > MAX_SEEDS:
        raise CatganError(f"seeds {text!r} ask for more than {MAX_SEEDS} images at once")
    return seeds


def format_seeds(seeds: Sequence[int]) -> str:
    """The inverse of parse_seeds for display: [0, 1, 2, 5] -> "0-2,5"."""
    parts: list[str] = []
    i = 0
    while i < len(seeds):
        j = i
        while j + 1 < len(seeds) and seeds[j + 1] == seeds[j] + 1:
            j += 1
        parts.append(str(seeds[i]) if i == j else f"{seeds[i]}-{seeds[j]}")
        i = j + 1
    return ",".join(parts)


def latents_from_seeds(
    cfg: ModelConfig, seeds: Sequence[int], device: str | torch.device | None = None
) -> torch.Tensor:
    """z (N, z_dim): row i is seed i's latent, drawn alone on the CPU so it never depends on the others."""
    if len(seeds) == 0:
        raise CatganError("no seeds given: need at least one seed")
    rows = []
    for seed in seeds:
        if not 0 <= int(seed) < SEED_LIMIT:
            raise CatganError(f"seed {seed} is out of range: seeds are in [0, {SEED_LIMIT - 1}]")
        gen = torch.Generator().manual_seed(int(seed))
        rows.append(sample_latents(cfg, 1, gen))  # (1, z_dim), CPU
    z = torch.cat(rows)  # (N, z_dim)
    return z if device is None else z.to(device)


# ---- loading generators --------------------------------------------------------------------------


@dataclass
class LoadedGenerator:
    """A generator ready to draw: G in eval mode (BatchNorm uses its running statistics, so each
    image depends only on its own latent), the config that built it, and where it came from."""

    G: nn.Module
    model: ModelConfig
    name: str  # for people: "cats-64", "runs/cats64@step-00012000", "cats.safetensors"
    sha256: str  # weights + config hash (checkpoint.generator_hash), as stored on export
    source: str  # "run:PATH", "file:PATH" or "bundled:NAME"
    info: dict[str, Any] = field(default_factory=dict)  # step, ema, provenance, ...

    @property
    def device(self) -> torch.device:
        return next(self.G.parameters()).device


def _weights_root() -> Traversable:
    """The package's weights folder (a Traversable, so it works from a zipped install too)."""
    return importlib.resources.files("catgan") / "weights"


def list_bundled() -> list[str]:
    """Names of the generators shipped in the package (src/catgan/weights/NAME.safetensors), sorted."""
    root = _weights_root()
    if not root.is_dir():
        return []
    return sorted(p.name[: -len(".safetensors")] for p in root.iterdir() if p.name.endswith(".safetensors"))


def _build(tensors: dict[str, torch.Tensor], cfg: ModelConfig, where: str, device: torch.device) -> nn.Module:
    G = Generator(cfg)
    try:
        G.load_state_dict(tensors, strict=True)  # fp16 weights are copied into fp32 parameters
    except RuntimeError as err:
        first = str(err).splitlines()[1:2] or [str(err)]
        raise CatganError(
            f"{where}: weights do not fit the model config they came with: {first[0].strip()}"
        ) from err
    G.requires_grad_(False)
    return G.eval().to(device)


def _generator_state(state: dict[str, Any], ema: bool) -> tuple[dict[str, torch.Tensor], bool]:
    """G's state dict from a training checkpoint: the EMA copy when asked for and present."""
    use_ema = bool(ema and state.get("G_ema"))
    sd = state["G_ema"] if use_ema else state["G"]
    # an EMA kept as torch.optim.swa_utils.AveragedModel prefixes "module." and adds a counter
    sd = {k.removeprefix("module."): v for k, v in sd.items() if k != "n_averaged"}
    return sd, use_ema


def _run_generator(run: Path, ema: bool, hint: str):
    """(checkpoint path, its state, ModelConfig, G's state dict, whether it is the EMA copy) of a
    run's latest checkpoint, or of `run` itself when it is a checkpoint file (e.g. checkpoints/best.pt);
    `hint` ends the error for a run without checkpoints."""
    if run.is_file():
        ckpt = run
    elif not run.is_dir():
        raise CatganError(f"run folder not found: {run}")
    elif (ckpt := latest_checkpoint(run)) is None:
        raise CatganError(f"{run} has no checkpoints yet (checkpoints/step-*.pt); {hint}")
    state = load_checkpoint(ckpt)
    try:
        cfg = from_dict(ModelConfig, dict(state["model_config"]))
    except (TypeError, ValueError) as err:
        raise CatganError(f"{ckpt}: unreadable model config: {err}") from err
    sd, used_ema = _generator_state(state, ema)
    return ckpt, state, cfg, sd, used_ema


def _load_run(run: str | Path, ema: bool, device: torch.device) -> LoadedGenerator:
    run = Path(run)
    ckpt, state, cfg, sd, used_ema = _run_generator(run, ema, "train it first")
    step = int(state.get("step", 0))
    G = _build(sd, cfg, str(ckpt), device)
    info = {
        "step": step,
        "epoch": state.get("epoch"),
        "ema": used_ema,
        "checkpoint": str(ckpt),
        "train_config": state.get("train_config"),
    }
    return LoadedGenerator(G, cfg, f"{run.name}@step-{step:08d}", generator_hash(sd, cfg), f"run:{run}", info)


def _load_file(path: str | Path, device: torch.device, name: str | None, source: str) -> LoadedGenerator:
    tensors, cfg, provenance = load_generator_file(path)
    G = _build(tensors, cfg, str(path), device)
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in tensors.values() if t.is_floating_point()})
    info = {"provenance": provenance, "dtype": ",".join(dtypes), "step": provenance.get("step")}
    return LoadedGenerator(G, cfg, name or Path(path).stem, generator_hash(tensors, cfg), source, info)


@contextlib.contextmanager
def _bundled_file(name: str) -> Iterator[Path]:
    """The bundled model `name` as a real file (even from a zipped install); one error when there is none."""
    if not _MODEL_NAME_RE.match(name):
        raise CatganError(f"bad model name {name!r}: bundled models are named like {DEFAULT_MODEL}")
    bundled = list_bundled()
    if name not in bundled:
        if not bundled:
            raise CatganError(
                f"no bundled model is installed (looked for {name}.safetensors in catgan/weights); "
                "pass --run DIR or --weights FILE"
            )
        if name in PRESETS:  # a recipe whose trained weights are not shipped (e.g. thesis-128)
            raise CatganError(
                f"no trained {name} is bundled in this version (bundled models: {', '.join(bundled)}); "
                f"train one with `catgan train DATA --preset {name} --run RUN` and pass --run RUN"
            )
        raise CatganError(f"unknown model {name!r}; bundled models: {', '.join(bundled)}")
    with importlib.resources.as_file(_weights_root() / f"{name}.safetensors") as path:
        yield path


def _load_bundled(name: str, device: torch.device) -> LoadedGenerator:
    with _bundled_file(name) as path:
        return _load_file(path, device, name, f"bundled:{name}")


def is_generator_source(source: str | Path) -> bool:
    """Whether `source` names a generator (an exported .safetensors file, or a bundled model's name such
    as "cats-64" that is not also a path here) rather than a training checkpoint or a run folder."""
    path = Path(source)
    return path.suffix == ".safetensors" or (not path.exists() and str(source) in list_bundled())


def read_generator(source: str | Path) -> tuple[dict[str, torch.Tensor], ModelConfig, dict[str, Any]]:
    """(state dict, ModelConfig, provenance) of an exported .safetensors file or of a bundled model."""
    if Path(source).suffix == ".safetensors":
        return load_generator_file(source)
    with _bundled_file(str(source)) as path:
        return load_generator_file(path)


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
    dev = resolve_device(device)
    if run is not None:
        return _load_run(run, ema, dev)
    if weights is not None:
        return _load_file(weights, dev, None, f"file:{weights}")
    return _load_bundled(model or DEFAULT_MODEL, dev)


# ---- generating ----------------------------------------------------------------------------------


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] (N, 3, H, W) float -> uint8 in [0, 255] on the CPU (round to nearest)."""
    return dataset_to_uint8(images.detach()).cpu()


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
    """
    if batch < 1:
        raise CatganError(f"batch must be >= 1, got {batch}")
    if not 0.0 <= truncation <= 1.0:
        raise CatganError(f"truncation must be in [0, 1] (1 = none), got {truncation}")
    _check_eval(gen.G)
    dev = gen.device if device is None else resolve_device(device)
    if dev != gen.device:
        gen.G.to(dev)
    if len(seeds) == 0:
        raise CatganError("no seeds given: need at least one seed")
    out = []
    with torch.inference_mode():
        for i in range(0, len(seeds), batch):  # latents per batch: memory stays flat for 50k seeds
            z = latents_from_seeds(gen.model, seeds[i : i + batch]) * truncation  # (B, z_dim), CPU
            out.append(to_uint8(gen.G(z.to(dev))))  # (B, 3, H, W) uint8
    return torch.cat(out)


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


# ---- images on disk ------------------------------------------------------------------------------


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> torch.Tensor:
    """(N, 3, H, W) uint8 -> one (3, H', W') uint8 image, `nrow` images per row (default ~square),
    `padding` black pixels between and around them (torchvision's layout)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise CatganError(f"make_grid wants images of shape (N, 3, H, W), got {tuple(images.shape)}")
    n, _, h, w = images.shape
    if n == 0:
        raise CatganError("make_grid got no images")
    if padding < 0:
        raise CatganError(f"padding must be >= 0, got {padding}")
    ncol = min(n, nrow if nrow is not None else math.ceil(math.sqrt(n)))
    if ncol < 1:
        raise CatganError(f"nrow must be >= 1, got {nrow}")
    nrows = math.ceil(n / ncol)
    hp, wp = h + padding, w + padding
    grid = torch.zeros(3, nrows * hp + padding, ncol * wp + padding, dtype=images.dtype)
    for k in range(n):
        r, c = divmod(k, ncol)
        grid[:, padding + r * hp : padding + r * hp + h, padding + c * wp : padding + c * wp + w] = images[k]
    return grid


def image_format(path: str | Path) -> str:
    """Pillow's format name for an image path, from its suffix (PNG or JPEG)."""
    fmt = IMAGE_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise CatganError(f"cannot write {Path(path).name}: use a .png or .jpg file name")
    return fmt


def _to_pil(image: torch.Tensor):
    from PIL import Image

    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
        raise CatganError(f"expected a uint8 image (3, H, W), got {image.dtype} {tuple(image.shape)}")
    return Image.fromarray(image.permute(1, 2, 0).contiguous().numpy(), "RGB")


def save_image(image: torch.Tensor, path: str | Path, quality: int = 95) -> Path:
    """Write a uint8 (3, H, W) image as PNG or JPEG (by suffix), atomically (temp file + rename)."""
    fmt = image_format(path)
    pil = _to_pil(image)
    opts = {"quality": quality} if fmt == "JPEG" else {}
    return atomic_write(path, lambda tmp: pil.save(tmp, format=fmt, **opts), "image")


def save_images(images: torch.Tensor, seeds: Sequence[int], out_dir: str | Path) -> list[Path]:
    """One PNG per seed, EDM style: OUT_DIR/seed000012.png."""
    if len(images) != len(seeds):
        raise CatganError(f"{len(images)} images for {len(seeds)} seeds")
    out_dir = Path(out_dir)
    return [save_image(img, out_dir / f"seed{s:06d}.png") for img, s in zip(images, seeds, strict=True)]


# ---- interpolation -------------------------------------------------------------------------------


def slerp(a: torch.Tensor, b: torch.Tensor, t: float | torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Spherical interpolation from a (t=0) to b (t=1) along the great circle between them.

    a, b: (..., D); t: a number or a tensor broadcastable to a's leading dims -> (..., D).
    The endpoints are returned exactly; equal-norm inputs keep that norm all the way (a Gaussian
    latent stays on the shell where it has mass, which a straight line leaves). Nearly parallel or
    antiparallel inputs (sin(angle) < eps) fall back to a straight line.
    """
    t = torch.as_tensor(t, dtype=a.dtype, device=a.device)
    t = t.unsqueeze(-1)  # (..., 1)
    na, nb = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    cos = ((a / na.clamp_min(1e-12)) * (b / nb.clamp_min(1e-12))).sum(-1, keepdim=True).clamp(-1, 1)
    omega = torch.arccos(cos)  # (..., 1) angle between a and b
    so = torch.sin(omega)
    parallel = so.abs() < eps
    safe = torch.where(parallel, torch.ones_like(so), so)
    wa = torch.where(parallel, 1 - t, torch.sin((1 - t) * omega) / safe)
    wb = torch.where(parallel, t, torch.sin(t * omega) / safe)
    return wa * a + wb * b


def keyframe_indices(n_seeds: int, frames: int, loop: bool = False) -> list[int]:
    """Which frames are exactly the seeds' latents: spread evenly, first at 0, last at frames-1
    (or, with loop, the path returns to the first seed one frame after the end)."""
    segments = n_seeds if loop else n_seeds - 1
    span = frames if loop else frames - 1
    return [round(i * span / segments) for i in range(n_seeds)]


def check_interpolation(n_seeds: int, frames: int) -> None:
    """Refuse a walk that cannot pass through every seed (called before any work is done)."""
    if n_seeds < 2:
        raise CatganError(f"interpolation needs at least 2 seeds, got {n_seeds}: e.g. --seeds 3,7,11")
    if frames < n_seeds:
        raise CatganError(f"--frames {frames} is fewer than the {n_seeds} seeds; use at least {n_seeds}")


def interpolation_latents(
    cfg: ModelConfig,
    seeds: Sequence[int],
    frames: int,
    loop: bool = False,
    spherical: bool = True,
    truncation: float = 1.0,
) -> torch.Tensor:
    """z (frames, z_dim) walking through the seeds' latents in order, slerp between neighbours.

    Frame keyframe_indices(...)[i] is exactly seed i's latent (times `truncation`). With loop=True the
    walk continues from the last seed back toward the first, so a looping GIF has no jump.
    """
    check_interpolation(len(seeds), frames)
    if not 0.0 <= truncation <= 1.0:
        raise CatganError(f"truncation must be in [0, 1] (1 = none), got {truncation}")
    keys = latents_from_seeds(cfg, seeds) * truncation  # (K, z_dim)
    idx = keyframe_indices(len(seeds), frames, loop)
    ends = idx[1:] + ([frames] if loop else [])  # each segment runs from one key frame to the next
    starts_z = keys
    ends_z = torch.cat([keys[1:], keys[:1]]) if loop else keys[1:]
    out = torch.empty(frames, cfg.z_dim)
    for i, (start, end) in enumerate(zip(idx, ends, strict=False)):
        steps = torch.arange(start, end) - start
        t = steps.to(torch.float32) / (end - start)  # [0, 1) over the segment
        a, b = starts_z[i].expand(len(t), -1), ends_z[i].expand(len(t), -1)
        out[start:end] = slerp(a, b, t) if spherical else a + t[:, None] * (b - a)
    if not loop:
        out[-1] = keys[-1]
    return out


def check_gif_fps(fps: float) -> None:
    """Refuse a frame rate a GIF cannot hold (called before any work is done)."""
    if not fps >= 1000 / GIF_MAX_FRAME_MS:
        raise CatganError(
            f"fps must be >= {1000 / GIF_MAX_FRAME_MS:.4f} (a GIF frame lasts at most "
            f"{GIF_MAX_FRAME_MS / 1000:g} s), got {fps}"
        )


def save_gif(frames: torch.Tensor, path: str | Path, fps: float = 20.0) -> Path:
    """uint8 frames (T, 3, H, W) -> an animated GIF that loops forever, written atomically."""
    if Path(path).suffix.lower() != ".gif":
        raise CatganError(f"cannot write {Path(path).name} as a GIF: use a .gif file name")
    check_gif_fps(fps)
    images = [_to_pil(f) for f in frames]
    duration = max(20, round(1000 / fps))  # ms per frame; browsers slow anything under 20 ms down

    def write(tmp: Path) -> None:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0)

    return atomic_write(path, write, "GIF")


def save_animation(
    frames: torch.Tensor, path: str | Path, fps: float = 20.0, nrow: int | None = None
) -> Path:
    """Interpolation frames to disk by suffix: .gif animates, .png/.jpg lays them out in a grid
    (nrow frames per row; default all in one strip)."""
    if Path(path).suffix.lower() == ".gif":
        return save_gif(frames, path, fps)
    image_format(path)  # a clear error for any other suffix, before the work
    return save_image(make_grid(frames, nrow=nrow or len(frames)), path)


# ---- export --------------------------------------------------------------------------------------


def _run_config(run_dir: Path) -> dict[str, Any]:
    """The run folder's config.json as the trainer wrote it ({} when missing or unreadable)."""
    try:
        return json.loads((run_dir / RUN_CONFIG).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def origin_label(origin: dict[str, Any]) -> str:
    """What a run was started from (its "init_from" record), for people: "RUN/CHECKPOINT" or a generator
    file's name."""
    return f"{origin['run']}/{origin['checkpoint']}" if "run" in origin else str(origin["weights"])


def _lineage_checkpoints(
    state: dict[str, Any], run_dir: Path, ancestors: Sequence[str | Path], start: int
) -> list[tuple[int, Path]]:
    """Step checkpoints from step `start` on of the runs `ancestors`, which must be the runs this one was
    started from (`catgan train --init-from`, recorded as "init_from" in every checkpoint): a parent's
    steps up to the fork point, then its own parent's up to the parent's fork point, and so on."""
    by_name: dict[str, Path] = {}
    for a in ancestors:
        path = Path(a)
        if not path.is_dir():
            raise CatganError(f"--average-with {a}: no such run folder")
        by_name[path.resolve().name] = path
    found: list[tuple[int, Path]] = []
    child, origin = run_dir.resolve().name, state.get("init_from")
    while by_name and origin is not None and origin.get("run") in by_name:
        parent = by_name.pop(origin["run"])
        fork = int(origin["step"])
        found += [(s, p) for s, p in step_checkpoints(parent) if start <= s <= fork]
        child, origin = parent.resolve().name, _run_config(parent).get("init_from")
    if by_name:
        came = f"was started from {origin_label(origin)}" if origin else "was not started with --init-from"
        raise CatganError(
            f"--average-with {next(iter(by_name.values()))}: not an ancestor of this run ({child} {came})"
        )
    return found


def average_checkpoints(
    ckpt: Path, state: dict[str, Any], ema: bool, start: int, ancestors: Sequence[str | Path] = ()
) -> tuple[dict[str, torch.Tensor], list[int]]:
    """G's weights in checkpoint `ckpt` (loaded as `state`; the EMA copy when ema) averaged with those of
    its run's step checkpoints from step `start` up to it, each counted once: checkpoint averaging, a long
    uniform average of the generator. `ancestors`: the runs it was started from (--init-from), whose
    checkpoints from `start` up to the fork point join the average. Floating tensors are averaged in
    float64 (BatchNorm statistics too: re-estimate them with standing_stats); integer counters stay
    ckpt's. Returns (weights, steps used, oldest first)."""
    step = int(state.get("step", 0))
    if start > step:
        raise CatganError(f"--average-from {start} is after the exported checkpoint's step {step}")
    run_dir = run_folder(ckpt)
    others = [(s, p) for s, p in step_checkpoints(run_dir) if start <= s < step]  # ckpt itself: s == step
    others = sorted(_lineage_checkpoints(state, run_dir, ancestors, start) + others)
    if not others:
        raise CatganError(
            f"--average-from {start}: {run_dir} keeps no step checkpoints from step {start} to {step} "
            "to average with (see --keep when training)"
        )
    sd, used_ema = _generator_state(state, ema)
    total = {k: v.double() for k, v in sd.items() if v.is_floating_point()}
    for _, path in others:
        other_state = load_checkpoint(path)
        other, other_ema = _generator_state(other_state, ema)
        same = other_state["model_config"] == state["model_config"] and other.keys() == sd.keys()
        if not same or other_ema != used_ema:
            raise CatganError(f"{path} holds another generator than {ckpt.name}: they cannot be averaged")
        for k in total:
            total[k] += other[k].double()
    n = len(others) + 1
    averaged = {k: (total[k] / n).to(v.dtype) if k in total else v for k, v in sd.items()}
    return averaged, [s for s, _ in others] + [step]


def export_run(
    run_dir: str | Path,
    out: str | Path,
    ema: bool = True,
    fp16: bool = False,
    standing: int = 0,
    average_from: int | None = None,
    average_with: Sequence[str | Path] = (),
    device: str | torch.device = "cpu",
) -> Path:
    """The run's latest generator (or that of one checkpoint file of a run; EMA if present and ema) as a
    self-describing .safetensors file. average_from averages it with the run's step checkpoints from that
    step on, and with those of the runs it was started from (average_with; average_checkpoints).
    standing > 0 then re-estimates its BatchNorm statistics over that many batches of 64 latents
    (models.dcgan.standing_stats; seed 0, so the same latents on every device) on `device`: a GPU does
    it in seconds where a CPU takes a minute for a large G.

    Provenance in the metadata: the run folder's name (not its path: a shipped file should not carry the
    trainer's directories), checkpoint, step, epoch, training wall time, whether EMA was used, the train
    config, and the preset / dataset entries of the run's config.json where the trainer recorded them.
    """
    if Path(out).suffix != ".safetensors":
        raise CatganError(f"--out must end in .safetensors, got {Path(out).name}")
    if standing < 0:
        raise CatganError(f"--standing-stats must be >= 0 batches, got {standing}")
    if average_with and average_from is None:
        raise CatganError("--average-with needs --average-from STEP: the first step to average")
    ckpt, state, cfg, sd, used_ema = _run_generator(Path(run_dir), ema, "nothing to export")
    run_dir = run_folder(ckpt)
    averaged_steps: list[int] = []
    if average_from is not None:
        sd, averaged_steps = average_checkpoints(ckpt, state, used_ema, average_from, average_with)
    G = _build(sd, cfg, str(ckpt), resolve_device(device))  # refuse to export weights that would not load
    if standing_stats(G, cfg, batches=standing):  # 0 when standing is 0 or G has no BatchNorm
        sd = G.state_dict()  # export_generator moves it to the CPU
    else:
        standing = 0
    provenance: dict[str, Any] = {
        "run": run_dir.resolve().name,
        "checkpoint": ckpt.name,
        "step": int(state.get("step", 0)),
        "epoch": state.get("epoch"),
        "train_seconds": round(float(state.get("elapsed", 0.0)), 1),
        "ema": used_ema,
        "weights_dtype": "float16" if fp16 else "float32",
        "standing_stats_batches": standing,
        "averaged_steps": averaged_steps,
        "averaged_with_runs": [Path(a).resolve().name for a in average_with],
        "train_config": state.get("train_config"),
    }
    for key, value in _run_config(run_dir).items():  # preset, dataset fingerprint, ... what the trainer wrote
        if key not in ("model", "train", "state_dict", "out", "dtype") and key not in provenance:
            provenance[key] = value
    return export_generator(sd, cfg, out, dtype=torch.float16 if fp16 else None, **provenance)


def describe(gen: LoadedGenerator) -> str:
    """One line for logs: name, size, step, EMA, source."""
    step = gen.info.get("step")
    parts = [gen.name, f"{gen.model.arch} {gen.model.image_size}px"]
    if step is not None:
        parts.append(f"step {step}")
    if gen.info.get("ema"):
        parts.append("EMA")
    return ", ".join(parts) + f" ({gen.source})"


__all__ = [
    "DEFAULT_MODEL",
    "LoadedGenerator",
    "describe",
    "export_run",
    "format_seeds",
    "generate_from_latents",
    "generate_images",
    "image_format",
    "check_gif_fps",
    "check_interpolation",
    "interpolation_latents",
    "keyframe_indices",
    "latents_from_seeds",
    "list_bundled",
    "load_generator",
    "make_grid",
    "parse_seeds",
    "save_animation",
    "save_gif",
    "save_image",
    "save_images",
    "slerp",
    "to_uint8",
]
