"""Projecting a photo: find and align the face, the encoder's first guess, refine by optimisation.

    projector = Projector(gen, ProjectConfig(steps=200))      # loads the encoder and perceptual net once
    p = projector.project("tom.jpg")                          # a photo path (face found as face.py says)
    p = projector.project(face)                               # or a face: uint8 (3, H, W), PIL or (H, W, 3)
    p.latent, p.image, p.aligned, p.losses

`LoadedGenerator.project` calls this; `catgan project` writes the result (projection.output).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from catgan.errors import CatganError
from catgan.projection.encoder import LatentEncoder, bundled_encoder, load_encoder
from catgan.projection.face import AlignedFace, Alignment, FaceHint, find_face
from catgan.projection.invert import InvertConfig, invert, mean_latent
from catgan.projection.perceptual import PerceptualDistance


@dataclass(frozen=True)
class ProjectConfig:
    """encoder: "auto" (the shipped encoder of a bundled model, else none), "none", or a file path.
    perceptual: "auto", "lite0" or "selfsup" (projection.perceptual)."""

    steps: int = 200
    tune: int = 0
    encoder: str = "auto"
    perceptual: str = "auto"
    seed: int = 0
    progress: bool = False

    def invert_config(self) -> InvertConfig:
        return InvertConfig(steps=self.steps, tune_steps=self.tune, seed=self.seed)


@dataclass
class Projection:
    """One projected face. latent (z_dim,) float32; image, aligned, initial: uint8 (3, S, S) (G's drawing,
    the aligned face, the start's drawing); losses: the final terms (pixel_l1, perceptual, prior, total);
    alignment: where the face sits in its photo (None for a face given as pixels); G: the tuned
    generator when tuning ran (the image is its drawing, not the original G's)."""

    latent: torch.Tensor
    image: torch.Tensor
    aligned: torch.Tensor
    initial: torch.Tensor
    losses: dict[str, float]
    alignment: Alignment | None = None
    notes: tuple[str, ...] = ()
    seconds: float = 0.0
    start: str = "mean latent"  # or "encoder NAME"
    tune_steps: int = 0
    G: nn.Module | None = field(default=None, repr=False)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float (B, 3, H, W) in [-1, 1]."""
    return images.float() / 127.5 - 1


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float -> uint8, rounded (the pixels `catgan generate` writes)."""
    from catgan.images import to_uint8 as convert

    return convert(images)


def face_tensor(image: Any, size: int) -> torch.Tensor:
    """An already aligned face -> uint8 (3, size, size): a uint8 tensor (3, H, W), an (H, W, 3) uint8
    array or a PIL image; a face of another size is centre-cropped square and Lanczos-resized."""
    from PIL import Image

    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
            raise CatganError(
                f"a face tensor must be uint8 (3, H, W), got {image.dtype} {tuple(image.shape)}"
            )
        image = image.permute(1, 2, 0).cpu().numpy()
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise CatganError(f"a face array must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise CatganError(f"project wants a photo path or a face image, got {type(image).__name__}")
    im = image.convert("RGB")
    if im.size != (size, size):
        side = min(im.size)
        x0, y0 = (im.width - side) // 2, (im.height - side) // 2
        im = im.crop((x0, y0, x0 + side, y0 + side)).resize((size, size), Image.LANCZOS)
    return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)  # (3, S, S)


class Projector:
    """A generator with its encoder and perceptual network loaded once, projecting faces one by one."""

    def __init__(self, gen: Any, config: ProjectConfig | None = None, encoder: LatentEncoder | None = None):
        self.gen, self.config = gen, config or ProjectConfig()
        self.config.invert_config()  # bad numbers fail before any work
        self.encoder, self.encoder_name = (
            (encoder, "encoder (given)") if encoder is not None else self._encoder()
        )
        self.distance = PerceptualDistance(self.config.perceptual).to(gen.device)
        self.detector = None  # built on the first photo that needs it

    def _encoder(self) -> tuple[LatentEncoder | None, str]:
        choice = self.config.encoder
        if choice == "none":
            return None, ""
        if choice == "auto":
            name = (
                self.gen.source.removeprefix("bundled:") if self.gen.source.startswith("bundled:") else None
            )
            path = bundled_encoder(name) if name else None
            if path is None:
                return None, ""
        else:
            path = Path(choice)
        return load_encoder(path, self.gen), f"encoder {path.name}"

    def find(self, photo: str | Path, hint: FaceHint | None = None) -> AlignedFace:
        """The aligned face of a photo at G's size (projection.face.find_face; raises FaceError)."""
        size = self.gen.model.image_size
        hint = hint or FaceHint()
        if self.detector is None and not hint.aligned and hint.eyes is None:
            from catgan.projection.face import cat_file

            if not cat_file(Path(photo)).is_file():
                from catgan.projection.detect import FaceDetector

                self.detector = FaceDetector.load()
        return find_face(photo, size, hint, self.detector)

    def project(self, image: Any, hint: FaceHint | None = None) -> Projection:
        """A photo path (the face found and aligned) or an aligned face (face_tensor) -> Projection."""
        start = time.perf_counter()
        if isinstance(image, str | Path):
            found = self.find(image, hint)
            face, alignment, notes = (
                torch.from_numpy(found.face.copy()).permute(2, 0, 1),
                found.alignment,
                found.notes,
            )
        else:
            face, alignment, notes = face_tensor(image, self.gen.model.image_size), None, ()
        result = self.invert_faces(face[None])
        return Projection(
            latent=result["z"][0], image=result["image"][0], aligned=face, initial=result["initial"][0],
            losses={k: float(v[0]) for k, v in result["losses"].items()}, alignment=alignment, notes=notes,
            seconds=time.perf_counter() - start, start=self.encoder_name or "mean latent",
            tune_steps=self.config.tune, G=result["G"],
        )  # fmt: skip

    def initial_latents(self, target: torch.Tensor) -> torch.Tensor:
        """The start (B, z_dim): the encoder's guess, or the mean latent without an encoder."""
        if self.encoder is None:
            return mean_latent(self.gen.model, len(target))
        with torch.no_grad():
            return self.encoder(target.to(self.gen.device)).cpu()

    def invert_faces(self, faces: torch.Tensor, **kw: Any) -> dict[str, Any]:
        """uint8 faces (B, 3, S, S) -> {z, image (uint8), initial (uint8), losses, G}; kw: invert()'s
        mask / degrade. Each face is inverted independently of the others in the batch."""
        target = to_float(faces)
        z0 = self.initial_latents(target)
        with torch.no_grad():
            initial = to_uint8(self.gen.G(z0.to(self.gen.device)))
        inv = invert(
            self.gen.G, self.gen.model, target, z_init=z0, config=self.config.invert_config(),
            distance=self.distance, progress=self.config.progress, **kw,
        )  # fmt: skip
        return {
            "z": inv.z,
            "image": to_uint8(inv.image),
            "initial": initial,
            "losses": inv.losses,
            "G": inv.G,
        }


def project(
    gen: Any,
    image: Any,
    steps: int = 200,
    encoder: Any = None,
    tune: int = 0,
    perceptual: str = "auto",
    seed: int = 0,
    hint: FaceHint | None = None,
    progress: bool = False,
) -> Projection:
    """One photo or face into `gen` (LoadedGenerator.project). encoder: None = "auto" (the shipped
    encoder of a bundled model, else the mean latent), "none", a file path, or a LatentEncoder."""
    given = encoder if isinstance(encoder, LatentEncoder) else None
    choice = "auto" if encoder is None or given is not None else str(encoder)
    config = ProjectConfig(steps, tune, choice, perceptual, seed, progress)
    return Projector(gen, config, encoder=given).project(image, hint)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB between uint8 images (B, 3, H, W) (peak 255), per image (B,)."""
    mse = (a.double() - b.double()).pow(2).mean(dim=(1, 2, 3))
    return 10 * torch.log10(255.0**2 / mse.clamp_min(1e-10))
