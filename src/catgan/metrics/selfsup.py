"""A feature space learned from cat faces alone: a small ResNet trained with SimCLR on the training faces.

Inception-v3 features know ImageNet's 1,000 classes, so a generator can lower Inception FID by matching
that class histogram without drawing better cats (Kynkäänniemi et al., ICLR 2023). This encoder never saw
an ImageNet label or weight, nor a held-out face (`catgan.data.split.is_holdout(name, 0.1)`); it is
trained by `benchmarks/train_selfsup.py` and shipped as `weights/features/selfsup-simclr-64.safetensors`
with a `.json` naming its sha256, its config and its training run. Why SimCLR and which augmentations
(no blur, no noise: the metric must see them): docs/feature-space.md.

    extractor = SelfSupExtractor.load(device="cpu")
    feats = extractor.features(images)        # uint8 (N, 3, 64 or 128, ...) -> float64 (N, 256)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from catgan.errors import CatganError

WEIGHTS_NAME = "selfsup-simclr-64"
RETRAIN_HINT = "reinstall catgan, or retrain them with: python benchmarks/train_selfsup.py --data DIR/cats-64"
# Per-channel statistics of the training faces at 64 px (benchmarks/train_selfsup.py prints them); fixed
# constants so the features never depend on the batch being scored.
FACE_MEAN = (0.4813, 0.4320, 0.3852)
FACE_STD = (0.2609, 0.2519, 0.2534)


def weights_dir() -> Path:
    """Where the feature networks ship: weights/features/, apart from the bundled generators."""
    return Path(__file__).resolve().parents[1] / "weights" / "features"


@dataclass(frozen=True)
class EncoderConfig:
    """The encoder's shape. `widths[-1]` is the feature dimension (the pre-projection embedding)."""

    input_size: int = 64
    widths: tuple[int, ...] = (32, 64, 128, 256)
    proj_dim: int = 128

    def __post_init__(self) -> None:
        if not isinstance(self.input_size, int) or not 16 <= self.input_size <= 256:
            raise CatganError(f"input_size must be an int in [16, 256], got {self.input_size!r}")
        if not self.widths or not all(isinstance(w, int) and 1 <= w <= 1024 for w in self.widths):
            raise CatganError(f"widths must be ints in [1, 1024], got {self.widths!r}")
        if not isinstance(self.proj_dim, int) or not 1 <= self.proj_dim <= 1024:
            raise CatganError(f"proj_dim must be an int in [1, 1024], got {self.proj_dim!r}")

    @property
    def feature_dim(self) -> int:
        return self.widths[-1]

    @classmethod
    def from_json(cls, data: dict) -> EncoderConfig:
        return cls(**{**data, "widths": tuple(data["widths"])})


