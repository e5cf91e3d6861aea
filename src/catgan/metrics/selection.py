"""The rules for choosing: which feature space, on which faces, may pick among generators.

Kynkäänniemi et al. (ICLR 2023) showed that Inception FID falls when generated images merely match the
ImageNet class statistics of the real ones, and a discriminator built on an ImageNet network (the
projected D: EfficientNet-Lite0, catgan.backbones) can teach a generator exactly that. A number that
*chooses* (the best checkpoint of `--eval-every`, the span of checkpoints to average, a rejection
sampler's threshold, when to stop) would then reward the leak. So whatever chooses measures:

1. in a space that is neither Inception nor any ImageNet-trained network, and shares no network with the
   discriminator being trained: `selfsup` (catgan.metrics.selfsup: cat faces only, no ImageNet);
2. on faces no generator trained on: the dataset's held-out sibling (`cats-S-holdout`, prepare
   --holdout); a dataset without one falls back to its training faces, with a printed note.

`check_selection_space` refuses anything else in one line; training.loop calls it on its evaluator
before the first step. Reporting (`catgan evaluate`) may use any space: it chooses nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from catgan.errors import CatganError

SELECTION_SPACE = "selfsup"
# networks trained on ImageNet's labels: their classes are what a generator can match without improving
IMAGENET_NETWORKS = frozenset({"inception-v3", "efficientnet-lite0"})
# discriminator family -> the trained networks inside it (models/projected.py builds on EfficientNet-Lite0)
D_NETWORKS: dict[str, tuple[str, ...]] = {"projected": ("efficientnet-lite0",)}


def discriminator_networks(discriminator: Any) -> tuple[str, ...]:
    """The trained networks inside a discriminator, from its config (or its family's name)."""
    family = discriminator if isinstance(discriminator, str) else getattr(discriminator, "family", None)
    return D_NETWORKS.get(family, ()) if isinstance(family, str) else ()


def check_selection_space(
    extractor: Any, discriminator: Any = None, purpose: str = "choosing checkpoints"
) -> None:
    """Refuse, in one line, a feature space that `purpose` must not use (see the module's rules).

    extractor: anything with `.networks` (the names of the trained networks it runs) and `.space`;
    discriminator: the D config (or family) of the run being chosen for, None when there is none.
    """
    networks = set(getattr(extractor, "networks", ()))
    space = getattr(extractor, "space", None) or getattr(extractor, "name", "this")
    hint = f"use the {SELECTION_SPACE} space on held-out faces (docs/feature-space.md, Rules)"
    imagenet = sorted(networks & IMAGENET_NETWORKS)
    if imagenet:
        raise CatganError(
            f"{purpose} must not use the {space} feature space: {', '.join(imagenet)} learnt ImageNet's "
            f"classes, which a generator can match without looking better (Kynkäänniemi et al. 2023); {hint}"
        )
    shared = sorted(networks & set(discriminator_networks(discriminator)))
    if shared:
        raise CatganError(
            f"{purpose} must not use the {space} feature space: the discriminator uses "
            f"{', '.join(shared)}; {hint}"
        )


def check_selection_evaluator(evaluator: Any, discriminator: Any) -> None:
    """check_selection_space on a training evaluator's extractor (an evaluator with an `extractor`, as
    metrics.evaluate.FIDEvaluator). A plain function names no space: what it measures is its caller's
    business, and it is let through."""
    extractor = getattr(evaluator, "extractor", None)
    if extractor is not None:
        check_selection_space(extractor, discriminator, "choosing the best checkpoint (--eval-every)")


def selection_folder(folder: Path) -> tuple[Path, str | None]:
    """The faces a choice is measured on: (the held-out sibling of `folder`, None) where it exists and
    holds faces, else (`folder`, the one-line note saying why the training faces are used instead)."""
    from catgan.data.dataset import image_files
    from catgan.data.split import holdout_folder

    held = holdout_folder(folder)
    fallback = f"measuring on the training faces of {folder} instead"
    if held is None:
        return folder, f"note: {folder} has no held-out split (catgan prepare --holdout); {fallback}"
    if not (held / "dataset.json").is_file():
        return folder, f"note: {held}, which {folder}/dataset.json records, is missing; {fallback}"
    if not image_files(held):
        return folder, f"note: the held-out dataset {held} holds no images; {fallback}"
    return held, None


def say(log: Callable[[str], None] | None, line: str) -> None:
    """A note to `log`, or to stderr where none is given."""
    (log or (lambda m: print(m, file=sys.stderr, flush=True)))(line)
