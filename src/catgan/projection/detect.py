"""Finding a cat's face in a photo without landmarks: OpenCV's frontal cat-face Haar cascade.

The cascade gives an upright rectangle. Its box matches prepare's landmark square closely: on the 80
annotated sample photos (../shared/data/cat-landmarks/CAT_00; docs/projection.md) the eye midpoint sits at
(0.507, 0.404) of the rectangle (median; prepare puts it at (0.5, 0.4) of its square) and the landmark
square's side is 1.036 rectangle widths. The detector gives no rotation, so the face is not levelled.

The photo is searched on a grey copy at most SEARCH_SIDE px on its longer side (0.5 s instead of several
on a 12 Mpx photo); a detection whose centre lies inside a larger one is the same face, found twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from catgan.data import align
from catgan.errors import CatganError
from catgan.metrics.catface import OPENCV_HINT
from catgan.projection.face import FaceError

CASCADE = "haarcascade_frontalcatface_extended.xml"
SEARCH_SIDE = 640
EYE_IN_RECT = (0.507, 0.404)  # the eye midpoint in the rectangle, as fractions of its width and height
SIDE_PER_WIDTH = 1.036  # prepare's face side per rectangle width


def _cv2():
    try:
        import cv2
    except ImportError:
        raise CatganError(
            f"finding a face without --eyes or a .cat file needs OpenCV; run: {OPENCV_HINT}"
        ) from None
    return cv2


@dataclass
class FaceDetector:
    """The cascade and its search settings (chosen on the 80 sample photos: docs/projection.md)."""

    cascade: object  # cv2.CascadeClassifier
    scale_factor: float = 1.05
    min_neighbors: int = 3
    min_face: int = 24  # px on the search copy

    @classmethod
    def load(cls) -> FaceDetector:
        cv2 = _cv2()
        path = Path(getattr(getattr(cv2, "data", None), "haarcascades", "") or "") / CASCADE
        if not path.is_file():
            raise CatganError(
                f"OpenCV {cv2.__version__} has no {CASCADE} (only opencv < 5 ships it); run: {OPENCV_HINT}"
            )
        return cls(cv2.CascadeClassifier(str(path)))

    def detect(self, image: np.ndarray) -> list[tuple[float, float, float, float]]:
        """(H, W, 3) uint8 RGB -> the distinct faces found, (x, y, w, h) in photo pixels, largest first."""
        cv2 = _cv2()
        h, w = image.shape[:2]
        scale = min(1.0, SEARCH_SIDE / max(h, w))
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        if scale < 1:
            grey = cv2.resize(
                grey, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
            )
        found = self.cascade.detectMultiScale(
            grey, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(self.min_face,) * 2
        )
        rects = sorted((tuple(float(v) / scale for v in r) for r in found), key=lambda r: -r[2] * r[3])
        kept: list[tuple[float, float, float, float]] = []
        for x, y, rw, rh in rects:
            cx, cy = x + rw / 2, y + rh / 2
            if not any(kx <= cx <= kx + kw and ky <= cy <= ky + kh for kx, ky, kw, kh in kept):
                kept.append((x, y, rw, rh))
        return kept

    def face_box(self, image: np.ndarray) -> align.FaceBox:
        """prepare's face square for the one face in the photo. Raises FaceError for none or several."""
        faces = self.detect(image)
        if not faces:
            raise FaceError(
                "no cat face found by OpenCV's cat-face detector; give the eyes with --eyes X1,Y1,X2,Y2 "
                "or put the landmarks in NAME.jpg.cat beside the photo"
            )
        if len(faces) > 1:
            where = ", ".join(f"({x + w / 2:.0f}, {y + h / 2:.0f})" for x, y, w, h in faces[:4])
            raise FaceError(
                f"found {len(faces)} cat faces (centred at {where}); project one at a time with --eyes "
                "X1,Y1,X2,Y2 naming the cat's eyes"
            )
        return rect_box(faces[0])


def rect_box(rect: tuple[float, float, float, float]) -> align.FaceBox:
    """A detector rectangle (x, y, w, h; pixel indices) -> prepare's face square (continuous coordinates)."""
    x, y, w, h = rect
    side = SIDE_PER_WIDTH * w
    cx, cy = x + EYE_IN_RECT[0] * w, y + EYE_IN_RECT[1] * h  # the eye midpoint
    return align.FaceBox((cx, cy), 0.0, cx - align.EYE_X * side, cy - align.EYE_Y * side, side)
