"""The CAT dataset's `NAME.jpg.cat` landmark files: parse, validate, and the known fixes.

A `.cat` file is one line `9 x1 y1 ... x9 y9`: left eye, right eye, mouth, left ear 1-3, right ear 1-3
(ear points go round each ear: outer base, tip, inner base on the left; inner base, tip, outer base on the
right). Coordinates are pixel indices on the photo as stored (no EXIF orientation applied).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources

import numpy as np

N_POINTS = 9
LEFT_EYE, RIGHT_EYE, MOUTH = 0, 1, 2
LEFT_EAR_1, RIGHT_EAR_3 = 3, 8  # the crop width is the distance between these two (after rotation)
LEFT_EAR_TIP, RIGHT_EAR_TIP = 4, 7

# Annotations that are wrong in the original data, with why. 00000003_019: the reference preprocessing
# deletes it. 00000003_015: the nine points sketch a small face on the cat's left ear; its shape is that
# of a face (align.check_geometry passes it: its ratios lie inside the range of the 80 sample photos'),
# so only its name can catch it.
KNOWN_BAD = {
    "00000003_019.jpg.cat": "the reference preprocessing deletes it",
    "00000003_015.jpg.cat": "all nine points lie on the cat's left ear",
}

# A point may lie outside the photo (ear tips often do), but not by more than this many photo sizes.
FAR_OUTSIDE = 1.0
MIN_EYE_DISTANCE = 1.0  # pixels; closer eyes give no direction to level


class AnnotationError(ValueError):
    """A `.cat` file that cannot be used; the message is the one-line reason."""


@dataclass(frozen=True)
class Landmarks:
    """Nine (x, y) points in photo pixel coordinates. points: (9, 2) float64."""

    points: np.ndarray

    @property
    def left_eye(self) -> np.ndarray:
        return self.points[LEFT_EYE]

    @property
    def right_eye(self) -> np.ndarray:
        return self.points[RIGHT_EYE]


def parse_cat(data: bytes | str) -> Landmarks:
    """Parse the text of a `.cat` file. Raises AnnotationError with a one-line reason."""
    if isinstance(data, bytes):
        try:
            data = data.decode("ascii")
        except UnicodeDecodeError:
            raise AnnotationError("annotation is not text") from None
    fields = data.split()
    if not fields:
        raise AnnotationError("annotation is empty")
    values = []
    for field in fields:
        try:
            values.append(float(field))
        except ValueError:
            raise AnnotationError(f"annotation holds a non-number {field[:20]!r}") from None
    if values[0] != N_POINTS or len(values) != 1 + 2 * N_POINTS:
        raise AnnotationError(
            f"annotation must be '9' and 18 coordinates, got count {fields[0][:10]!r} "
            f"and {len(values) - 1} coordinates"
        )
    if not all(math.isfinite(v) for v in values):
        raise AnnotationError("annotation holds NaN or infinite coordinates")
    return Landmarks(np.asarray(values[1:], dtype=np.float64).reshape(N_POINTS, 2))


def validate(landmarks: Landmarks, width: int, height: int) -> None:
    """Check the points against the photo they belong to. Raises AnnotationError."""
    p = landmarks.points
    margin = FAR_OUTSIDE * max(width, height)
    far = (p[:, 0] < -margin) | (p[:, 0] > width + margin) | (p[:, 1] < -margin) | (p[:, 1] > height + margin)
    if far.any():
        i = int(np.flatnonzero(far)[0])
        raise AnnotationError(
            f"landmark {i + 1} at ({p[i, 0]:g}, {p[i, 1]:g}) lies far outside the {width}x{height} photo"
        )
    face = p[[LEFT_EYE, RIGHT_EYE, MOUTH]]
    outside = (face[:, 0] < 0) | (face[:, 0] >= width) | (face[:, 1] < 0) | (face[:, 1] >= height)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise AnnotationError(
            f"{('left eye', 'right eye', 'mouth')[i]} at ({face[i, 0]:g}, {face[i, 1]:g}) "
            f"lies outside the {width}x{height} photo"
        )
    if np.hypot(*(landmarks.right_eye - landmarks.left_eye)) < MIN_EYE_DISTANCE:
        raise AnnotationError("both eyes are annotated on the same spot")


def load_outliers() -> frozenset[str]:
    """The 134 photo names (NNNNNNNN_NNN, no extension) the original system removed before training."""
    text = resources.files("catgan.data").joinpath("outliers.txt").read_text()
    return frozenset(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def photo_key(name: str) -> str:
    """'00000001_005.jpg' or 'x/00000001_005.png' -> '00000001_005', the key of the outlier list."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return base.rsplit(".", 1)[0] if "." in base else base
