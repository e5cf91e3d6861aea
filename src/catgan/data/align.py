"""Pure geometry: nine landmarks -> a rotation that levels the eyes and a square face box -> pixels.

Coordinates. Landmarks (as in `.cat` files and in dataset.json) are pixel indices: pixel column i has
its centre at x = i. Internally boxes use continuous coordinates, where pixel i spans [i, i + 1).

The reference preprocessing (Erik Hovland's `describe.py`, as used by the original system):
rotate the photo about the eye midpoint so the eyes are level (swapping the eye labels first when the
face is upside down); the face is a square whose side is the horizontal distance, after rotation, from
left-ear point 1 to right-ear point 3, placed so that the eye midpoint sits at 50% of its width and 40%
of its height. Where that square leaves the photo the reference clipped it (so the crop is no longer
square); here the square is kept and what lies outside the photo is filled with the nearest edge pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from catgan.data.annotations import (
    LEFT_EAR_1,
    LEFT_EAR_TIP,
    LEFT_EYE,
    MOUTH,
    RIGHT_EAR_3,
    RIGHT_EAR_TIP,
    RIGHT_EYE,
    AnnotationError,
    Landmarks,
)

EYE_X, EYE_Y = 0.5, 0.4  # where the eye midpoint sits in the face square, as fractions of its side

# Plausible face geometry after levelling the eyes, in eye distances (ed) or shares of the face side.
# Measured on the 80 annotated sample photos (../shared/data/cat-landmarks; tests/test_prepare_real.py checks
# these bounds against them): eye distance / face side 0.313..0.508 (median 0.435); mouth below the eye
# line 0.545..1.055 ed (median 0.794); the lower ear tip above it 0.797..2.147 ed (median 1.633). The bounds
# lie well outside those ranges: they catch mirrored, shuffled or collapsed points, not unusual cats.
EYE_SHARE = (0.2, 0.7)
MOUTH_BELOW = (0.25, 2.5)
TIPS_ABOVE = 0.3


@dataclass(frozen=True)
class FaceBox:
    """A square in a rotated copy of the photo (continuous coordinates).

    The rotated copy is the photo turned by -angle radians about `center`; the box is
    [x0, x0 + side) x [y0, y0 + side) in that copy. angle = 0 is a plain axis-aligned crop.
    """

    center: tuple[float, float]
    angle: float
    x0: float
    y0: float
    side: float

    def as_json(self) -> dict:
        return {
            "center": [round(self.center[0], 3), round(self.center[1], 3)],
            "angle_deg": round(math.degrees(self.angle), 4),
            "x0": round(self.x0, 3),
            "y0": round(self.y0, 3),
            "side": round(self.side, 3),
        }


def eye_angle(points: np.ndarray) -> float:
    """Angle (radians) of the line from the left to the right eye, with the reference's label swap.

    points: (9, 2). When the "left" eye is right of and above the "right" eye and the mouth is right of
    the "right" eye, the face is upside down; the reference swaps the labels so the turn stays small.
    """
    (lx, ly), (rx, ry) = points[LEFT_EYE], points[RIGHT_EYE]
    if lx > rx and ly < ry and points[MOUTH, 0] > rx:
        (lx, ly), (rx, ry) = (rx, ry), (lx, ly)
    return math.atan2(ry - ly, rx - lx)


def rotate(points: np.ndarray, center: tuple[float, float], angle: float) -> np.ndarray:
    """Map photo points (N, 2) into the copy turned by -angle about center (the eyes become level)."""
    c, s = math.cos(angle), math.sin(angle)
    d = points - np.asarray(center)
    return np.stack([d[:, 0] * c + d[:, 1] * s, -d[:, 0] * s + d[:, 1] * c], axis=1) + np.asarray(center)


def face_box(landmarks: Landmarks) -> FaceBox:
    """The reference face square for nine landmarks. Raises AnnotationError for a degenerate face."""
    p = landmarks.points + 0.5  # pixel indices -> continuous
    angle = eye_angle(p)
    cx, cy = (p[LEFT_EYE] + p[RIGHT_EYE]) / 2
    q = rotate(p, (cx, cy), angle)
    side = abs(q[RIGHT_EAR_3, 0] - q[LEFT_EAR_1, 0])
    if side < 1:
        raise AnnotationError("ear points give a face narrower than one pixel")
    return FaceBox((float(cx), float(cy)), angle, float(cx - EYE_X * side), float(cy - EYE_Y * side), side)


def geometry(landmarks: Landmarks) -> dict[str, float]:
    """The ratios check_geometry bounds, measured after levelling the eyes (see EYE_SHARE)."""
    p = landmarks.points + 0.5
    c = (p[LEFT_EYE] + p[RIGHT_EYE]) / 2
    q = rotate(p, (float(c[0]), float(c[1])), eye_angle(p)) - c  # eye midpoint at the origin, y down
    eyes = abs(q[RIGHT_EYE, 0] - q[LEFT_EYE, 0])
    side = abs(q[RIGHT_EAR_3, 0] - q[LEFT_EAR_1, 0])
    return {
        "eye_share": eyes / max(side, 1e-9),
        "mouth_below": q[MOUTH, 1] / eyes,
        "tips_above": float(-q[[LEFT_EAR_TIP, RIGHT_EAR_TIP], 1].max()) / eyes,  # the lower of the two tips
    }


def check_geometry(landmarks: Landmarks) -> None:
    """Refuse points that cannot be a cat face: eyes apart by a plausible share of the face, the mouth
    below the eyes, both ear tips above them. Raises AnnotationError naming the failed rule."""
    g = geometry(landmarks)
    if not EYE_SHARE[0] <= g["eye_share"] <= EYE_SHARE[1]:
        raise AnnotationError(
            f"the eyes are {g['eye_share']:.2f} of the face width apart "
            f"(plausible: {EYE_SHARE[0]}..{EYE_SHARE[1]})"
        )
    if not MOUTH_BELOW[0] <= g["mouth_below"] <= MOUTH_BELOW[1]:
        raise AnnotationError(
            f"the mouth is {g['mouth_below']:.2f} eye distances below the eyes "
            f"(plausible: {MOUTH_BELOW[0]}..{MOUTH_BELOW[1]})"
        )
    if g["tips_above"] < TIPS_ABOVE:
        raise AnnotationError(
            f"an ear tip is {g['tips_above']:.2f} eye distances above the eyes (plausible: >= {TIPS_ABOVE})"
        )


def clip_to_photo(box: FaceBox, width: int, height: int) -> FaceBox:
    """The largest square, centred in the reference's clipped crop, that stays inside the rotated canvas.

    This is `--square crop` for landmark photos: the reference's clipped rectangle, centre-cropped square.
    The canvas is the rotated copy, same size as the photo (as in the reference).
    """
    x0, y0 = max(box.x0, 0.0), max(box.y0, 0.0)
    x1, y1 = min(box.x0 + box.side, float(width)), min(box.y0 + box.side, float(height))
    side = min(x1 - x0, y1 - y0)
    if side <= 0:
        return FaceBox(box.center, box.angle, box.x0, box.y0, 0.0)
    return FaceBox(box.center, box.angle, (x0 + x1 - side) / 2, (y0 + y1 - side) / 2, side)


def square_box(width: int, height: int, mode: str) -> FaceBox:
    """An axis-aligned square for a face crop: centred `crop` (side = shorter side) or `pad` (longer)."""
    if mode not in ("crop", "pad"):
        raise ValueError(f"mode must be 'crop' or 'pad', got {mode!r}")
    side = min(width, height) if mode == "crop" else max(width, height)
    # Whole-pixel offsets, so the crop copies pixels exactly (no half-pixel blur).
    x0, y0 = (width - side) // 2, (height - side) // 2
    return FaceBox((width / 2, height / 2), 0.0, float(x0), float(y0), float(side))


def to_box(points: np.ndarray, box: FaceBox, size: int) -> np.ndarray:
    """Photo landmarks (N, 2, pixel indices) -> pixel indices in the box resized to size x size."""
    q = rotate(points + 0.5, box.center, box.angle)
    return (q - np.array([box.x0, box.y0])) * (size / box.side) - 0.5


def sample(image: np.ndarray, box: FaceBox, n: int) -> tuple[np.ndarray, float]:
    """Resample the box to n x n pixels at the photo's own scale (bilinear; n should be ~box.side).

    image: (H, W, 3) uint8. Returns the (n, n, 3) uint8 face and the fraction of its pixels that lie
    outside the photo, which are filled with the nearest edge pixel (coordinates clamped to the edge).
    """
    h, w = image.shape[:2]
    if box.angle == 0 and n == box.side and float(box.x0).is_integer() and float(box.y0).is_integer():
        return _copy(image, int(box.x0), int(box.y0), n)
    t = (np.arange(n, dtype=np.float64) + 0.5) * (box.side / n)  # (n,) box offsets of pixel centres
    dx = (box.x0 + t - box.center[0])[None, :]  # (1, n)
    dy = (box.y0 + t - box.center[1])[:, None]  # (n, 1)
    out = np.empty((n, n, 3), np.uint8)
    outside = 0
    rows = max(1, _BLOCK // n)  # rows per block: the float temporaries stay ~_BLOCK pixels whatever n
    for r in range(0, n, rows):
        out[r : r + rows], k = _bilinear(image, box, dx, dy[r : r + rows])
        outside += k
    return out, outside / (n * n)


_BLOCK = 1 << 18  # pixels resampled at once (~30 MB of temporaries)


def _bilinear(image: np.ndarray, box: FaceBox, dx: np.ndarray, dy: np.ndarray) -> tuple[np.ndarray, int]:
    """Rows of `sample`: box offsets dx (1, n), dy (m, 1) -> (m, n, 3) uint8 and the count outside."""
    h, w = image.shape[:2]
    c, s = math.cos(box.angle), math.sin(box.angle)
    xs = box.center[0] + c * dx - s * dy  # (m, n) continuous photo coordinates
    ys = box.center[1] + s * dx + c * dy
    outside = int(((xs < 0) | (xs > w) | (ys < 0) | (ys > h)).sum())
    xs = np.clip(xs - 0.5, 0, w - 1)  # -> pixel indices, clamped: the edge pixel fills the outside
    ys = np.clip(ys - 0.5, 0, h - 1)
    x0 = np.floor(xs).astype(np.intp)
    y0 = np.floor(ys).astype(np.intp)
    x1 = np.minimum(x0 + 1, w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    fx = (xs - x0).astype(np.float32)[..., None]  # (m, n, 1)
    fy = (ys - y0).astype(np.float32)[..., None]
    a = image[y0, x0].astype(np.float32)  # (m, n, 3)
    b = image[y0, x1].astype(np.float32)
    top = a + (b - a) * fx
    a = image[y1, x0].astype(np.float32)
    b = image[y1, x1].astype(np.float32)
    bottom = a + (b - a) * fx
    return np.clip(np.rint(top + (bottom - top) * fy), 0, 255).astype(np.uint8), outside


def _copy(image: np.ndarray, x0: int, y0: int, n: int) -> tuple[np.ndarray, float]:
    """The exact-pixel case of `sample` (no rotation, whole-pixel box): a slice, edge-padded outside."""
    h, w = image.shape[:2]
    l, t, r, b = max(0, -x0), max(0, -y0), max(0, x0 + n - w), max(0, y0 + n - h)
    inner = image[max(0, y0) : min(h, y0 + n), max(0, x0) : min(w, x0 + n)]
    if l or t or r or b:
        inner = np.pad(inner, ((t, b), (l, r), (0, 0)), mode="edge")
    fill = 1.0 - (n - l - r) * (n - t - b) / (n * n)
    return np.ascontiguousarray(inner), fill
