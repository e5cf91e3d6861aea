"""Feature spaces by name: the spaces FID, KID, precision / recall and memorisation are measured in
(`catgan evaluate --features NAME`). Each loader returns an object with `.name`, `.space` (the short name
below), `.networks` (what metrics.selection checks) and `features(uint8 (N, 3, H, W)) -> (N, D)`
(catgan.metrics.reference.Extractor); a new space is one loader and one line below.

    inception  Inception-v3 pool3 (as papers report FID); with classes=True the same pass also gives
               the ImageNet top-1 classes of the class-leak check (metrics.classleak)
    selfsup    the self-supervised cat-face encoder (metrics.selfsup): no ImageNet, no held-out face
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from catgan.errors import CatganError


@dataclass(frozen=True)
class SpaceOptions:
    batch: int = 64
    fp16: bool = False  # Inception only: half-precision weights (CUDA)
    precision: str = "auto"  # Inception only: auto | fp32 | bf16 (metrics.inception.resolve_precision)
    classes: bool = False  # Inception only: the ImageNet top-1 classes from the same pass


def _inception(device: Any, opts: SpaceOptions) -> Any:
    from catgan.metrics.inception import InceptionExtractor

    return InceptionExtractor.load(
        device, fp16=opts.fp16, batch=opts.batch, precision=opts.precision, classes=opts.classes
    )


def _selfsup(device: Any, opts: SpaceOptions) -> Any:
    from catgan.metrics.selfsup import SelfSupExtractor

    return SelfSupExtractor.load(device=device, batch=max(opts.batch, 256))


# name -> loader(device, options)
EXTRACTORS: dict[str, Callable[[Any, SpaceOptions], Any]] = {"inception": _inception, "selfsup": _selfsup}


def check_space(name: str) -> str:
    """`name` if it is a known feature space, else one CatganError line listing the known ones."""
    if name not in EXTRACTORS:
        raise CatganError(
            f"unknown feature space {name!r} (--features); choose one of: {', '.join(EXTRACTORS)}"
        )
    return name


def load_extractor(
    name: str,
    device: Any = "cpu",
    batch: int = 64,
    fp16: bool = False,
    precision: str = "auto",
    classes: bool = False,
) -> Any:
    """The extractor of feature space `name` (a key of EXTRACTORS), loaded onto `device`."""
    return EXTRACTORS[check_space(name)](device, SpaceOptions(batch, fp16, precision, classes))
