"""The run state: what a checkpoint holds, resuming it, starting from another run or a generator
(--init-from), and the resolution of a run's configs from a preset, a run folder or an --init-from source.

Every source of randomness is explicit, so a checkpoint resumes bit-exactly on the CPU, mid-epoch included:
- data_rng (CPU): the epoch permutation. A checkpoint stores its state at the start of the epoch and the
  position in it; resuming redraws the same permutation and skips the batches already done.
- noise_rng (device): the step's latents and flips (training.step).
- DiffAugment: reseeded from (seed, step, rank) at every step, so it needs no saved state.

A new run may start from another run's checkpoint (init_from, `catgan train --init-from`): it takes its
weights, EMA, step count, training time and random generators and goes on under its own training
settings, e.g. a changed recipe for the last steps, or other data. The Adam moments start afresh, as in
fine-tuning: they describe the old task's gradients (a confident D has tiny second moments, which would
turn the larger first gradients of a changed task into outsized steps).
It may also start from a generator alone (an exported .safetensors file, or a bundled model such as
"cats-64"): G and its EMA start from those weights and the step count from the one they record, while D,
the random generators and the data order start afresh. A new D knows nothing yet, and G's steps against
it would be noise, so such a run first trains D alone against the frozen G (cfg.d_warmup steps;
resolve_configs defaults it to DEFAULT_D_WARMUP).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from catgan import checkpoint as ckpt
from catgan.config import (
    OUTPUT_FIELDS,
    GANConfig,
    RunOptions,
    TrainConfig,
    diff,
    get_preset,
    to_dict,
    train_from_dict,
)
from catgan.errors import CatganError
from catgan.models import discriminator_config
from catgan.sources import newest_checkpoint, read_generator, resolve
from catgan.training.lock import is_lock_file

# TrainConfig fields that may change when a run resumes: when to stop, and a learning-rate decay that has
# not started yet (check_schedule refuses one that would change a step already done). Every other field
# changes the weights the run produces, so a resume that changes one is refused. (What a run writes along
# the way, and when, is RunOptions': any of it may change.)
RESUMABLE_FIELDS = frozenset({"epochs", "max_steps", "lr_decay_steps"})
# What a checkpoint must hold to resume a run (see state_dict() in _train).
RESUME_KEYS = (
    "G", "D", "G_ema", "opt_g", "opt_d", "step", "epoch", "batch_in_epoch", "data_rng", "noise_rng",
    "cpu_rng", "model_config", "train_config",
)  # fmt: skip
DEFAULT_D_WARMUP = 100  # D-alone steps of a run started from a generator, unless given (docs/benchmarks.md)
DEFAULT_PRESET = "cats-64"  # a new run's preset unless given: the one the README recommends
METRICS = "metrics.jsonl"
BEST = "best.pt"


def total_steps(cfg: TrainConfig, steps_per_epoch: int) -> int:
    """The step a run stops at: its epochs, capped by max_steps (epochs 0: max_steps alone)."""
    if not cfg.epochs:
        return cfg.max_steps
    total = cfg.epochs * steps_per_epoch
    return min(total, cfg.max_steps) if cfg.max_steps else total


def lr_scale(step: int, total: int, decay_steps: int) -> float:
    """The learning-rate multiplier of (0-based) step `step` in a `total`-step run: 1, then over the last
    `decay_steps` steps a straight line down, (total - step) / decay_steps, ending at 1 / decay_steps."""
    if decay_steps <= 0 or step < total - decay_steps:
        return 1.0
    return max(0, total - step) / decay_steps


def check_schedule(saved: TrainConfig, wanted: TrainConfig, steps_per_epoch: int, done: int) -> str | None:
    """Why resuming at step `done` with `wanted` would change the learning rate of a step already done
    (a decay that has started cannot move or change its slope), or None."""
    old, new = total_steps(saved, steps_per_epoch), total_steps(wanted, steps_per_epoch)
    past = range(done)
    if all(lr_scale(s, old, saved.lr_decay_steps) == lr_scale(s, new, wanted.lr_decay_steps) for s in past):
        return None
    began = "it has run at constant learning rates"
    if saved.lr_decay_steps:
        began = f"its decay began at step {max(0, old - saved.lr_decay_steps)}"
    asked = f"decays from step {max(0, new - wanted.lr_decay_steps)}" if wanted.lr_decay_steps else "has none"
    return (
        f"train.lr schedule: the run is at step {done} and {began}; the asked schedule {asked}: "
        "a learning-rate decay may change only before it starts"
    )


def check_resumable(saved: TrainConfig, wanted: TrainConfig) -> list[str]:
    """Differences between a run's config and the one asked for that would change its weights."""
    return [d for d in diff(saved, wanted) if d.split(":")[0] not in RESUMABLE_FIELDS]


