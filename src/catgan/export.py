"""Export and provenance: a run's generator as one self-describing .safetensors file, optionally averaged
over its step checkpoints (and those of the runs it was started from) and with standing BatchNorm statistics.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from catgan.checkpoint import (
    RUN_CONFIG,
    export_generator,
    load_checkpoint,
    run_folder,
    saved_configs,
    step_checkpoints,
)
from catgan.config import to_dict
from catgan.errors import CatganError
from catgan.generate import build_checked
from catgan.io import read_json
from catgan.models.base import standing_stats
from catgan.progress import progress_pass
from catgan.runtime import resolve_device
from catgan.sources import generator_state, run_generator
from catgan.training.lock import run_lock


def _run_config(run_dir: Path) -> dict[str, Any]:
    """The run folder's config.json as the trainer wrote it ({} when missing or unreadable)."""
    return read_json(run_dir / RUN_CONFIG, default={})


def _is_run_folder(folder: Path) -> bool:
    """Whether `folder` is a catgan run: a config.json of the run format, or step checkpoints (a lock
    file alone says nothing: other tools name theirs .lock too)."""
    if step_checkpoints(folder):
        return True
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return str(json.loads((folder / RUN_CONFIG).read_text()).get("format", "")).startswith("catgan-run")
    return False


def enclosing_run(path: str | Path) -> Path | None:
    """The run folder `path` (a file to write) lies in, at any depth; None when it is in none."""
    for folder in Path(path).absolute().parents:
        if _is_run_folder(folder):
            return folder
    return None


@contextlib.contextmanager
def _out_lock(out: str | Path, log: Callable[[str], None]) -> Iterator[None]:
    """Hold the lock of the run folder `out` is written into, if any (training.lock): an export into a
    run that trains, or that another export writes into, is refused in one line naming the holder."""
    run = enclosing_run(out)
    if run is None:
        yield
        return
    with run_lock(run, "export", log):
        yield


def origin_label(origin: dict[str, Any]) -> str:
    """What a run was started from (its "init_from" record), for people: "RUN/CHECKPOINT" or a generator
    file's name."""
    return f"{origin['run']}/{origin['checkpoint']}" if "run" in origin else str(origin["weights"])


def _lineage_checkpoints(
    state: dict[str, Any], run_dir: Path, ancestors: Sequence[str | Path], start: int
) -> list[tuple[int, Path]]:
    """Step checkpoints from step `start` on of the runs `ancestors`, which must be the runs this one was
    started from (`catgan train --init-from`, recorded as "init_from" in every checkpoint): a parent's
    steps up to the fork point, then its own parent's up to the parent's fork point, and so on."""
    by_name: dict[str, Path] = {}
    for a in ancestors:
        path = Path(a)
        if not path.is_dir():
            raise CatganError(f"--average-with {a}: no such run folder")
        by_name[path.resolve().name] = path
    found: list[tuple[int, Path]] = []
    child, origin = run_dir.resolve().name, state.get("init_from")
    while by_name and origin is not None and origin.get("run") in by_name:
        parent = by_name.pop(origin["run"])
        fork = int(origin["step"])
        found += [(s, p) for s, p in step_checkpoints(parent) if start <= s <= fork]
        child, origin = parent.resolve().name, _run_config(parent).get("init_from")
    if by_name:
        came = f"was started from {origin_label(origin)}" if origin else "was not started with --init-from"
        raise CatganError(
            f"--average-with {next(iter(by_name.values()))}: not an ancestor of this run ({child} {came})"
        )
    return found


def average_checkpoints(
    ckpt: Path, state: dict[str, Any], ema: bool, start: int, ancestors: Sequence[str | Path] = ()
) -> tuple[dict[str, torch.Tensor], list[int]]:
    """G's weights in checkpoint `ckpt` (loaded as `state`; the EMA copy when ema) averaged with those of
    its run's step checkpoints from step `start` up to it, each counted once: checkpoint averaging, a long
    uniform average of the generator. `ancestors`: the runs it was started from (--init-from), whose
    checkpoints from `start` up to the fork point join the average. Floating tensors are averaged in
    float64 (BatchNorm statistics too: re-estimate them with standing_stats); integer counters stay
    ckpt's. Returns (weights, steps used, oldest first)."""
    step = int(state.get("step", 0))
    if start > step:
        raise CatganError(f"--average-from {start} is after the exported checkpoint's step {step}")
    run_dir = run_folder(ckpt)
    others = [(s, p) for s, p in step_checkpoints(run_dir) if start <= s < step]  # ckpt itself: s == step
    others = sorted(_lineage_checkpoints(state, run_dir, ancestors, start) + others)
    if not others:
        raise CatganError(
            f"--average-from {start}: {run_dir} keeps no step checkpoints from step {start} to {step} "
            "to average with (see --keep when training)"
        )
    sd, used_ema = generator_state(state, ema)
    total = {k: v.double() for k, v in sd.items() if v.is_floating_point()}
    with progress_pass("averaging checkpoints", len(others), "checkpoints") as bar:
        for _, path in others:
            other_state = load_checkpoint(path)
            other, other_ema = generator_state(other_state, ema)
            same = saved_configs(other_state, path)[0] == saved_configs(state, ckpt)[0]
            if not same or other.keys() != sd.keys() or other_ema != used_ema:
                raise CatganError(f"{path} holds another generator than {ckpt.name}: they cannot be averaged")
            for k in total:
                total[k] += other[k].double()
            bar.update(1)
    n = len(others) + 1
    averaged = {k: (total[k] / n).to(v.dtype) if k in total else v for k, v in sd.items()}
    return averaged, [s for s, _ in others] + [step]


