"""Tiny synthetic CAT-format data for tests: drawn cat faces with known landmarks.

Each face is a head disc with two triangular ears, a red left eye, a blue right eye and a green mouth,
rotated by a chosen angle, so a test can find the eyes again in the prepared output.

    write_cat_folders(root, {"CAT_00": 3, "CAT_01": 2})   # root/CAT_0x/NAME.jpg + NAME.jpg.cat
    write_zip(root, root.with_suffix(".zip"))            # the same tree as a zip archive
    write_face_folder(path, n=8)                          # face crops of various sizes and aspects
    make_prepared_dataset(path, n=32, size=16)           # a prepared dataset folder, as `catgan prepare`
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

LEFT_EYE_RGB, RIGHT_EYE_RGB, MOUTH_RGB = (255, 0, 0), (0, 0, 255), (0, 255, 0)

# Face template in units of the eye distance, eye midpoint at the origin, y down. The order is the
# `.cat` order: left eye, right eye, mouth, left ear (outer base, tip, inner base), right ear (inner
# base, tip, outer base). Ear 1 to ear 3 spans 2.3 eye distances, as in the real data.
TEMPLATE = np.array(
    [
        [-0.5, 0.0],
        [0.5, 0.0],
        [0.0, 0.6],
        [-1.15, -0.6],
        [-1.3, -1.5],
        [-0.5, -1.05],
        [0.5, -1.05],
        [1.3, -1.5],
        [1.15, -0.6],
    ]
)


def face_points(center: tuple[float, float], eye_distance: float, angle_deg: float) -> np.ndarray:
    """The 9 landmarks (9, 2) of a face whose eye line is turned by angle_deg (y down, clockwise)."""
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return TEMPLATE @ rot.T * eye_distance + np.asarray(center)


def draw_face(width: int, height: int, points: np.ndarray, seed: int = 0) -> Image.Image:
    """An RGB photo with a cat face drawn at `points` (9, 2) on a noisy background."""
    rng = np.random.default_rng(seed)
    bg = rng.integers(90, 170, size=(height, width, 3), dtype=np.uint8)
    im = Image.fromarray(bg, "RGB")
    d = ImageDraw.Draw(im)
    eyes = (points[0] + points[1]) / 2
    eye_distance = float(np.hypot(*(points[1] - points[0])))
    fur = tuple(int(v) for v in rng.integers(150, 230, size=3))
    r = 1.05 * eye_distance
    head = eyes + (points[2] - eyes) * 0.3
    d.ellipse([head[0] - r, head[1] - r, head[0] + r, head[1] + r], fill=fur)
    for ear in (points[3:6], points[6:9]):
        d.polygon([tuple(p) for p in ear], fill=fur)
    dot = max(1.0, 0.12 * eye_distance)
    for p, color in ((points[0], LEFT_EYE_RGB), (points[1], RIGHT_EYE_RGB), (points[2], MOUTH_RGB)):
        d.ellipse([p[0] - dot, p[1] - dot, p[0] + dot, p[1] + dot], fill=color)
    return im


def cat_text(points: np.ndarray) -> str:
    """The `.cat` line for 9 points (rounded to whole pixels, as in the real files)."""
    return "9 " + " ".join(str(int(round(v))) for v in points.reshape(-1)) + " "


def write_cat_photo(
    folder: Path, name: str, width: int = 160, height: int = 120, angle: float = 0.0, seed: int = 0
) -> np.ndarray:
    """Write folder/NAME.jpg and NAME.jpg.cat; returns the landmarks as written (9, 2)."""
    folder.mkdir(parents=True, exist_ok=True)
    points = np.round(face_points((width * 0.5, height * 0.55), min(width, height) * 0.22, angle))
    draw_face(width, height, points, seed).save(folder / f"{name}.jpg", quality=95)
    (folder / f"{name}.jpg.cat").write_text(cat_text(points))
    return points


def write_cat_folders(
    root: Path, counts: dict[str, int], size: tuple[int, int] = (160, 120), seed: int = 0
) -> dict[str, np.ndarray]:
    """Kaggle layout: root/CAT_0x/0000000k_0jj.jpg(.cat), with varied angles. Returns name -> points."""
    rng = np.random.default_rng(seed)
    out = {}
    for folder, n in counts.items():
        for j in range(n):
            name = f"{int(folder[-2:]) + 1:08d}_{j:03d}"
            angle = float(rng.uniform(-35, 35))
            out[name] = write_cat_photo(
                root / folder, name, *size, angle=angle, seed=int(rng.integers(1 << 30))
            )
    return out


def write_zip(root: Path, zip_path: Path) -> Path:
    """Zip the tree under root (paths relative to root), as the Kaggle archive is laid out."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_STORED) as z:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(root).as_posix())
    return zip_path


def write_face_folder(path: Path, n: int = 8, min_side: int = 16, max_side: int = 40, seed: int = 0) -> Path:
    """n face crops (upright faces) of random sizes and aspects as JPEG files faceNNN.jpg."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        w, h = (int(v) for v in rng.integers(min_side, max_side + 1, size=2))
        side = min(w, h)
        points = face_points((w / 2, h / 2 - 0.1 * side), side * 0.3, float(rng.uniform(-5, 5)))
        draw_face(w, h, points, seed=int(rng.integers(1 << 30))).save(path / f"face{i:03d}.jpg", quality=95)
    return path


def make_prepared_dataset(path: str | Path, n: int = 32, size: int = 16, seed: int = 0) -> Path:
    """A small valid prepared dataset, made by `prepare` itself from n synthetic face crops.

    Returns the dataset folder `path/cats-{size}` (n images of size x size, with dataset.json). Use a
    fresh `path` per dataset: like `catgan prepare`, a second call into the same path keeps what is there.
    """
    from catgan.data.prepare import PrepareConfig, prepare

    path = Path(path)
    faces = write_face_folder(path / "_faces", n=n, min_side=size, max_side=2 * size, seed=seed)
    prepare(PrepareConfig((faces,), path, sizes=(size,), workers=1, progress=False))
    return path / f"cats-{size}"