def truncate_metrics(path: Path, step: int) -> None:
    """Drop records past the resumed step: those steps are about to be done again."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            if json.loads(line).get("step", 0) <= step:
                keep.append(line + "\n")
    ckpt.atomic_write(path, lambda tmp: tmp.write_text("".join(keep)), "metrics")


def _training_state(
    path: Path, what: str, hint: str, state: dict[str, Any] | None = None
) -> tuple[dict[str, Any], GANConfig, TrainConfig]:
    """(state, model config, train config) of a checkpoint that training can go on from (`state`: the
    one loaded from `path` already), else one error naming `what` and ending in `hint`."""
    state = ckpt.load_checkpoint(path) if state is None else state
    missing = [k for k in RESUME_KEYS if k not in state]
    if missing:
        raise CatganError(f"{what} is not a complete training checkpoint (no {', '.join(missing)}); {hint}")
    return (state, *ckpt.saved_configs(state, what))


def check_run_folder(run_dir: Path) -> None:
    """Refuse a non-empty `run_dir` that is not a catgan run (no config.json of the run format, no
    checkpoints/): training would write its files among someone else's."""
    if not run_dir.is_dir() or (run_dir / ckpt.CHECKPOINT_DIR).is_dir():
        return
    with contextlib.suppress(OSError, ValueError, AttributeError):
        if json.loads((run_dir / ckpt.RUN_CONFIG).read_text()).get("format", "").startswith("catgan-run"):
            return
    names = sorted(p.name for p in run_dir.iterdir() if not is_lock_file(p))  # our own lock is no stranger
    if not names:
        return
    shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
    raise CatganError(
        f"--run {run_dir} is not a catgan run but holds {len(names)} other file(s) ({shown}); "
        f"give a new folder, e.g. --run {run_dir / 'run'} or another name"
    )


def dataset_identity(dataset: str | Path | torch.Tensor, images: torch.Tensor) -> dict[str, Any]:
    """What names the data a run trains on, for its config.json: the resolved folder, the image count
    and a content hash (data.dataset.dataset_fingerprint, the metrics' cache key); an in-memory tensor
    is named by its shape and the hash of its bytes. images: the loaded uint8 (N, 3, S, S)."""
    import hashlib

    from catgan.data import dataset as ds

    if isinstance(dataset, torch.Tensor):
        digest = hashlib.sha256(dataset.contiguous().numpy().tobytes()).hexdigest()
        return {"path": None, "images": len(images), "sha256": digest}
    folder = ds.resolve(dataset, images.shape[-1])
    return {"path": str(folder.resolve()), "images": len(images), "sha256": ds.dataset_fingerprint(folder)}


def _describe_data(identity: dict[str, Any]) -> str:
    return f"{identity.get('path') or 'an in-memory tensor'} ({identity.get('images')} images, sha256 " + (
        f"{str(identity.get('sha256'))[:12]})"
    )


def _recorded_dataset(run_dir: Path) -> dict[str, Any] | None:
    try:
        saved = json.loads((run_dir / ckpt.RUN_CONFIG).read_text()).get("dataset")
    except (OSError, ValueError, AttributeError):
        return None
    return saved if isinstance(saved, dict) else None


def check_dataset(run_dir: Path, identity: dict[str, Any] | None, allow_new_data: bool) -> str | None:
    """Refuse to resume `run_dir` on other data than its config.json records (both named), unless
    `allow_new_data` (then: the line that says so, for the log). A run that records none (made before
    catgan recorded it) or no `identity` passes: there is nothing to compare."""
    saved = _recorded_dataset(run_dir)
    if identity is None or saved is None or saved.get("sha256") == identity["sha256"]:
        return None
    what = f"{run_dir} was trained on {_describe_data(saved)}, this is {_describe_data(identity)}"
    if allow_new_data:
        return f"note: {what}; going on with the new data (--allow-new-data)"
    raise CatganError(
        f"the dataset changed: {what}; train on the run's own data, use a new --run folder, or give "
        "--allow-new-data to go on with this data on purpose (e.g. fine-tuning)"
    )