class Block(nn.Module):
    """A ResNet basic block that halves the resolution: two 3x3 convs and a strided 1x1 shortcut."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=2, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.skip(x))


class Encoder(nn.Module):
    """(B, 3, S, S) normalised -> (B, widths[-1]) pooled features; `project`: SimCLR's head (training)."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.widths
        # A strided stem: 64 px faces at full resolution would cost 4x the compute for little gain.
        self.stem = nn.Sequential(
            nn.Conv2d(3, w[0], 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w[0])
        )
        self.blocks = nn.Sequential(*(Block(a, b) for a, b in zip(w[:-1], w[1:], strict=True)))
        self.head = nn.Sequential(nn.Linear(w[-1], w[-1]), nn.ReLU(), nn.Linear(w[-1], cfg.proj_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))  # (B, 32, S/2, S/2)
        x = self.blocks(x)  # (B, 256, S/16, S/16)
        return x.mean(dim=(2, 3))  # (B, 256)

    def project(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(h)  # (B, proj_dim)

    def encoder_state(self) -> dict[str, torch.Tensor]:
        """The weights that ship: everything but the projection head (features are taken before it)."""
        return {k: v.detach().contiguous() for k, v in self.state_dict().items() if not k.startswith("head.")}


def to_input(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float (B, 3, size, size), antialiased resize, normalised by the faces' stats."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise CatganError(f"expected uint8 images (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
    x = images.to(torch.float32) / 255.0  # (B, 3, H, W) in [0, 1]
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return normalise(x)


def normalise(x: torch.Tensor) -> torch.Tensor:
    """float (B, 3, H, W) in [0, 1] -> zero-mean, unit-variance channels (over the training faces)."""
    mean = torch.tensor(FACE_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(FACE_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class SelfSupExtractor:
    """A loaded encoder. `features(images)` maps uint8 images (any size) to float64 (N, feature_dim)."""

    encoder: Encoder
    device: torch.device
    batch: int = 256
    name: str = WEIGHTS_NAME
    resize: str = field(default="")
    space: str = "selfsup"  # the feature space's short name (metrics.features)
    networks: tuple[str, ...] = (WEIGHTS_NAME,)  # what metrics.selection checks against D's networks

    def __post_init__(self) -> None:
        if not self.resize:
            s = self.encoder.cfg.input_size
            self.resize = f"bilinear antialiased to {s}x{s} from uint8 (torch F.interpolate, antialias=True)"

    @classmethod
    def load(
        cls, device: str | torch.device = "cpu", batch: int = 256, path: str | Path | None = None
    ) -> SelfSupExtractor:
        """Load the shipped weights (or `path`, a .safetensors with its .json beside it) onto `device`.

        Refuses, in one line, weights that are missing or whose sha256 differs from the one in the .json.
        """
        from safetensors.torch import load_file

        if batch < 1:
            raise CatganError(f"batch must be >= 1, got {batch}")
        path = Path(path) if path is not None else weights_dir() / f"{WEIGHTS_NAME}.safetensors"
        meta_path = path.with_suffix(".json")
        if not path.is_file() or not meta_path.is_file():
            missing = path if not path.is_file() else meta_path
            raise CatganError(
                f"the self-supervised encoder's weights are missing ({missing}); {RETRAIN_HINT}"
            )
        try:
            meta = json.loads(meta_path.read_text())
            cfg = EncoderConfig.from_json(meta["config"])
            expected = str(meta["sha256"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CatganError(f"{meta_path} is unreadable ({err}); {RETRAIN_HINT}") from None
        actual = file_sha256(path)
        if actual != expected:
            raise CatganError(
                f"{path} has sha256 {actual[:12]}..., its .json records {expected[:12]}...: the weights were "
                f"changed or damaged; {RETRAIN_HINT}"
            )
        encoder = Encoder(cfg)
        state = load_file(str(path))
        try:
            encoder.load_state_dict(state, strict=False)  # the projection head is not shipped
        except RuntimeError as err:
            raise CatganError(f"{path} does not fit the encoder of its .json: {err}") from None
        unset = set(encoder.encoder_state()) - set(state)
        if unset:
            raise CatganError(f"{path} lacks {len(unset)} encoder tensors, e.g. {sorted(unset)[0]}")
        device = torch.device(device)
        encoder = encoder.to(device).eval()
        return cls(encoder=encoder, device=device, batch=batch, name=f"{WEIGHTS_NAME} sha256:{actual[:12]}")

    @torch.inference_mode()
    def features(self, images: torch.Tensor) -> np.ndarray:
        """uint8 (N, 3, H, W) on any device -> float64 numpy (N, feature_dim), `batch` images at a time."""
        size = self.encoder.cfg.input_size
        out = np.empty((len(images), self.encoder.cfg.feature_dim), dtype=np.float64)
        for start in range(0, len(images), self.batch):
            chunk = images[start : start + self.batch].to(self.device)
            out[start : start + len(chunk)] = self.encoder(to_input(chunk, size)).double().cpu().numpy()
        return out


def save_weights(encoder: Encoder, path: str | Path, info: dict) -> Path:
    """Write the encoder's weights and their .json (config, sha256, `info`), each atomically."""
    from safetensors.torch import save_file

    from catgan.checkpoint import atomic_write, write_json

    path = Path(path)
    atomic_write(path, lambda tmp: save_file(encoder.encoder_state(), str(tmp)), "encoder weights")
    meta = {"config": asdict(encoder.cfg), "sha256": file_sha256(path), **info}
    write_json(path.with_suffix(".json"), meta)
    return path