def _standing_stats(G: torch.nn.Module, cfg: Any, batches: int) -> int:
    """models.base.standing_stats with a progress bar (a minute on the CPU for a large G): one tick per
    forward pass of G, each a batch of latents."""
    if batches < 1 or not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in G.modules()):
        return 0
    with progress_pass("standing statistics", batches, "batches") as bar:
        hook = G.register_forward_hook(lambda *_: bar.update(1))
        try:
            return standing_stats(G, cfg, batches=batches)
        finally:
            hook.remove()


def export_run(
    run_dir: str | Path,
    out: str | Path,
    ema: bool = True,
    fp16: bool = False,
    standing: int = 0,
    average_from: int | None = None,
    average_with: Sequence[str | Path] = (),
    device: str | torch.device = "cpu",
    log: Callable[[str], None] = print,
) -> Path:
    """The run's latest generator (or that of one checkpoint file of a run; EMA if present and ema) as a
    self-describing .safetensors file. average_from averages it with the run's step checkpoints from that
    step on, and with those of the runs it was started from (average_with; average_checkpoints).
    standing > 0 then re-estimates its BatchNorm statistics over that many batches of 64 latents
    (models.base.standing_stats; seed 0, so the same latents on every device) on `device`: a GPU does
    it in seconds where a CPU takes a minute for a large G.

    Provenance in the metadata: the run folder's name (not its path: a shipped file should not carry the
    trainer's directories), checkpoint, step, epoch, training wall time, whether EMA was used, the train
    config, and the preset / dataset entries of the run's config.json where the trainer recorded them.

    An `out` inside a run folder (any run, this one included) is written under that run's lock
    (training.lock): refused in one line while a trainer or another export holds it. Reading a run needs
    no lock (its files are replaced atomically), so a run that trains can be exported elsewhere.
    """
    if Path(out).suffix != ".safetensors":
        raise CatganError(f"--out must end in .safetensors, got {Path(out).name}")
    if standing < 0:
        raise CatganError(f"--standing-stats must be >= 0 batches, got {standing}")
    if average_with and average_from is None:
        raise CatganError("--average-with needs --average-from STEP: the first step to average")
    with _out_lock(out, log):
        return _export(run_dir, out, ema, fp16, standing, average_from, average_with, device)


def _export(run_dir, out, ema, fp16, standing, average_from, average_with, device) -> Path:
    ckpt, state, cfg, sd, used_ema = run_generator(Path(run_dir), ema, "nothing to export")
    run_dir = run_folder(ckpt)
    averaged_steps: list[int] = []
    if average_from is not None:
        sd, averaged_steps = average_checkpoints(ckpt, state, used_ema, average_from, average_with)
    G = build_checked(sd, cfg, str(ckpt), resolve_device(device))  # refuse weights that would not load
    if _standing_stats(G, cfg, standing):  # 0 when standing is 0 or G has no BatchNorm
        sd = G.state_dict()  # export_generator moves it to the CPU
    else:
        standing = 0
    provenance: dict[str, Any] = {
        "run": run_dir.resolve().name,
        "checkpoint": ckpt.name,
        "step": int(state.get("step", 0)),
        "epoch": state.get("epoch"),
        "train_seconds": round(float(state.get("elapsed", 0.0)), 1),
        "ema": used_ema,
        "weights_dtype": "float16" if fp16 else "float32",
        "standing_stats_batches": standing,
        "averaged_steps": averaged_steps,
        "averaged_with_runs": [Path(a).resolve().name for a in average_with],
        "train_config": state.get("train_config"),
        # what a run started from this file (--init-from) builds its new D from
        "discriminator_config": to_dict(saved_configs(state, ckpt)[0].discriminator),
    }
    for key, value in _run_config(run_dir).items():  # preset, dataset fingerprint, ... what the trainer wrote
        if key not in ("model", "train", "output", "state_dict", "out", "dtype") and key not in provenance:
            provenance[key] = value
    if isinstance(data := provenance.get("dataset"), dict) and data.get("path"):  # its name, not the path
        provenance["dataset"] = {**data, "path": Path(data["path"]).name}
    return export_generator(sd, cfg, out, dtype=torch.float16 if fp16 else None, **provenance)