def finished(state: dict[str, Any] | None, total: int) -> str | None:
    """The one line for a resumed run with nothing left to do (its step at or past `total`), else None."""
    if state is None or int(state["step"]) < total:
        return None
    return f"this run finished at step {int(state['step'])}; raise --max-steps or --epochs to go on"


def resume_state(run_dir: Path, model: GANConfig, cfg: TrainConfig, resume: bool, steps_per_epoch: int):
    """(path, state) of the run's latest checkpoint, checked against the configs; (None, None) if new
    (a non-empty folder that is not a catgan run is refused: check_run_folder)."""
    check_run_folder(run_dir)
    found = newest_checkpoint(run_dir)  # damaged newer ones skipped, each named in a warning
    if found is None:
        if resume:
            raise CatganError(
                f"--resume: {run_dir} has no checkpoint to resume from; drop --resume to start it"
            )
        return None, None
    latest = found[0]
    hint = "it cannot be resumed: move it away or use a new --run folder"
    state, saved_model, saved_train = _training_state(latest, str(latest), hint, found[1])
    problems = [f"model.{d}" for d in diff(saved_model, model)]
    problems += [f"train.{d}" for d in check_resumable(saved_train, cfg)]
    if not problems and (changed := check_schedule(saved_train, cfg, steps_per_epoch, int(state["step"]))):
        problems.append(changed)
    if problems:
        raise CatganError(
            f"{run_dir} holds a run with a different config (saved -> asked): {'; '.join(problems)}; "
            "use the run's own settings or a new --run folder"
        )
    return latest, state


def init_configs(source: str | Path) -> tuple[GANConfig, TrainConfig]:
    """The model and training configs of `source` (--init-from), which a run started from it takes for
    what it is not told: a checkpoint's own, or a generator file's generator, the discriminator config
    and the training settings its provenance records (TrainConfig's defaults when it records none), less
    any learning-rate decay (it ended the source's run, it should not start this one). Where such a run
    stops, the CLI decides for every run from a generator, preset or not (`catgan train`: its
    --max-steps, not epochs)."""
    src = resolve(source, "--init-from")
    if not src.is_generator:
        path = src.checkpoint()
        return ckpt.saved_configs(ckpt.load_checkpoint(path), path)
    _, gcfg, provenance = read_generator(src)
    if not isinstance(provenance.get("discriminator_config"), dict):
        raise CatganError(
            f"--init-from {source} records no discriminator config: give --preset for the new D"
        )
    dcfg = discriminator_config(provenance["discriminator_config"], f"--init-from {source}: discriminator")
    model = GANConfig(gcfg, dcfg)
    recorded = provenance.get("train_config")
    try:
        train = train_from_dict(recorded) if isinstance(recorded, dict) else TrainConfig()
    except (TypeError, CatganError) as err:
        raise CatganError(f"--init-from {source}: unreadable training settings in provenance: {err}") from err
    return model, dataclasses.replace(train, lr_decay_steps=0)


def _init_generator_state(source, model: GANConfig) -> dict[str, Any]:
    """The partial state of a new run started from a generator (see the module docstring): G and its EMA
    from the file, in fp32; no D, random generators or data position (they start afresh)."""
    tensors, saved_g, provenance = read_generator(source)
    source = source.value
    if changed := diff(saved_g, model.generator):
        raise CatganError(
            f"--init-from {source} holds another model (saved -> asked): {'; '.join(changed)}; "
            "drop --preset to take the generator's model"
        )
    sd = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}  # fp16 -> fp32
    origin = {
        "weights": Path(source).name,
        "sha256": ckpt.generator_hash(tensors, saved_g),
        "step": int(provenance.get("step") or 0),
        "train_config": provenance.get("train_config"),
    }
    state = {"G": sd, "G_ema": sd, "D": None, "step": origin["step"], "best_fid": math.inf}
    return {**state, "init_from": origin}


