"""The held-out split: which faces a model never trains on.

A face is held out by a hash of its photo's key (`annotations.photo_key`: the base name without its
extension), so the same photo lands on the same side at every image size, on every machine, and whatever
else the source folder holds. `prepare --holdout FRACTION` writes those faces to `cats-S-holdout/`;
the self-supervised feature network trains only on the rest.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from catgan.data.annotations import photo_key
from catgan.errors import CatganError

MAX_HOLDOUT = 0.5


def check_fraction(fraction: float) -> float:
    """A held-out share must be in (0, 0.5]: more would leave the model less than half the faces."""
    if not isinstance(fraction, (int, float)) or not 0.0 < fraction <= MAX_HOLDOUT:
        raise CatganError(f"the held-out fraction must be in (0, {MAX_HOLDOUT}], got {fraction!r}")
    return float(fraction)


def holdout_score(name: str) -> float:
    """A stable number in [0, 1) for a photo: the first 8 bytes of sha256(photo key) as a fraction."""
    digest = hashlib.sha256(photo_key(name).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def is_holdout(name: str, fraction: float) -> bool:
    """True when the photo `name` ('x/00000001_005.jpg', '00000001_005') belongs to the held-out share."""
    return holdout_score(name) < check_fraction(fraction)


def holdout_folder(folder: str | Path) -> Path | None:
    """The held-out sibling (`cats-S-holdout`) a training dataset's dataset.json records, or None.

    None for a dataset prepared without --holdout, for a held-out folder itself, and for a record this
    cannot read. The path is returned whether or not the folder is still there (the caller says so).
    """
    folder = Path(folder)
    try:
        held = json.loads((folder / "dataset.json").read_text()).get("holdout")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(held, dict) or held.get("side") != "train" or not isinstance(held.get("held_out"), str):
        return None
    name = Path(held["held_out"]).name  # a bare folder name: never a path out of the dataset's parent
    return folder.parent / name if name and name not in (".", "..") else None
