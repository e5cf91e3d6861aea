"""One photo -> the aligned square face a generator draws, and the transform back into the photo.

Where the face is, in this order of preference:
1. `NAME.jpg.cat` beside the photo (the CAT dataset's nine landmarks): exactly `catgan prepare`'s
   alignment (data.photo's calls, same order: bounded read, decode with no EXIF turn, validate, face_box,
   check_geometry, sample at the face's own scale, Lanczos to the size), so the crop equals prepare's.
2. Eyes given by the user (`--eyes X1,Y1,X2,Y2`, optional `--ears X1,Y1,X2,Y2`): prepare's geometry
   needs only the eyes (rotation centre and angle) and the outer ear bases (the side); without ears the
   side is the eye distance / EYE_SHARE_MEDIAN (eyes_box).
3. OpenCV's cat-face detector (projection.detect), which must find exactly one face.

Coordinates are pixel indices (pixel centres at i), as in `.cat` files. `.cat` points refer to the stored
pixels (no EXIF orientation, as prepare); eyes and detections refer to the photo as a viewer shows it
(EXIF orientation applied). `Alignment.exif_applied` says which, so restore can paste into the same one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from catgan.data import align
from catgan.data.annotations import AnnotationError, Landmarks, parse_cat, validate
from catgan.data.photo import MAX_SAMPLE_SIDE, decode
from catgan.data.sources import MAX_FILE_BYTES, BadInput, read_bytes
from catgan.errors import CatganError

# The eye distance is 0.435 of the face side at the median of the 80 annotated sample photos (see
# data.align.EYE_SHARE's comment): the side of a face given by its eyes alone.
EYE_SHARE_MEDIAN = 0.435
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485  # prepare's default: larger images are decompression bombs
Method = Literal["landmarks", "eyes", "detector", "aligned"]


class FaceError(CatganError):
    """A photo that cannot be projected; the message is its one-line reason."""


@dataclass(frozen=True)
class Alignment:
    """How the aligned face sits in its photo: `box` (data.align.FaceBox, continuous photo coordinates)
    resampled to `size` x `size`. `photo_size` is (width, height) of the decoded photo, with EXIF
    orientation applied when `exif_applied`. `to_photo` / `matrix` map aligned pixels back (restore)."""

    box: align.FaceBox
    size: int
    photo_size: tuple[int, int]
    method: Method
    exif_applied: bool

    def matrix(self) -> np.ndarray:
        """(2, 3) affine A: photo pixel index = A @ (u, v, 1) for aligned pixel index (u, v).

        For cv2.warpAffine(face, A, photo_size, flags=WARP_INVERSE_MAP) (pastes the face into the photo)
        or cv2.warpAffine(photo, A, (size, size), flags=WARP_INVERSE_MAP | ...) the other way round."""
        b, k = self.box, self.box.side / self.size
        c, s = math.cos(b.angle), math.sin(b.angle)
        # aligned (u, v) -> box offset t = (u + 0.5) k -> rotated copy (x0 + t) -> photo (turn by +angle)
        dx0, dy0 = b.x0 + 0.5 * k - b.center[0], b.y0 + 0.5 * k - b.center[1]
        return np.array(
            [
                [c * k, -s * k, b.center[0] + c * dx0 - s * dy0 - 0.5],
                [s * k, c * k, b.center[1] + s * dx0 + c * dy0 - 0.5],
            ]
        )

    def to_photo(self, points: np.ndarray) -> np.ndarray:
        """Aligned pixel indices (N, 2) -> photo pixel indices (N, 2)."""
        a = self.matrix()
        return points @ a[:, :2].T + a[:, 2]

    def from_photo(self, points: np.ndarray) -> np.ndarray:
        """Photo pixel indices (N, 2) -> aligned pixel indices (N, 2) (data.align.to_box)."""
        return align.to_box(points, self.box, self.size)

    def as_json(self) -> dict:
        return {
            "method": self.method,
            "size": self.size,
            "photo_size": list(self.photo_size),
            "exif_applied": self.exif_applied,
            "crop": self.box.as_json(),
        }


@dataclass(frozen=True)
class AlignedFace:
    """face: (size, size, 3) uint8; notes: what was converted or approximated (one line each)."""

    face: np.ndarray
    alignment: Alignment
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class FaceHint:
    """What the user said about where the face is: eyes (and ear bases) in pixel indices, or that the
    photo is already a face crop (`aligned`: centre-cropped square, as prepare treats face folders)."""

    eyes: tuple[float, float, float, float] | None = None
    ears: tuple[float, float, float, float] | None = None
    aligned: bool = False

    def __post_init__(self) -> None:
        if self.ears is not None and self.eyes is None:
            raise CatganError("--ears needs --eyes too (the eyes level the face; the ears give its width)")
        if self.aligned and self.eyes is not None:
            raise CatganError("give either --aligned (the photo is a face crop) or --eyes, not both")


def cat_file(photo: Path) -> Path:
    """Where the CAT dataset keeps a photo's landmarks: NAME.jpg -> NAME.jpg.cat."""
    return photo.with_name(photo.name + ".cat")