def init_state(source: Path, model: GANConfig) -> dict[str, Any]:
    """The state a new run starts from when it starts from `source` (a checkpoint, or a run folder: its
    latest one; or a generator: _init_generator_state), with an "init_from" record of it (which goes
    into the new run's config.json)."""
    src = resolve(source, "--init-from")
    if src.is_generator:
        return _init_generator_state(src, model)
    path = src.checkpoint()
    hint = "start from a step-*.pt or best.pt of a run"
    state, saved_model, _ = _training_state(path, f"--init-from {path}", hint)
    if changed := diff(saved_model, model):
        hint = "drop --preset to take the checkpoint's model"
        if saved_model.generator == model.generator:  # another D (family) for the same G
            hint += (
                ", or to pair its generator with a new D, export it (catgan export --run ...) and "
                "--init-from the .safetensors"
            )
        raise CatganError(
            f"--init-from {path} holds another model (saved -> asked): {'; '.join(changed)}; {hint}"
        )
    origin = {
        "run": ckpt.run_folder(path).resolve().name,
        "checkpoint": path.name,
        "step": int(state["step"]),
        "train_config": state["train_config"],
    }
    # a new run: its own best.pt, chosen by its own evaluations
    return {**state, "best_fid": math.inf, "init_from": origin}


# ---- the configs of a run ----------------------------------------------------------------------------


def resolve_configs(
    run_dir: str | Path,
    preset: str | None,
    init_from: str | Path | None,
    given: dict[str, Any],
    options: RunOptions | None = None,
) -> tuple[GANConfig, TrainConfig, RunOptions]:
    """The configs a `catgan train` run uses: the preset's (new runs: DEFAULT_PRESET), or the run folder's own
    when it is continued, or the --init-from source's; then the `given` TrainConfig fields on top.

    A run from a generator trains a new D alone first (d_warmup, DEFAULT_D_WARMUP unless given), and its
    --max-steps alone ends it (epochs 0 unless given): a file's steps are not epochs of this data (its own
    recipe's or a --preset's).

    The options are `options` with the cadence (config.OUTPUT_FIELDS) resolved: RunOptions' defaults, under
    a continued run's recorded one (checkpoint.load_run_output), under what `options` sets to other than the
    default, under the cadence fields in `given` (a step --checkpoint-every replaces an old run's epochs)."""
    continuing = (Path(run_dir) / ckpt.RUN_CONFIG).is_file()
    if preset is None and continuing:
        model, base = ckpt.load_run_config(run_dir)
    elif preset is None and init_from:
        model, base = init_configs(init_from)
    else:
        chosen = get_preset(preset or DEFAULT_PRESET)
        model, base = chosen.model, chosen.train
    given = dict(given)
    output = {k: given.pop(k) for k in OUTPUT_FIELDS if k in given}
    if init_from and not continuing and resolve(init_from, "--init-from").is_generator:
        given.setdefault("d_warmup", DEFAULT_D_WARMUP)
        if given.get("max_steps", base.max_steps):
            given.setdefault("epochs", 0)
    return model, dataclasses.replace(base, **given), _resolve_output(run_dir, continuing, options, output)


def _resolve_output(run_dir, continuing: bool, options: RunOptions | None, given: dict[str, int]):
    options, default = options or RunOptions(), RunOptions()
    recorded = ckpt.load_run_output(run_dir) if continuing else {}
    chosen = {k: getattr(options, k) for k in OUTPUT_FIELDS if getattr(options, k) != getattr(default, k)}
    chosen.update(given)
    if "checkpoint_every" in chosen:  # steps asked for: an old run's epoch cadence ends
        chosen.setdefault("checkpoint_every_epochs", 0)
    return dataclasses.replace(options, **{**recorded, **chosen})


# ---- where a run stands ------------------------------------------------------------------------------


@dataclass
class Progress:
    """Where a run stands: the counters a checkpoint saves besides the networks and the optimizers."""

    step: int = 0
    epoch: int = 0
    pos: int = 0  # batches done in the current epoch
    epoch_state: torch.Tensor | None = None  # the data generator's state at the start of this epoch
    elapsed: float = 0.0  # training seconds before this call
    best_fid: float = math.inf
    origin: dict[str, Any] | None = None  # what the run was started from (--init-from), in every checkpoint
    last_checkpoint: Path | None = None


