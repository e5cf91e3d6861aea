"""Latent directions found without labels, named by what they measurably change.

Directions: SeFa (Shen & Zhou, "Closed-Form Factorization of Latent Semantics in GANs", CVPR 2021). G's
first layer maps z linearly to features, y = A z (A: (features, z_dim); the dcgan family's first
ConvTranspose2d or the thesis family's dense stem, FastGAN's first ConvTranspose2d, the MLP's first
Linear). The unit directions d that move y most, max ||A d||, are the eigenvectors of A^T A, largest
eigenvalue first; they are orthonormal by construction. (GANSpace's PCA of that layer's outputs over
sampled z finds the same directions here: for an isotropic latent, the outputs' covariance is s^2 A A^T,
whose components map back to A^T A's eigenvectors; GANSpace differs only on a layer after a
nonlinearity, or for a non-isotropic latent.)

Names. Each direction is moved by a few amounts from a few fixed seeds' latents, and every image is
measured (MEASURES: fur and background brightness, saturation, warmth, head tilt, face size, eye
contrast, left-right light). A measure's within-seed correlation with the amount says how consistently
the direction moves it; the direction is named after the measure it moves most when |r| >= min_r,
else "direction K". Its sign is fixed so that + raises the measure it is named after.

An amount is in standard deviations of the latent distribution (1 for N(0, 1), 1/sqrt(3) for U(-1, 1)):
z + amount * std * d.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from catgan.errors import CatganError
from catgan.io import write_json
from catgan.sampling import latents_from_seeds, slerp

DIRECTIONS_FORMAT = "catgan-directions-v1"
Measure = Callable[[torch.Tensor], torch.Tensor]  # images (N, 3, H, W) float in [0, 1] -> (N,)


@dataclass(frozen=True)
class DirectionConfig:
    """How many directions to keep and how they are measured (changes what a cache holds)."""

    count: int = 10  # directions kept, largest eigenvalue first
    samples: int = 12  # seeds 0..samples-1 moved along each direction to measure it
    amounts: tuple[float, ...] = (-3.0, -1.5, 0.0, 1.5, 3.0)
    min_r: float = 0.6  # |within-seed correlation| a measure needs to name a direction

    def __post_init__(self) -> None:
        if not 1 <= self.count <= 4096 or not 2 <= self.samples <= 1024:
            raise CatganError(f"directions: count in [1, 4096] and samples in [2, 1024], got {self}")
        if len(set(self.amounts)) < 2:
            raise CatganError(f"directions: need at least two different amounts, got {self.amounts}")
        if not 0 < self.min_r <= 1:
            raise CatganError(f"directions: min_r must be in (0, 1], got {self.min_r}")


@dataclass(frozen=True)
class Direction:
    index: int  # 0 = the largest eigenvalue
    label: str  # "fur brightness", "head tilt 2", "direction 7"
    vector: torch.Tensor  # (z_dim,) unit length
    eigenvalue: float  # ||A d||^2: how much it moves G's first layer
    effects: dict[str, float] = field(default_factory=dict)  # measure -> within-seed r with the amount
    sizes: dict[str, float] = field(default_factory=dict)  # measure -> slope / its spread across cats
    change: float = 0.0  # mean |pixel change| per unit amount, in 0..255 levels

    def summary(self) -> str:
        """One line for `catgan edit --list`."""
        ranked = sorted(self.effects, key=lambda m: -abs(self.effects[m] * self.sizes.get(m, 0.0)))
        moved = ", ".join(f"{m} r {self.effects[m]:+.2f} x{self.sizes.get(m, 0.0):+.2f}" for m in ranked[:3])
        return (
            f"{self.index:3d}  {self.label:<24} eigenvalue {self.eigenvalue:8.3g}  "
            f"{self.change:5.1f} levels/unit  moves {moved}"
        )


@dataclass(frozen=True)
class Directions:
    """A generator's directions, with what identifies it and how they were measured."""

    generator_sha256: str
    latent_std: float
    config: DirectionConfig
    items: tuple[Direction, ...]

    def find(self, key: int | str | Direction) -> Direction:
        """A direction by index (int or "3"), by label ("fur brightness"), or itself."""
        if isinstance(key, Direction):
            return key
        text = str(key).strip()
        if text.isascii() and text.isdigit():
            k = int(text)
            if k >= len(self.items):
                raise CatganError(
                    f"direction {k} does not exist: there are {len(self.items)} (0-{len(self.items) - 1})"
                )
            return self.items[k]
        for d in self.items:
            if d.label == text.lower():
                return d
        names = ", ".join(repr(d.label) for d in self.items)
        raise CatganError(f"no direction named {text[:60]!r}: use an index or one of {names}")

    def to_json(self) -> dict[str, Any]:
        items = [{**asdict(d), "vector": [float(v) for v in d.vector]} for d in self.items]
        return {
            "format": DIRECTIONS_FORMAT,
            "generator_sha256": self.generator_sha256,
            "latent_std": self.latent_std,
            "config": asdict(self.config),
            "items": items,
        }


