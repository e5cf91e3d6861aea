"""What a generator source names, in one place: a run folder, a checkpoint file, an exported .safetensors
file or a bundled model's name. `--run`, `--weights`, `--model`, `--init-from`, `catgan.load` and the web
app all go through `resolve` (one value of any kind) or `from_options` (the three flags, at most one).
"""

from __future__ import annotations

import contextlib
import importlib.resources
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from catgan.checkpoint import list_checkpoints, load_checkpoint, load_generator_file, saved_configs
from catgan.checkpoint_integrity import newest_readable
from catgan.errors import CatganError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable  # Python >= 3.11; only for the annotation

    import torch

DEFAULT_MODEL = "cats-64"


def _warn(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


_MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
Kind = Literal["run", "checkpoint", "file", "bundled"]


@dataclass(frozen=True)
class Source:
    """A resolved source: `kind` and the value as given (a path, or a bundled model's name)."""

    kind: Kind
    value: str

    @property
    def is_generator(self) -> bool:
        """A generator alone (an exported file or a bundled model) rather than a training state."""
        return self.kind in ("file", "bundled")

    @property
    def label(self) -> str:
        """For LoadedGenerator.source and logs: "run:PATH", "file:PATH" or "bundled:NAME"."""
        return f"{'run' if self.kind == 'checkpoint' else self.kind}:{self.value}"

    def checkpoint(self) -> Path:
        """The training checkpoint a run or checkpoint source names (a run folder: its newest readable
        one, with a warning for each damaged newer one)."""
        path = Path(self.value)
        found = path
        if self.kind == "run":
            found = newest[0] if (newest := newest_checkpoint(path)) is not None else None
        if found is None or not found.is_file():
            raise CatganError(
                f"no checkpoint at {self.value}: give a checkpoint file or a run folder that has one"
            )
        return found


def resolve(value: str | Path, flag: str = "source") -> Source:
    """Any source by what it is: a .safetensors name is an exported file, an existing folder a run, an
    existing file a checkpoint, else a bundled model's name; anything else is one error naming `flag`."""
    text, path = str(value), Path(value)
    if path.suffix == ".safetensors":
        return Source("file", text)
    if path.is_dir():
        return Source("run", text)
    if path.is_file():
        return Source("checkpoint", text)
    if _MODEL_NAME_RE.match(text) and text in list_bundled():
        return Source("bundled", text)
    raise CatganError(
        f"{flag} {text}: no such checkpoint, run folder or .safetensors file, and no bundled model of "
        f"that name (bundled: {', '.join(list_bundled()) or 'none'})"
    )


def from_options(run: Any = None, weights: Any = None, model: str | None = None) -> Source:
    """The source of --run / --weights / --model (at most one; none: the bundled DEFAULT_MODEL)."""
    given = [n for n, v in (("run", run), ("weights", weights), ("model", model)) if v is not None]
    if len(given) > 1:
        raise CatganError(f"give only one of --run, --weights, --model (got {', '.join(given)})")
    if run is not None:
        path = Path(run)
        if not path.exists():
            raise CatganError(f"run folder not found: {run}")
        return Source("checkpoint" if path.is_file() else "run", str(run))
    if weights is not None:
        return Source("file", str(weights))
    return Source("bundled", bundled_name(model or DEFAULT_MODEL))


def _weights_root() -> Traversable:
    """The package's weights folder (a Traversable, so it works from a zipped install too)."""
    return importlib.resources.files("catgan") / "weights"


def list_bundled() -> list[str]:
    """Names of the generators shipped in the package (src/catgan/weights/NAME.safetensors), sorted."""
    root = _weights_root()
    if not root.is_dir():
        return []
    return sorted(p.name[: -len(".safetensors")] for p in root.iterdir() if p.name.endswith(".safetensors"))


def bundled_name(name: str) -> str:
    """`name` when a model of that name is bundled, else one error saying what is."""
    if not _MODEL_NAME_RE.match(name):
        raise CatganError(f"bad model name {name!r}: bundled models are named like {DEFAULT_MODEL}")
    bundled = list_bundled()
    if name in bundled:
        return name
    if not bundled:
        raise CatganError(
            f"no bundled model is installed (looked for {name}.safetensors in catgan/weights); "
            "pass --run DIR or --weights FILE"
        )
    from catgan.config import presets

    if name in presets():  # a recipe whose trained weights are not shipped (e.g. thesis-128)
        raise CatganError(
            f"no trained {name} is bundled in this version (bundled models: {', '.join(bundled)}); "
            f"train one with `catgan train DATA --preset {name} --run RUN` and pass --run RUN"
        )
    raise CatganError(f"unknown model {name!r}; bundled models: {', '.join(bundled)}")


@contextlib.contextmanager
def bundled_file(name: str) -> Iterator[Path]:
    """The bundled model `name` as a real file (even from a zipped install)."""
    with importlib.resources.as_file(_weights_root() / f"{bundled_name(name)}.safetensors") as path:
        yield path


def read_generator(source: Source) -> tuple[dict[str, torch.Tensor], Any, dict[str, Any]]:
    """(state dict, generator config, provenance) of an exported file or a bundled model."""
    if source.kind == "file":
        return load_generator_file(source.value)
    with bundled_file(source.value) as path:
        return load_generator_file(path)


def generator_state(state: dict[str, Any], ema: bool) -> tuple[dict[str, torch.Tensor], bool]:
    """G's state dict from a training checkpoint: the EMA copy when asked for and present."""
    use_ema = bool(ema and state.get("G_ema"))
    sd = state["G_ema"] if use_ema else state["G"]
    # an EMA kept as torch.optim.swa_utils.AveragedModel prefixes "module." and adds a counter
    sd = {k.removeprefix("module."): v for k, v in sd.items() if k != "n_averaged"}
    return sd, use_ema


def newest_checkpoint(run: Path, warn: Callable[[str], None] = _warn) -> tuple[Path, dict] | None:
    """(path, state) of the newest step checkpoint of run folder `run` that can be read: damaged newer
    ones are skipped with a warning naming each (checkpoint_integrity.newest_readable); None if it has
    none; one error when none can be read."""
    return newest_readable(list_checkpoints(run), load_checkpoint, warn)


def run_generator(run: Path, ema: bool, hint: str, warn: Callable[[str], None] = _warn):
    """(checkpoint path, its state, generator config, G's state dict, whether it is the EMA copy) of a
    run's newest readable checkpoint (`warn` hears of damaged newer ones), or of `run` itself when it is
    a checkpoint file (e.g. checkpoints/best.pt); `hint` ends the error for a run without checkpoints."""
    if run.is_file():
        ckpt, state = run, load_checkpoint(run)
    elif not run.is_dir():
        raise CatganError(f"run folder not found: {run}")
    elif (found := newest_checkpoint(run, warn)) is None:
        raise CatganError(f"{run} has no checkpoints yet (checkpoints/step-*.pt); {hint}")
    else:
        ckpt, state = found
    cfg = saved_configs(state, ckpt)[0].generator
    sd, used_ema = generator_state(state, ema)
    return ckpt, state, cfg, sd, used_ema