def restore(state: dict[str, Any] | None, gan, resuming: bool, steps_per_epoch: int, data_gen) -> Progress:
    """Load a resumed or --init-from `state` into the GAN step's networks and random generators."""
    progress = Progress(epoch_state=data_gen.get_state())
    if state is None:
        return progress
    try:  # a tampered file can hold tensors of other shapes, or another optimizer's groups
        _load_networks(state, gan, resuming)
    except (RuntimeError, ValueError, KeyError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise CatganError(f"the saved state does not fit this run's networks: {first}") from err
    progress.step = state["step"]
    epoch, pos = state.get("epoch"), state.get("batch_in_epoch")
    if not resuming and (epoch is None or epoch * steps_per_epoch + pos != progress.step):
        # started from a run with another batch size or dataset: count its steps in this run's epochs
        epoch, pos = divmod(progress.step, steps_per_epoch)
    if pos >= steps_per_epoch:  # saved on a larger dataset (--allow-new-data): its epoch is over here
        # the next epoch's order is drawn from the saved epoch's start state: with other data a resume
        # cannot be exact anyway, and a position past this epoch's end would never be reached
        epoch, pos = epoch + 1, 0
    progress.epoch, progress.pos = epoch, pos
    try:
        _load_generators(state, gan, progress)
    except (RuntimeError, ValueError) as err:  # a CUDA run's generator state resumed on the CPU, ...
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise CatganError(f"the saved random generator states do not fit this device: {first}") from err
    progress.elapsed = float(state.get("elapsed", 0.0))
    progress.best_fid = float(state.get("best_fid", math.inf))
    progress.origin = state.get("init_from")
    return progress


def _load_networks(state: dict[str, Any], gan, resuming: bool) -> None:
    gan.G.load_state_dict(state["G"])
    if state["D"] is not None:  # None: started from a generator file, D starts from scratch
        gan.D.load_state_dict(state["D"])
    if gan.G_ema is not None:
        gan.G_ema.load_state_dict(state["G_ema"] if state["G_ema"] is not None else state["G"])
    if resuming:  # a run started from another's checkpoint starts fresh Adam moments
        gan.opt_g.load_state_dict(state["opt_g"])
        gan.opt_d.load_state_dict(state["opt_d"])


def _load_generators(state: dict[str, Any], gan, progress: Progress) -> None:
    if "data_rng" in state:  # a generator file carries no random generators: they start from cfg.seed
        progress.epoch_state = state["data_rng"]
        gan.noise.set_state(state["noise_rng"].to("cpu"))
        torch.set_rng_state(state["cpu_rng"])
    if gan.device.type == "cuda" and state.get("cuda_rng"):
        torch.cuda.set_rng_state(state["cuda_rng"][0], gan.device)


def checkpoint_state(
    gan, progress: Progress, model: GANConfig, cfg: TrainConfig, world: int, t_start: float
) -> dict[str, Any]:
    """Everything a resume needs (RESUME_KEYS and more), as plain tensors, numbers and dicts."""
    dev = gan.device
    return {
        "format": ckpt.CHECKPOINT_FORMAT,
        "G": gan.G.state_dict(),
        "D": gan.D.state_dict(),
        "G_ema": gan.G_ema.state_dict() if gan.G_ema is not None else None,
        "opt_g": gan.opt_g.state_dict(),
        "opt_d": gan.opt_d.state_dict(),
        "step": progress.step,
        "epoch": progress.epoch,
        "batch_in_epoch": progress.pos,
        "data_rng": progress.epoch_state,
        "noise_rng": gan.noise.get_state(),
        "cpu_rng": torch.get_rng_state(),
        "cuda_rng": [torch.cuda.get_rng_state(dev)] if dev.type == "cuda" else [],
        "model_config": to_dict(model),
        "train_config": to_dict(cfg),
        "elapsed": progress.elapsed + (time.perf_counter() - t_start),
        "best_fid": progress.best_fid,
        "world_size": world,
        **({"init_from": progress.origin} if progress.origin else {}),
    }


def save(run_dir: Path, state: dict[str, Any], keep: int) -> Path:
    """A step checkpoint, the older ones pruned to `keep`, and the loss plot redrawn (a plot that cannot
    be written never stops training)."""
    from catgan.plot import plot_losses, read_metrics

    path = ckpt.save_checkpoint(ckpt.checkpoint_path(run_dir, state["step"]), state)
    ckpt.prune_checkpoints(run_dir, keep)
    with contextlib.suppress(CatganError):
        plot_losses(read_metrics(run_dir / METRICS), run_dir / "loss.png", title=run_dir.name)
    return path