# ----------------------------------------------------------------------------------------------------------
# SeFa


def first_layer(G: nn.Module, z_dim: int) -> nn.Module:
    """G's first layer that takes z: the first Linear / ConvTranspose2d in module order with z_dim inputs."""
    for m in G.modules():
        if isinstance(m, nn.Linear) and m.in_features == z_dim:
            return m
        if isinstance(m, nn.ConvTranspose2d) and m.in_channels == z_dim:
            return m
    raise CatganError(f"{type(G).__name__} has no Linear or ConvTranspose2d layer taking z ({z_dim} inputs)")


def first_layer_matrix(G: nn.Module, z_dim: int) -> torch.Tensor:
    """A (features, z_dim) with first_layer(G)(z) = A z + bias, flattened (spectral norm included)."""
    layer = first_layer(G, z_dim)
    w = layer.weight.detach().float().cpu()  # Linear (out, z); ConvTranspose2d (z, out, kh, kw)
    return w if isinstance(layer, nn.Linear) else w.reshape(z_dim, -1).T


def sefa(G: nn.Module, z_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(eigenvalues (z_dim,), directions (z_dim, z_dim) one per row), largest eigenvalue first."""
    A = first_layer_matrix(G, z_dim).double()  # (F, z)
    values, vectors = torch.linalg.eigh(A.T @ A)  # ascending; columns orthonormal
    order = torch.argsort(values, descending=True)
    rows = vectors[:, order].T.float()  # (z, z)
    # eigenvectors have no sign: fix one (largest component positive) so every platform agrees
    flip = rows.gather(1, rows.abs().argmax(1, keepdim=True)).sign()
    return values[order].clamp_min(0).float(), rows * flip


def latent_std(cfg: Any) -> float:
    """Standard deviation of one latent coordinate: N(0, 1) -> 1, U(-1, 1) -> 1/sqrt(3)."""
    return 1.0 if cfg.latent == "normal" else 1 / math.sqrt(3)


# ----------------------------------------------------------------------------------------------------------
# Measures: cheap statistics of an aligned face (eyes at 50% +- ~22% of the width, 40% of the height)


def _luma(x: torch.Tensor) -> torch.Tensor:
    return 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]  # (N, H, W)


def _box(x: torch.Tensor, x0: float, x1: float, y0: float, y1: float) -> torch.Tensor:
    h, w = x.shape[-2:]
    return x[
        ...,
        round(y0 * h) : max(round(y1 * h), round(y0 * h) + 1),
        round(x0 * w) : max(round(x1 * w), round(x0 * w) + 1),
    ]


def _centre(x: torch.Tensor) -> torch.Tensor:
    return _box(_luma(x), 0.3, 0.7, 0.3, 0.75).mean((-2, -1))


def _border(x: torch.Tensor) -> torch.Tensor:
    L = _luma(x)  # (N, H, W)
    h, w = L.shape[-2:]
    k = max(1, h // 8)
    mask = torch.ones(h, w, dtype=torch.bool)
    mask[k : h - k, k : w - k] = False
    return L[:, mask].mean(1)


def _saturation(x: torch.Tensor) -> torch.Tensor:
    return (x.amax(1) - x.amin(1)).mean((-2, -1))  # chroma, HSV's max - min


def _warmth(x: torch.Tensor) -> torch.Tensor:
    return _box(x[:, 0] - x[:, 2], 0.2, 0.8, 0.2, 0.8).mean((-2, -1))  # red minus blue over the face


def _mass(x: torch.Tensor) -> torch.Tensor:
    """Where the face is: |luminance - the border's|, (N, H, W), summing to 1 per image."""
    m = (_luma(x) - _border(x)[:, None, None]).abs() + 1e-6
    return m / m.sum((-2, -1), keepdim=True)


def _tilt(x: torch.Tensor) -> torch.Tensor:
    """Height of the face's right half minus its left half (in image heights): + = turned clockwise."""
    m = _mass(x)
    h, w = m.shape[-2:]
    ys = (torch.arange(h, dtype=m.dtype) + 0.5)[:, None] / h
    half = w // 2
    left, right = m[..., :half], m[..., w - half :]
    cy = lambda part: (part * ys).sum((-2, -1)) / part.sum((-2, -1))  # noqa: E731
    return cy(right) - cy(left)


def _size(x: torch.Tensor) -> torch.Tensor:
    """Spread of the face mass about its centroid, in image sides."""
    m = _mass(x)
    h, w = m.shape[-2:]
    ys = (torch.arange(h, dtype=m.dtype)[:, None] + 0.5) / h
    xs = (torch.arange(w, dtype=m.dtype)[None, :] + 0.5) / w
    cy, cx = (m * ys).sum((-2, -1)), (m * xs).sum((-2, -1))
    r2 = (ys - cy[:, None, None]) ** 2 + (xs - cx[:, None, None]) ** 2
    return (m * r2).sum((-2, -1)).sqrt()


def _eyes(x: torch.Tensor) -> torch.Tensor:
    """How much lighter the eye patches are than the face around them (- = darker eyes)."""
    L = _luma(x)
    eyes = (
        _box(L, 0.22, 0.36, 0.33, 0.47).mean((-2, -1)) + _box(L, 0.64, 0.78, 0.33, 0.47).mean((-2, -1))
    ) / 2
    return eyes - _box(L, 0.2, 0.8, 0.25, 0.75).mean((-2, -1))


def _side_light(x: torch.Tensor) -> torch.Tensor:
    L = _luma(x)
    half = L.shape[-1] // 2
    return L[..., :half].mean((-2, -1)) - L[..., -half:].mean((-2, -1))  # + = lit from the left


MEASURES: dict[str, Measure] = {
    "fur brightness": _centre,
    "background brightness": _border,
    "colour saturation": _saturation,
    "fur warmth": _warmth,
    "head tilt": _tilt,
    "face size": _size,
    "eye contrast": _eyes,
    "left-right light": _side_light,
}


def measure(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """uint8 images (N, 3, H, W) -> {measure: (N,) float64}."""
    x = images.double() / 255
    return {name: fn(x) for name, fn in MEASURES.items()}


def within_r(values: torch.Tensor, amounts: torch.Tensor) -> tuple[float, float]:
    """(r, slope) of values (S, A) against amounts (A,), each seed's row centred first: how consistently
    and how far the amount moves the measure, whatever each seed starts from."""
    v = values - values.mean(1, keepdim=True)  # (S, A)
    a = (amounts - amounts.mean()).expand_as(v)
    saa, svv, sav = (a * a).sum(), (v * v).sum(), (a * v).sum()
    r = float(sav / (saa * svv).sqrt()) if svv > 1e-18 else 0.0
    return r, float(sav / saa)


# ----------------------------------------------------------------------------------------------------------
# Finding and naming


def move(z: torch.Tensor, vector: torch.Tensor, amounts: Sequence[float], std: float) -> torch.Tensor:
    """z (1, z_dim) or (S, z_dim) moved by each amount: (S * A, z_dim), seed-major."""
    a = torch.as_tensor(list(amounts), dtype=z.dtype)  # (A,)
    out = z[:, None, :] + (a * std)[None, :, None] * vector.to(z.dtype)[None, None, :]  # (S, A, z)
    return out.reshape(-1, z.shape[-1])


def _render(gen: Any, z: torch.Tensor, batch: int = 256) -> torch.Tensor:
    from catgan.generate import generate_from_latents

    return generate_from_latents(gen, z, batch=batch)  # (N, 3, H, W) uint8


def _named(index: int, vector: torch.Tensor, value: float, images: torch.Tensor, cfg: DirectionConfig):
    """A direction measured from its images (S * A, 3, H, W), seed-major, and named.

    For each measure: r, its within-seed correlation with the amount (how consistently the direction moves
    it), and its size, the slope over the measure's spread across the seeds at the amount nearest 0 (how
    far one unit moves it, in cat-to-cat differences). The name is the measure with the largest |r| * size
    among those with |r| >= min_r.
    """
    S, A = cfg.samples, len(cfg.amounts)
    amounts = torch.tensor(cfg.amounts, dtype=torch.float64)
    base = int(amounts.abs().argmin())
    effects, sizes = {}, {}
    for name, values in measure(images).items():
        v = values.reshape(S, A)
        r, slope = within_r(v, amounts)
        effects[name], sizes[name] = r, slope / max(float(v[:, base].std()), 1e-9)
    px = images.double().reshape(S, A, -1)
    lo, hi = int(amounts.argmin()), int(amounts.argmax())
    change = float((px[:, hi] - px[:, lo]).abs().mean() / (amounts[hi] - amounts[lo]))
    named = [m for m in effects if abs(effects[m]) >= cfg.min_r]
    best = max(named, key=lambda m: abs(effects[m] * sizes[m]), default=None)
    if best is not None and effects[best] < 0:  # + raises what it is named after
        vector = -vector
        effects = {m: -r for m, r in effects.items()}
        sizes = {m: -s for m, s in sizes.items()}
    return Direction(
        index,
        best or f"direction {index}",
        vector,
        value,
        {m: round(r, 4) for m, r in effects.items()},
        {m: round(s, 4) for m, s in sizes.items()},
        round(change, 4),
    )


def find_directions(gen: Any, cfg: DirectionConfig | None = None) -> Directions:
    """The generator's top SeFa directions, each measured and named (see the module docstring)."""
    cfg = cfg or DirectionConfig()
    z_dim = gen.model.z_dim
    values, rows = sefa(gen.G, z_dim)
    std = latent_std(gen.model)
    z0 = latents_from_seeds(gen.model, range(cfg.samples))  # (S, z)
    items: list[Direction] = []
    for k in range(min(cfg.count, z_dim)):
        images = _render(gen, move(z0, rows[k], cfg.amounts, std))  # (S * A, 3, H, W)
        items.append(_named(k, rows[k], float(values[k]), images, cfg))
    return Directions(gen.sha256, std, cfg, tuple(_unique(items)))


def _unique(items: list[Direction]) -> list[Direction]:
    """Second and later directions with the same name become "NAME 2", "NAME 3"."""
    seen: dict[str, int] = {}
    out = []
    for d in items:
        seen[d.label] = seen.get(d.label, 0) + 1
        n = seen[d.label]
        out.append(d if n == 1 else replace(d, label=f"{d.label} {n}"))
    return out


def from_json(data: Any, where: str = "directions") -> Directions:
    """Directions from to_json()'s dict. Raises CatganError on anything else."""
    try:
        if data.get("format") != DIRECTIONS_FORMAT:
            raise CatganError(f"{where}: not a catgan directions file (format {data.get('format')!r})")
        cfg = DirectionConfig(**{**data["config"], "amounts": tuple(data["config"]["amounts"])})
        items = tuple(
            Direction(**{**d, "vector": torch.tensor(d["vector"], dtype=torch.float32)})
            for d in data["items"]
        )
        return Directions(str(data["generator_sha256"]), float(data["latent_std"]), cfg, items)
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        raise CatganError(f"{where}: damaged directions file ({type(err).__name__}: {err})") from err


def cached_directions(gen: Any, path: str | Path | None, cfg: DirectionConfig | None = None) -> Directions:
    """find_directions, kept in the JSON file `path` (written when missing, or when it belongs to another
    generator or another DirectionConfig, or is damaged); path None: always computed."""
    cfg = cfg or DirectionConfig()
    if path is not None and Path(path).is_file():
        try:
            found = from_json(json.loads(Path(path).read_text()), str(path))
            z_ok = all(d.vector.shape == (gen.model.z_dim,) for d in found.items)
            if found.generator_sha256 == gen.sha256 and found.config == cfg and z_ok:
                return found
        except (OSError, json.JSONDecodeError, CatganError):
            pass  # recomputed and rewritten below
    found = find_directions(gen, cfg)
    if path is not None:
        write_json(path, found.to_json(), "directions cache")
    return found


def default_cache(out: str | Path, sha256: str) -> Path:
    """Where `catgan edit` keeps a generator's directions: beside its output, named by the generator."""
    return Path(out).parent / f"directions-{sha256[:12]}.json"


# ----------------------------------------------------------------------------------------------------------
# Editing and morphing


def check_latent(z: torch.Tensor, z_dim: int) -> torch.Tensor:
    """A latent as (1, z_dim) float32; refuses another size or non-finite values in one line."""
    z = torch.as_tensor(z).detach().to("cpu", torch.float32)
    if z.numel() != z_dim or z.ndim > 2 or (z.ndim == 2 and z.shape[0] != 1):
        raise CatganError(f"a latent must be (z_dim,) or (1, z_dim) with z_dim {z_dim}, got {tuple(z.shape)}")
    if not torch.isfinite(z).all():
        raise CatganError("the latent holds NaN or infinite values")
    return z.reshape(1, z_dim)


def check_amounts(amounts: Sequence[float], limit: float = 20.0) -> list[float]:
    values = [float(a) for a in amounts]
    if not values or not all(math.isfinite(a) and abs(a) <= limit for a in values):
        raise CatganError(
            f"amounts must be finite numbers in [-{limit:g}, {limit:g}], got {list(amounts)[:8]}"
        )
    return values


def parse_amounts(text: str) -> list[float]:
    """ "-3,-1.5,0,1.5,3" -> [-3.0, -1.5, 0.0, 1.5, 3.0]."""
    try:
        values = [float(t) for t in text.split(",")]
    except ValueError:
        raise CatganError(
            f"--amounts takes numbers separated by commas, e.g. -3,-1.5,0,1.5,3; got {text[:60]!r}"
        ) from None
    if len(values) > 64:
        raise CatganError(f"--amounts: at most 64 amounts, got {len(values)}")
    return check_amounts(values)


def edit_latents(z: torch.Tensor, direction: Direction, amounts: Sequence[float], std: float) -> torch.Tensor:
    """The latent (1, z_dim) moved by each amount (in latent standard deviations): (A, z_dim)."""
    return move(z, direction.vector, check_amounts(amounts), std)


def morph_latents(a: torch.Tensor, b: torch.Tensor, frames: int, spherical: bool = True) -> torch.Tensor:
    """(frames, z_dim) from latent a (1, z_dim) to b: slerp (catgan.sampling), the ends exactly a and b."""
    if frames < 2:
        raise CatganError(f"a morph needs at least 2 frames, got {frames}")
    t = torch.linspace(0, 1, frames)  # (F,)
    A, B = a.expand(frames, -1), b.expand(frames, -1)
    out = slerp(A, B, t) if spherical else A + t[:, None] * (B - A)
    out[0], out[-1] = a[0], b[0]
    return out


def resolve_latent(gen: Any, latent: Any) -> torch.Tensor:
    """A latent (1, z_dim) from a tensor, a NAME.latent.safetensors path, or a seed (int)."""
    if isinstance(latent, bool):
        raise CatganError(f"a latent is a tensor, a .latent.safetensors path or a seed, got {latent!r}")
    if isinstance(latent, int):
        return latents_from_seeds(gen.model, [latent])
    if isinstance(latent, str | Path):
        from catgan.projection.latent_file import latent_for

        return latent_for(latent, gen)
    return check_latent(latent, gen.model.z_dim)


def edit_images(gen: Any, latent: Any, direction: Any, amount: float | Sequence[float] = 1.0) -> torch.Tensor:
    """The cat of `latent` moved `amount` along `direction` (a Direction, an index, a name, or a (z_dim,)
    unit vector): uint8 (3, H, W), or (A, 3, H, W) for a sequence of amounts."""
    from catgan.generate import generate_from_latents

    z = resolve_latent(gen, latent)
    if isinstance(direction, torch.Tensor):
        vector = check_latent(direction, gen.model.z_dim)[0]
        direction = Direction(-1, "custom", vector / vector.norm().clamp_min(1e-12), 0.0)
    elif not isinstance(direction, Direction):
        direction = gen.directions().find(direction)
    many = isinstance(amount, Sequence)
    amounts = list(amount) if many else [amount]
    images = generate_from_latents(gen, edit_latents(z, direction, amounts, latent_std(gen.model)))
    return images if many else images[0]
