"""Generation-test helpers: a tiny run folder made with the checkpoint API (no training needed), and
reading a written image back."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from catgan import checkpoint as ckpt
from catgan.config import get_preset, to_dict
from catgan.models import build_discriminator, build_generator

STEP = 12


def make_run(run_dir: Path, ema: bool = True, step: int = STEP) -> dict[str, torch.nn.Module]:
    """A tiny-16 run folder with one checkpoint; returns its G (and G_ema) in eval mode.

    BatchNorm gets non-trivial running statistics and the EMA copy differs from G, so a test can tell
    which weights (and which BN mode) drew an image.
    """
    preset = get_preset("tiny-16")
    model, train = preset.model, dataclasses.replace(preset.train, ema=0.9 if ema else 0.0)
    torch.manual_seed(0)
    G, D = build_generator(model.generator), build_discriminator(model.discriminator)
    G.train()
    with torch.no_grad():
        for _ in range(3):  # moves BN running stats away from (0, 1)
            G(torch.randn(8, model.generator.z_dim) * 2 + 0.5)
    G_ema = copy.deepcopy(G)
    with torch.no_grad():
        for p in G_ema.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ckpt.save_run_config(run_dir, model, train)
    state = {
        "G": G.state_dict(),
        "D": D.state_dict(),
        "G_ema": G_ema.state_dict() if ema else None,
        "step": step,
        "epoch": 1,
        "model_config": to_dict(model),
        "train_config": to_dict(train),
        "elapsed": 12.5,  # seconds of training, as the trainer records them
    }
    ckpt.save_checkpoint(ckpt.checkpoint_path(run_dir, step), state)
    nets = {"G": G.eval()}
    if ema:
        nets["G_ema"] = G_ema.eval()
    return nets


def read_png(path: Path) -> torch.Tensor:
    """An image file as uint8 (3, H, W)."""
    with Image.open(path) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)  # (3, H, W)