def find_face(
    photo: str | Path,
    size: int,
    hint: FaceHint | None = None,
    detector=None,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_FILE_BYTES,
) -> AlignedFace:
    """The aligned face of one photo at `size` px. `detector`: a projection.detect.FaceDetector, built on
    first need when None. Raises FaceError with a one-line reason (no cat, two cats, a bomb, ...)."""
    photo, hint = Path(photo), hint or FaceHint()
    data = _read(photo, max_bytes)
    cat = cat_file(photo)
    notes: list[str] = []
    if cat.is_file() and not hint.aligned:
        if hint.eyes is not None:
            notes.append(f"--eyes ignored: the landmarks in {cat.name} were used")
        image, box = _landmark_box(data, _read(cat, max_bytes), max_pixels, notes)
        method: Method = "landmarks"
    else:
        image, decode_notes = _decode(data, max_pixels, apply_exif=True)
        notes += decode_notes
        h, w = image.shape[:2]
        if hint.aligned:
            box, method = align.square_box(w, h, "crop"), "aligned"
        elif hint.eyes is not None:
            box, method = eyes_box(hint.eyes, hint.ears, w, h), "eyes"
        else:
            if detector is None:
                from catgan.projection.detect import FaceDetector

                detector = FaceDetector.load()
            box, method = detector.face_box(image), "detector"
    h, w = image.shape[:2]
    alignment = Alignment(box, size, (w, h), method, exif_applied=method != "landmarks")
    return AlignedFace(resample(image, box, size, notes), alignment, tuple(notes))


def _read(path: Path, max_bytes: int) -> bytes:
    if not path.exists():
        raise FaceError(f"{path}: no such file")
    try:
        return read_bytes((str(path), None), max_bytes)
    except BadInput as err:
        raise FaceError(f"{path.name}: {err.detail}") from None
    except OSError as err:
        raise FaceError(f"{path.name}: cannot read it: {err.strerror or err}") from None


def _decode(data: bytes, max_pixels: int, apply_exif: bool) -> tuple[np.ndarray, list[str]]:
    try:
        return decode(data, max_pixels, apply_exif)
    except BadInput as err:
        raise FaceError(err.detail) from None


def _landmark_box(data: bytes, text: bytes, max_pixels: int, notes: list[str]):
    """prepare's landmark path (data.photo._face, square "auto" = the full reference square)."""
    try:
        lm = parse_cat(text)
    except AnnotationError as err:
        raise FaceError(f"bad .cat annotation: {err}") from None
    image, decode_notes = _decode(data, max_pixels, apply_exif=False)
    notes += decode_notes
    h, w = image.shape[:2]
    try:
        validate(lm, w, h)
        box = align.face_box(lm)
        align.check_geometry(lm)
    except AnnotationError as err:
        raise FaceError(f"bad .cat annotation: {err}") from None
    return image, box


def eyes_box(
    eyes: tuple[float, float, float, float],
    ears: tuple[float, float, float, float] | None,
    width: int,
    height: int,
) -> align.FaceBox:
    """prepare's face square from the eyes (pixel indices) and, if given, the outer bases of the ears.

    The eye on the photo's left comes first (swapped when not: a face is taken to be less than 90 degrees
    from upright). Without ears the side is eye distance / EYE_SHARE_MEDIAN. Raises FaceError."""
    (lx, ly), (rx, ry) = (eyes[0], eyes[1]), (eyes[2], eyes[3])
    for x, y in ((lx, ly), (rx, ry)):
        if not (math.isfinite(x) and math.isfinite(y)) or not (0 <= x < width and 0 <= y < height):
            raise FaceError(f"the eye at ({x:g}, {y:g}) lies outside the {width}x{height} photo")
    if lx > rx:
        (lx, ly), (rx, ry) = (rx, ry), (lx, ly)
    if math.hypot(rx - lx, ry - ly) < 1.0:
        raise FaceError("both eyes are on the same spot: give two points at least a pixel apart")
    points = np.zeros((9, 2))
    points[0], points[1] = (lx, ly), (rx, ry)
    points[2] = ((lx + rx) / 2, (ly + ry) / 2 + 1.0)  # a mouth below the eyes: no upside-down swap
    eye_distance = math.hypot(rx - lx, ry - ly)
    if ears is None:
        half = eye_distance / EYE_SHARE_MEDIAN / 2  # ear bases level with the eyes, half a side out
        angle = math.atan2(ry - ly, rx - lx)
        c, s = math.cos(angle), math.sin(angle)
        mx, my = (lx + rx) / 2, (ly + ry) / 2
        points[3], points[8] = (mx - half * c, my - half * s), (mx + half * c, my + half * s)
    else:
        points[3], points[8] = (ears[0], ears[1]), (ears[2], ears[3])
        if not all(math.isfinite(v) for v in ears):
            raise FaceError(f"ear points must be finite numbers, got {ears}")
    try:
        return align.face_box(Landmarks(points))
    except AnnotationError as err:
        raise FaceError(f"--ears: {err}") from None


def resample(image: np.ndarray, box: align.FaceBox, size: int, notes: list[str]) -> np.ndarray:
    """The box as a (size, size, 3) uint8 face: prepare's two steps (align.sample at the face's own scale,
    then Lanczos). A face smaller than `size` is upscaled (prepare would drop it) with a note."""
    if box.side < 1:
        raise FaceError("the face square lies outside the photo")
    n = min(max(1, round(box.side)), max(MAX_SAMPLE_SIDE, size))
    face, fill = align.sample(image, box, n)
    if box.side < size:
        notes.append(f"the face is {box.side:.0f} px, smaller than {size}: upscaled (prepare would drop it)")
    if fill > 0.25:
        notes.append(f"{fill:.0%} of the face square lies outside the photo (filled with edge pixels)")
    pil = Image.fromarray(face)
    small = pil if pil.size == (size, size) else pil.resize((size, size), Image.LANCZOS)
    return np.asarray(small.convert("RGB"))
