"""Cat-face rate: the share of images in which OpenCV's cat-face Haar cascade finds a face.

A cheap proxy that needs no pretrained network. The cascades (`haarcascade_frontalcatface.xml` and
`..._extended.xml`) ship only with `opencv-python-headless` < 5. They were trained on whole photos,
so a tight face crop is first padded by half its size on every side with edge pixels and upscaled to
about 192 px; then a face counts if either cascade finds one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from catgan.errors import CatganError

CASCADES = ("haarcascade_frontalcatface.xml", "haarcascade_frontalcatface_extended.xml")
OPENCV_HINT = 'pip install "opencv-python-headless<5"'


def _cv2():
    try:
        import cv2
    except ImportError:
        raise CatganError(f"the cat-face rate needs OpenCV; run: {OPENCV_HINT}") from None
    return cv2


@dataclass
class CatFaceDetector:
    """Both cat-face cascades plus the preprocessing that makes them work on tight 16-256 px crops."""

    cascades: list  # list[cv2.CascadeClassifier]
    size: int = 192  # padded crop is resized to size x size
    pad: float = 0.5  # pad each side by this fraction of the crop's size, with edge pixels
    scale_factor: float = 1.05
    min_neighbors: int = 3
    min_face: float = 0.25  # smallest face side, as a fraction of `size`

    @classmethod
    def load(cls, **options) -> CatFaceDetector:
        cv2 = _cv2()
        folder = Path(getattr(getattr(cv2, "data", None), "haarcascades", "") or "")
        missing = [name for name in CASCADES if not (folder / name).is_file()]
        if missing:
            raise CatganError(
                f"OpenCV {cv2.__version__} has no {missing} (only opencv < 5 ships them); run: {OPENCV_HINT}"
            )
        return cls(cascades=[cv2.CascadeClassifier(str(folder / name)) for name in CASCADES], **options)

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (size, size) uint8 grey, padded with edge pixels and upscaled."""
        cv2 = _cv2()
        h, w = image.shape[:2]
        ph, pw = int(round(h * self.pad)), int(round(w * self.pad))
        padded = cv2.copyMakeBorder(image, ph, ph, pw, pw, cv2.BORDER_REPLICATE)
        grey = cv2.cvtColor(padded, cv2.COLOR_RGB2GRAY)
        return cv2.resize(grey, (self.size, self.size), interpolation=cv2.INTER_LINEAR)

    def detect(self, image: np.ndarray) -> bool:
        """Is there a cat face in this (H, W, 3) uint8 RGB image?"""
        grey = self.prepare(image)
        side = max(8, int(self.size * self.min_face))
        for cascade in self.cascades:
            found = cascade.detectMultiScale(
                grey, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(side, side)
            )
            if len(found):
                return True
        return False

    def found(self, images: torch.Tensor, desc: str | None = None) -> np.ndarray:
        """uint8 (N, 3, H, W) -> bool (N,): a face found in each image. desc: name the pass in a progress
        bar / lines (catgan.progress; minutes for 10,000 images on a CPU), else it is silent."""
        from catgan.progress import progress_pass

        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise CatganError(f"expected uint8 images (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        hwc = images.permute(0, 2, 3, 1).contiguous().cpu().numpy()  # (N, H, W, 3)
        out = np.zeros(len(hwc), dtype=bool)
        with progress_pass(desc or "", len(hwc), "images", enabled=desc is not None) as bar:
            for i, img in enumerate(hwc):
                out[i] = self.detect(img)
                bar.update(1)
        return out

    def rate(self, images: torch.Tensor, desc: str | None = None) -> float:
        """Share of uint8 (N, 3, H, W) images with a cat face found."""
        if len(images) == 0:
            raise CatganError("the cat-face rate needs at least one image")
        return float(self.found(images, desc).mean())
