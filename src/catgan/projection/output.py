"""What `catgan project` writes for one photo, every file atomically:

    DIR/NAME.aligned.png          the aligned face (the target)
    DIR/NAME.projected.png        the generator's drawing of the latent
    DIR/NAME.side.png             both side by side (aligned | projected)
    DIR/NAME.latent.safetensors   projection.latent_file's format; metadata besides: the generator's name
                                  and source, the alignment, the losses, the start, the tuning steps

A latent from a tuned projection (tune_steps > 0) draws the projected image only with the tuned weights,
which are not written; the metadata says so (reproducible_with_generator: false).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from catgan import __version__
from catgan.images import save_image
from catgan.projection.latent_file import LATENT_SUFFIX, save_latent

SUFFIXES = ("aligned.png", "projected.png", "side.png", LATENT_SUFFIX.lstrip("."))


def side_by_side(a: torch.Tensor, b: torch.Tensor, gap: int = 2) -> torch.Tensor:
    """uint8 (3, H, W) images -> one (3, H, 2W + gap) image, a black gap between."""
    gap_px = torch.zeros(3, a.shape[1], gap, dtype=torch.uint8)
    return torch.cat([a, gap_px, b], dim=2)


def latent_metadata(projection: Any, gen: Any, photo: str) -> dict[str, str]:
    info = {
        "catgan_version": __version__,
        "generator": gen.name,
        "generator_source": gen.source,
        "latent_distribution": gen.model.latent,
        "z_dim": str(gen.model.z_dim),
        "photo": photo,
        "start": projection.start,
        "tune_steps": str(projection.tune_steps),
        "reproducible_with_generator": str(projection.tune_steps == 0).lower(),
        "losses": json.dumps({k: round(v, 6) for k, v in projection.losses.items()}, sort_keys=True),
    }
    if projection.alignment is not None:
        info["alignment"] = json.dumps(projection.alignment.as_json(), sort_keys=True)
    return info


def write_projection(
    projection: Any, gen: Any, out_dir: str | Path, name: str, photo: str = ""
) -> list[Path]:
    """The four files of one projection; returns their paths."""
    out = Path(out_dir)
    paths = [out / f"{name}.{s}" for s in SUFFIXES]
    save_image(projection.aligned, paths[0])
    save_image(projection.image, paths[1])
    save_image(side_by_side(projection.aligned, projection.image), paths[2])
    save_latent(paths[3], projection.latent, gen.sha256, **latent_metadata(projection, gen, photo))
    return paths
