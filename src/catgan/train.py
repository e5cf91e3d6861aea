"""The training loop: one D step then one G step per batch, with EMA, AMP, logging and exact resume.

    result = train("data/cats-64", model, cfg, "runs/cats64")

The dataset is read once into a uint8 tensor on the training device; each epoch draws one permutation
from a dedicated generator and walks it in batches (the last partial batch is dropped). Every source of
randomness is explicit, so a checkpoint resumes bit-exactly on the CPU, mid-epoch included:
- data_gen (CPU): the epoch permutation. A checkpoint stores its state at the start of the epoch and
  the position in it; resuming redraws the same permutation and skips the batches already done.
- noise_gen (device): latents and flips, drawn for the whole global batch on every rank (each rank
  keeps its slice), so N data-parallel ranks see the same z as one process with the same batch.
- DiffAugment: reseeded from (seed, step, rank) at every step, so it needs no saved state.
Under torchrun the same loop runs data-parallel (see catgan.distributed and docs/distributed.md).

A new run may start from another run's checkpoint (init_from, `catgan train --init-from`): it takes
its weights, EMA, step count, training time and random generators and goes on under its own training
settings, e.g. a changed recipe for the last steps, or other data. The Adam moments start afresh, as
in fine-tuning: they describe the old task's gradients (a confident D has tiny second moments, which
would turn the larger first gradients of a changed task into outsized steps).
It may also start from a generator alone (an exported .safetensors file, or a bundled model such as
"cats-64"): G and its EMA start from those weights and the step count from the one they record, while D,
the random generators and the data order start afresh. A new D knows nothing yet, and G's steps against
it would be noise, so such a run should first train D alone against the frozen G (cfg.d_warmup steps;
`catgan train --init-from cats-64` defaults to DEFAULT_D_WARMUP).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import json
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from catgan import checkpoint as ckpt
from catgan import losses
from catgan.augment import diff_augment
from catgan.config import ModelConfig, TrainConfig, diff, dumps, from_dict, to_dict
from catgan.data.dataset import epoch_permutation, load_dataset, to_float, to_uint8
from catgan.distributed import DistContext, all_mean, any_rank, broadcast_from_main, global_batchnorm
from catgan.errors import CatganError
from catgan.generate import (
    is_generator_source,
    latents_from_seeds,
    list_bundled,
    make_grid,
    origin_label,
    read_generator,
    save_image,
)
from catgan.models.dcgan import Discriminator, Generator, model_info, sample_latents
from catgan.runtime import cpu_count, resolve_device

# A sample_fn(seeds) returns the current generator's images for those seeds as uint8 (n, 3, H, W) on the
# CPU (seed s -> the latent `catgan generate --seeds s` uses); an evaluator (e.g.
# catgan.metrics.evaluate.FIDEvaluator) turns it into metrics such as {"fid": 42.0}. Its numeric values
# go to metrics.jsonl; "fid", when present, also picks checkpoints/best.pt.
SampleFn = Callable[[Sequence[int]], torch.Tensor]
Evaluator = Callable[[SampleFn], dict[str, Any]]

# Fields that may change when a run resumes: when to stop, what to write along the way, and a learning-rate
# decay that has not started yet (check_schedule refuses one that would change a step already done).
# Every other field changes the weights the run produces, so a resume that changes one is refused.
RESUMABLE_FIELDS = frozenset(
    {"epochs", "max_steps", "lr_decay_steps", "sample_every", "checkpoint_every", "keep_checkpoints"}
    | {"eval_every", "eval_n"}
)
# What a checkpoint must hold to resume a run (see state_dict() in _train).
RESUME_KEYS = (
    "G", "D", "G_ema", "opt_g", "opt_d", "step", "epoch", "batch_in_epoch", "data_rng", "noise_rng",
    "cpu_rng", "model_config", "train_config",
)  # fmt: skip
DEFAULT_D_WARMUP = 100  # D-alone steps of a run started from a generator, unless given (docs/benchmarks.md)
N_SAMPLES = 64  # the fixed latent batch of the sample grids: seeds 0..63
METRICS = "metrics.jsonl"
SAMPLES = "samples"
LOSS_PLOT = "loss.png"
BEST = "best.pt"


@dataclass(frozen=True)
class TrainResult:
    steps: int  # optimisation steps done in total (resumed ones included)
    epoch: int  # completed epochs
    checkpoint: Path | None  # the last checkpoint written
    loss_d: float  # mean of the last logging window
    loss_g: float
    best_fid: float | None = None
    resumed_from: int = 0  # the step this call started at


# ---- data ------------------------------------------------------------------------------------------


def load_images(dataset: str | Path | torch.Tensor, image_size: int) -> torch.Tensor:
    """A prepared dataset folder (or an in-memory uint8 tensor) as uint8 (N, 3, S, S), checked."""
    if isinstance(dataset, torch.Tensor):
        data = dataset
        if data.dtype != torch.uint8 or data.ndim != 4 or data.shape[1] != 3:
            raise CatganError(
                f"dataset tensor must be uint8 (N, 3, H, W), got {data.dtype} {tuple(data.shape)}"
            )
        if len(data) == 0:
            raise CatganError("dataset tensor is empty")
        if data.shape[2:] != (image_size, image_size):
            raise CatganError(
                f"dataset images are {data.shape[3]}x{data.shape[2]} but the model makes "
                f"{image_size}x{image_size}: prepare the data at {image_size} px or pick a matching preset"
            )
        return data
    return load_dataset(dataset, image_size=image_size)


# ---- EMA -------------------------------------------------------------------------------------------


def ema_decay(decay: float, step: int) -> float:
    """The decay warmed up as (1 + step) / (10 + step) (TensorFlow's num_updates rule), capped at `decay`:
    with a fixed 0.999 the average would still be 80% random init after 200 steps."""
    return min(decay, (1.0 + step) / (10.0 + step))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema = decay * ema + (1 - decay) * model for parameters; buffers (BatchNorm statistics) copied."""
    e_params = list(ema.parameters())
    m_params = [p.detach() for p in model.parameters()]
    torch._foreach_lerp_(e_params, m_params, 1.0 - decay)
    torch._foreach_copy_(list(ema.buffers()), list(model.buffers()))  # one launch, not one per buffer


# ---- learning-rate schedule ------------------------------------------------------------------------


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


# ---- resume ----------------------------------------------------------------------------------------


def check_resumable(saved: TrainConfig, wanted: TrainConfig) -> list[str]:
    """Differences between a run's config and the one asked for that would change its weights."""
    return [d for d in diff(saved, wanted) if d.split(":")[0] not in RESUMABLE_FIELDS]


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop records past the resumed step: those steps are about to be done again."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            if json.loads(line).get("step", 0) <= step:
                keep.append(line + "\n")
    ckpt.atomic_write(path, lambda tmp: tmp.write_text("".join(keep)), "metrics")


def _training_state(path: Path, what: str, hint: str) -> tuple[dict[str, Any], ModelConfig, TrainConfig]:
    """(state, model config, train config) of a checkpoint that training can go on from, else one error
    naming `what` and ending in `hint`."""
    state = ckpt.load_checkpoint(path)
    missing = [k for k in RESUME_KEYS if k not in state]
    if missing:
        raise CatganError(f"{what} is not a complete training checkpoint (no {', '.join(missing)}); {hint}")
    return (state, *ckpt.saved_configs(state, what))


def _resume_state(run_dir: Path, model: ModelConfig, cfg: TrainConfig, resume: bool, steps_per_epoch: int):
    """(path, state) of the run's latest checkpoint, checked against the configs; (None, None) if new."""
    latest = ckpt.latest_checkpoint(run_dir)
    if latest is None:
        if resume:
            raise CatganError(
                f"--resume: {run_dir} has no checkpoint to resume from; drop --resume to start it"
            )
        return None, None
    hint = "it cannot be resumed: move it away or use a new --run folder"
    state, saved_model, saved_train = _training_state(latest, str(latest), hint)
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


def init_configs(source: str | Path) -> tuple[ModelConfig, TrainConfig]:
    """The model and training configs of `source` (--init-from), which a run started from it takes for
    what it is not told: a checkpoint's own, or a generator file's model and the training settings its
    provenance records (TrainConfig's defaults when it records none), less any learning-rate decay (it
    ended the source's run, it should not start this one). Where such a run stops, the CLI decides for
    every run from a generator, preset or not (`catgan train`: its --max-steps, not epochs)."""
    if not is_generator_source(source):
        path = _source_checkpoint(source)
        return ckpt.saved_configs(ckpt.load_checkpoint(path), path)
    _, model, provenance = read_generator(source)
    recorded = provenance.get("train_config")
    try:
        train = from_dict(TrainConfig, recorded) if isinstance(recorded, dict) else TrainConfig()
    except (TypeError, CatganError) as err:
        raise CatganError(f"--init-from {source}: unreadable training settings in provenance: {err}") from err
    return model, dataclasses.replace(train, lr_decay_steps=0)


def _source_checkpoint(source: str | Path) -> Path:
    """The checkpoint --init-from `source` names (a file, or a run folder's latest), else one error."""
    if not Path(source).exists():
        raise CatganError(
            f"--init-from {source}: no such checkpoint, run folder or .safetensors file, and no bundled "
            f"model of that name (bundled: {', '.join(list_bundled()) or 'none'})"
        )
    return ckpt.resolve_checkpoint(source)


def _init_generator_state(source: str | Path, model: ModelConfig) -> dict[str, Any]:
    """The partial state of a new run started from a generator (see the module docstring): G and its EMA
    from the file, in fp32; no D, random generators or data position (they start afresh)."""
    tensors, saved_model, provenance = read_generator(source)
    if changed := diff(saved_model, model):
        raise CatganError(
            f"--init-from {source} holds another model (saved -> asked): {'; '.join(changed)}; "
            "drop --preset to take the generator's model"
        )
    sd = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}  # fp16 -> fp32
    origin = {
        "weights": Path(source).name,
        "sha256": ckpt.generator_hash(tensors, saved_model),
        "step": int(provenance.get("step") or 0),
        "train_config": provenance.get("train_config"),
    }
    state = {"G": sd, "G_ema": sd, "D": None, "step": origin["step"], "best_fid": math.inf}
    return {**state, "init_from": origin}


def _init_state(source: Path, model: ModelConfig) -> dict[str, Any]:
    """The state a new run starts from when it starts from `source` (a checkpoint, or a run folder: its
    latest one; or a generator: _init_generator_state), with an "init_from" record of it (which goes
    into the new run's config.json)."""
    if is_generator_source(source):
        return _init_generator_state(source, model)
    path = _source_checkpoint(source)
    hint = "start from a step-*.pt or best.pt of a run"
    state, saved_model, _ = _training_state(path, f"--init-from {path}", hint)
    if changed := diff(saved_model, model):
        raise CatganError(
            f"--init-from {path} holds another model (saved -> asked): {'; '.join(changed)}; "
            "drop --preset to take the checkpoint's model"
        )
    origin = {
        "run": ckpt.run_folder(path).resolve().name,
        "checkpoint": path.name,
        "step": int(state["step"]),
        "train_config": state["train_config"],
    }
    # a new run: its own best.pt, chosen by its own evaluations
    return {**state, "best_fid": math.inf, "init_from": origin}


# ---- Ctrl-C ----------------------------------------------------------------------------------------


class _StopFlag:
    """SIGINT asks the loop to stop after the current step and save; a second SIGINT aborts at once.

    Under torchrun a worker gets Ctrl-C twice (from the terminal and from the launcher passing it on),
    so there a second SIGINT changes nothing: the ranks agree on the step to stop at, rank 0 saves.
    """

    def __init__(self, abort_on_second: bool = True) -> None:
        self.requested = False
        self.abort_on_second = abort_on_second

    def _handler(self, signum, frame) -> None:
        if self.requested and self.abort_on_second:
            raise KeyboardInterrupt
        self.requested = True

    @contextlib.contextmanager
    def installed(self) -> Iterator[_StopFlag]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # signals only reach the main thread; elsewhere Ctrl-C is the caller's business
            return
        previous = signal.signal(signal.SIGINT, self._handler)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _peer_errors(ctx: DistContext, run_dir: str | Path) -> Iterator[None]:
    """A collective that fails (a peer died, the network went, the timeout passed) -> one clear line."""
    try:
        yield
    except RuntimeError as err:  # DistBackendError and gloo's "Connection closed by peer" alike
        if not ctx.enabled or isinstance(err, CatganError):
            raise
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise CatganError(
            f"rank {ctx.rank}: lost contact with the other processes ({first}); one probably died, see "
            f"the launcher's report for which; the last checkpoint in {run_dir}/checkpoints is intact"
        ) from err


# ---- the loop --------------------------------------------------------------------------------------


def train(
    dataset: str | Path | torch.Tensor,
    model: ModelConfig,
    cfg: TrainConfig,
    run_dir: str | Path,
    device: str = "auto",
    amp: bool = False,
    compile: bool = False,
    progress: bool = True,
    resume: bool = False,
    evaluator: Evaluator | None = None,
    dry_run: bool = False,
    threads: int | None = None,
    log_every: int = 10,
    channels_last: bool | None = None,
    dist_ctx: DistContext | None = None,
    log: Callable[[str], None] = print,
    init_from: str | Path | None = None,
) -> TrainResult:
    """Train a GAN on `dataset` into `run_dir`, or continue the run already there.

    dataset: a prepared dataset folder, or uint8 (N, 3, S, S) images.
    resume: insist on continuing (an error when run_dir has no checkpoint). Without it, a run folder
        with checkpoints is continued anyway; a config that differs in anything but the stopping point
        and the logging cadence (RESUMABLE_FIELDS) is refused with the differences listed.
    amp: bf16 autocast (CUDA or CPU). compile: torch.compile G and D. channels_last: default on CUDA.
    threads: CPU threads for this call (default: every core; restored on return).
    log_every: steps per metrics.jsonl record and per loss check (each check syncs with the device).
    evaluator: called every cfg.eval_every steps with a sample_fn; see `Evaluator`.
    init_from: a checkpoint (or run folder) a new run starts from (see the module docstring); its model
        config must be `model`. Ignored when run_dir already has a checkpoint: that run resumes.
    dist_ctx: the torchrun context (catgan.distributed.setup); None = a single process.
    Ctrl-C (SIGINT) finishes the current step, saves a checkpoint and raises KeyboardInterrupt.
    """
    ctx = dist_ctx or DistContext()
    dev = resolve_device(device)
    log = log if ctx.is_main else (lambda _msg: None)
    old_threads = torch.get_num_threads()
    if dev.type == "cpu":
        # all cores by default; torchrun ranks on one machine share them
        torch.set_num_threads(threads or max(1, cpu_count() // ctx.local_world))
    try:
        with _StopFlag(abort_on_second=not ctx.enabled).installed() as stop, _peer_errors(ctx, run_dir):
            return _train(
                dataset, model, cfg, Path(run_dir), dev=dev, amp=amp, compile=compile, progress=progress,
                resume=resume, evaluator=evaluator, dry_run=dry_run, log_every=max(1, log_every),
                channels_last=channels_last, ctx=ctx, log=log, stop=stop,
                init_from=Path(init_from) if init_from is not None else None,
            )  # fmt: skip
    finally:
        torch.set_num_threads(old_threads)


def _train(
    dataset: str | Path | torch.Tensor,
    model: ModelConfig,
    cfg: TrainConfig,
    run_dir: Path,
    *,
    dev: torch.device,
    amp: bool,
    compile: bool,
    progress: bool,
    resume: bool,
    evaluator: Evaluator | None,
    dry_run: bool,
    log_every: int,
    channels_last: bool | None,
    ctx: DistContext,
    log: Callable[[str], None],
    stop: _StopFlag,
    init_from: Path | None,
) -> TrainResult:
    if cfg.batch % ctx.world:
        raise CatganError(
            f"--batch {cfg.batch} is the global batch and must divide by the {ctx.world} processes; "
            f"try {max(ctx.world, cfg.batch // ctx.world * ctx.world)}"
        )
    local_batch = cfg.batch // ctx.world
    data = load_images(dataset, model.image_size)  # uint8 (N, 3, S, S)
    n = len(data)
    if cfg.batch > n:
        raise CatganError(f"--batch {cfg.batch} is larger than the dataset ({n} images); use --batch <= {n}")
    steps_per_epoch = n // cfg.batch  # the last partial batch is dropped
    total = total_steps(cfg, steps_per_epoch)

    # ---- run folder: new, or resume the checkpoint there
    # rank 0 reads the checkpoint and checks it; every rank gets the same state (or the same error)
    latest, state, problem = None, None, None
    if ctx.is_main:
        try:
            latest, state = _resume_state(run_dir, model, cfg, resume, steps_per_epoch)
            if state is None and init_from is not None:
                state = _init_state(init_from, model)
        except CatganError as err:
            problem = str(err)
    latest, state, problem = broadcast_from_main((latest, state, problem), ctx)
    if problem:
        raise CatganError(problem)
    log(dumps(model=model, train=cfg))
    info = model_info(model)
    log(
        f"G {info['g_params'] / 1e6:.2f}M params, D {info['d_params'] / 1e6:.2f}M params, "
        f"{info['step_gflop']:.3f} GFLOP per image per step; {n} images, {steps_per_epoch} steps/epoch, "
        f"global batch {cfg.batch} ({local_batch} x {ctx.world} processes) on {dev}"
    )
    if dry_run:
        return TrainResult(0, 0, None, math.nan, math.nan)

    # ---- models, optimizers, random generators
    torch.manual_seed(cfg.seed)  # the weight init (and spectral norm's first vectors) come from here
    G, D = Generator(model).to(dev), Discriminator(model).to(dev)
    if ctx.enabled and cfg.sync_batchnorm:  # BatchNorm statistics over the global batch
        G, D = global_batchnorm(G), global_batchnorm(D)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False) if cfg.ema > 0 else None
    # fused: one kernel per Adam step, not a dozen foreach ones (on an H200 a 128 px step is launch-bound);
    # a resumed run keeps what its checkpoint's optimizer used
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2), fused=True)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2), fused=True)
    data_gen = torch.Generator().manual_seed(cfg.seed)
    noise_gen = torch.Generator(device=dev).manual_seed(cfg.seed + 1)
    aug_gen = torch.Generator(device=dev)
    step = epoch = pos = 0
    epoch_state = data_gen.get_state()  # data_gen before this epoch's permutation
    elapsed, best_fid = 0.0, math.inf
    if state is not None:
        G.load_state_dict(state["G"])
        if state["D"] is not None:  # None: started from a generator file, D starts from scratch
            D.load_state_dict(state["D"])
        if G_ema is not None:
            G_ema.load_state_dict(state["G_ema"] if state["G_ema"] is not None else state["G"])
        if latest is not None:  # a resume; a run started from another's checkpoint starts fresh Adam moments
            opt_g.load_state_dict(state["opt_g"])
            opt_d.load_state_dict(state["opt_d"])
        step = state["step"]
        epoch, pos = state.get("epoch"), state.get("batch_in_epoch")
        if latest is None and (epoch is None or epoch * steps_per_epoch + pos != step):
            # started from a run with another batch size or dataset: count its steps in this run's epochs
            epoch, pos = divmod(step, steps_per_epoch)
        if "data_rng" in state:  # a generator file carries no random generators: they start from cfg.seed
            epoch_state = state["data_rng"]
            noise_gen.set_state(state["noise_rng"].to("cpu"))
            torch.set_rng_state(state["cpu_rng"])
        if dev.type == "cuda" and state.get("cuda_rng"):
            torch.cuda.set_rng_state(state["cuda_rng"][0], dev)
        elapsed = float(state.get("elapsed", 0.0))
        best_fid = float(state.get("best_fid", math.inf))
    origin = state.get("init_from") if state is not None else None  # kept by every checkpoint of the run
    if latest is None and origin is not None and step >= total:
        ends = f"{cfg.epochs} epochs of {steps_per_epoch} steps, " if cfg.epochs else ""
        more = " or more --epochs" if cfg.epochs else ""
        raise CatganError(
            f"--init-from: {origin_label(origin)} is at step {step}, and this run ends at step {total} "
            f"({ends}--max-steps {cfg.max_steps}); give a later --max-steps{more}"
        )
    if latest is not None:
        log(f"resuming {latest} at step {step} (epoch {epoch}, batch {pos})")
    elif origin is not None:
        log(f"starting from {origin_label(origin)} at step {step} (epoch {epoch}, batch {pos})")
    g_from = (origin["step"] if origin is not None else 0) + cfg.d_warmup  # G is frozen before this step
    if step < g_from:
        log(f"training D alone (G frozen) until step {g_from} (--d-warmup {cfg.d_warmup})")
    resumed_from = step

    if ctx.is_main:
        ckpt.save_run_config(run_dir, model, cfg, **({"init_from": origin} if origin else {}))
        (run_dir / SAMPLES).mkdir(parents=True, exist_ok=True)
        _truncate_metrics(run_dir / METRICS, step)

    # ---- how the steps run: memory format, compile, DDP wrappers (state dicts always come from G, D)
    cl = dev.type == "cuda" if channels_last is None else channels_last
    if dev.type == "cuda":  # fixed shapes: cuDNN times its algorithms once and reuses them
        torch.backends.cudnn.benchmark = True
    fmt = torch.channels_last if cl else torch.contiguous_format
    for m in (G, D, G_ema):
        if m is not None:
            m.to(memory_format=fmt)
    G_step, D_step, D_for_g = G, D, D
    if ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [dev.index] if dev.type == "cuda" else None
        G_step, D_step = DDP(G, device_ids=ids), DDP(D, device_ids=ids)
    if compile:
        G_step, D_step, D_for_g = torch.compile(G_step), torch.compile(D_step), torch.compile(D)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp)
    lo, hi = ctx.rank * local_batch, (ctx.rank + 1) * local_batch  # this rank's slice of a global batch
    fixed_z = latents_from_seeds(model, range(N_SAMPLES)).to(dev)  # (64, z_dim)

    def augment(x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, cfg.diffaug, aug_gen) if cfg.diffaug else x

    def one_step(real_u8: torch.Tensor) -> torch.Tensor:
        """One D step and one G step on this rank's uint8 (b, 3, S, S) batch.

        Returns [loss_d, loss_g, mean D(x), mean D(G(z))] (sigmoid of the logits), on the device.
        """
        real = to_float(real_u8).contiguous(memory_format=fmt)  # (b, 3, S, S) in [-1, 1]
        z = sample_latents(model, cfg.batch, noise_gen, dev)[lo:hi]  # (b, z_dim) of the global batch
        if cfg.flip:
            flip = (torch.rand(cfg.batch, generator=noise_gen, device=dev) < 0.5)[lo:hi]  # (b,)
            real = torch.where(flip[:, None, None, None], real.flip(3), real)
        aug_gen.manual_seed((cfg.seed * 1_000_003 + step) * 1024 + ctx.rank)
        scale = lr_scale(step, total, cfg.lr_decay_steps)
        for opt, lr in ((opt_d, cfg.lr_d), (opt_g, cfg.lr_g)):
            for group in opt.param_groups:
                group["lr"] = lr * scale
        train_g = step >= g_from
        with autocast, torch.set_grad_enabled(train_g):
            fake = G_step(z)  # (b, 3, S, S); the G step below reuses it (3G + 9D FLOPs per image)

        # (1) Update D: push D(x) up and D(G(z)) down.
        lazy_r1 = cfg.r1_gamma > 0 and step % cfg.r1_every == 0
        real.requires_grad_(lazy_r1)
        with autocast:
            real_logits = D_step(augment(real)).float()  # (b,)
            fake_logits = D_step(augment(fake.detach())).float()  # (b,)
        loss_d = losses.d_loss(cfg.loss, real_logits, fake_logits, cfg.real_label)
        total_d = loss_d
        if lazy_r1:  # scaled by the interval so lazy R1 has the strength of R1 every step
            total_d = total_d + losses.r1_penalty(real, real_logits) * (cfg.r1_gamma / 2 * cfg.r1_every)
        opt_d.zero_grad(set_to_none=True)
        total_d.backward()
        opt_d.step()

        # (2) Update G: push D(G(z)) up, through the D just updated. D's weights need no gradient
        # here, so it runs frozen and outside DDP (nothing of D's to all-reduce). While G is frozen
        # (d_warmup) its loss is only measured.
        D.requires_grad_(False)
        with autocast, torch.set_grad_enabled(train_g):
            fake_logits_g = D_for_g(augment(fake)).float()  # (b,)
        loss_g = losses.g_loss(cfg.loss, real_logits.detach(), fake_logits_g)
        if train_g:
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
        D.requires_grad_(True)

        if G_ema is not None:
            if step >= cfg.ema_start:
                update_ema(G_ema, G, ema_decay(cfg.ema, step - cfg.ema_start))
            else:
                G_ema.load_state_dict(G.state_dict())
        return torch.stack(
            [
                loss_d.detach(),
                loss_g.detach(),
                real_logits.detach().sigmoid().mean(),
                fake_logits.detach().sigmoid().mean(),
            ]
        )

    @torch.no_grad()
    def generate(z: torch.Tensor) -> torch.Tensor:
        """uint8 (n, 3, S, S) on the CPU from z (n, z_dim), by the EMA generator when there is one."""
        net = G_ema if G_ema is not None else G
        was_training = net.training
        net.eval()
        try:
            return torch.cat([to_uint8(net(chunk)).cpu() for chunk in z.split(cfg.batch)])
        finally:
            net.train(was_training)

    def sample_fn(seeds: Sequence[int]) -> torch.Tensor:
        return generate(latents_from_seeds(model, seeds).to(dev))

    def state_dict() -> dict[str, Any]:
        cuda_rng = [torch.cuda.get_rng_state(dev)] if dev.type == "cuda" else []
        return {
            "G": G.state_dict(),
            "D": D.state_dict(),
            "G_ema": G_ema.state_dict() if G_ema is not None else None,
            "opt_g": opt_g.state_dict(),
            "opt_d": opt_d.state_dict(),
            "step": step,
            "epoch": epoch,
            "batch_in_epoch": pos,
            "data_rng": epoch_state,
            "noise_rng": noise_gen.get_state(),
            "cpu_rng": torch.get_rng_state(),
            "cuda_rng": cuda_rng,
            "model_config": to_dict(model),
            "train_config": to_dict(cfg),
            "elapsed": elapsed + (time.perf_counter() - t_start),
            "best_fid": best_fid,
            "world_size": ctx.world,
            **({"init_from": origin} if origin else {}),
        }

    last_ckpt: Path | None = latest
    metrics_file = None  # opened (rank 0) just before the loop's try, which closes it

    def write_record(record: dict[str, Any]) -> None:
        if metrics_file is not None:
            metrics_file.write(json.dumps(record) + "\n")
            metrics_file.flush()

    def save(reason: str) -> None:
        nonlocal last_ckpt
        if not ctx.is_main:
            return
        path = ckpt.save_checkpoint(ckpt.checkpoint_path(run_dir, step), state_dict())
        last_ckpt = path
        ckpt.prune_checkpoints(run_dir, cfg.keep_checkpoints)
        from catgan.plot import plot_losses, read_metrics

        with contextlib.suppress(CatganError):  # a plot that cannot be written never stops training
            plot_losses(read_metrics(run_dir / METRICS), run_dir / LOSS_PLOT, title=run_dir.name)
        log_line(f"step {step}: saved {path} ({reason})")

    def sample() -> None:
        if ctx.is_main:
            save_image(make_grid(generate(fixed_z), nrow=8), run_dir / SAMPLES / f"step-{step:06d}.png")

    def evaluate() -> None:
        nonlocal best_fid
        if not ctx.is_main:
            return
        numbers = (int, float)
        result = {k: float(v) for k, v in evaluator(sample_fn).items() if isinstance(v, numbers)}
        write_record({"step": step, "epoch": epoch + pos / steps_per_epoch, **result})
        shown = {k: v for k, v in result.items() if k in ("fid", "kid_mean")} or result
        log_line(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in shown.items()))
        if result.get("fid", math.inf) < best_fid:
            best_fid = result["fid"]
            ckpt.save_checkpoint(run_dir / ckpt.CHECKPOINT_DIR / BEST, state_dict())

    # ---- metrics window: per-step values stay on the device; one sync per window
    window: list[torch.Tensor] = []
    window_t0 = time.perf_counter()
    last = (math.nan, math.nan)

    def aside(work: Callable[[], None]) -> None:
        """Run work that is not training (samples, FID, checkpoints), keeping it out of img/s."""
        nonlocal window_t0
        t0 = time.perf_counter()
        work()
        window_t0 += time.perf_counter() - t0

    def flush() -> None:
        """Log the window's means; stop on the first non-finite loss without saving anything."""
        nonlocal window, window_t0, last
        if not window:
            return
        values = all_mean(torch.stack(window), ctx).tolist()  # (k, 4): identical on every rank
        first_step = step - len(window) + 1
        for i, v in enumerate(values):
            if not all(math.isfinite(x) for x in v[:2]):
                keep = (
                    f"the last good checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint was written"
                )
                raise CatganError(
                    f"non-finite loss at step {first_step + i} (loss_d={v[0]}, loss_g={v[1]}); "
                    f"stopped without saving; {keep}; try lower --lr-d / --lr-g or without --amp"
                )
        now = time.perf_counter()
        mean = [sum(col) / len(values) for col in zip(*values, strict=True)]
        img_s = len(window) * cfg.batch / max(now - window_t0, 1e-9)
        last = (mean[0], mean[1])
        write_record(
            {
                "step": step,
                "epoch": epoch + pos / steps_per_epoch,
                "loss_d": mean[0],
                "loss_g": mean[1],
                "d_real": mean[2],
                "d_fake": mean[3],
                "img/s": img_s,
                "lr_scale": lr_scale(step - 1, total, cfg.lr_decay_steps),
                "time": elapsed + now - t_start,
            }
        )
        bar.set_postfix(d=f"{mean[0]:.3f}", g=f"{mean[1]:.3f}", img_s=f"{img_s:.0f}", refresh=False)
        window, window_t0 = [], now

    from tqdm.auto import tqdm

    bar = tqdm(
        total=total,
        initial=min(step, total),
        unit="step",
        dynamic_ncols=True,
        disable=not progress or not ctx.is_main,
    )

    def log_line(msg: str) -> None:
        if ctx.is_main:
            bar.write(msg) if progress else log(msg)

    t_start = time.perf_counter()
    data = data.to(dev)  # (N, 3, S, S) uint8, once
    interrupted = False
    metrics_file = open(run_dir / METRICS, "a") if ctx.is_main else None  # noqa: SIM115 (closed below)
    try:
        if step == 0:
            sample()
        while step < total:
            # the epoch's permutation: redrawn from the epoch's start state, so a resume sees the same one
            data_gen.set_state(epoch_state)
            perm = epoch_permutation(n, data_gen)  # (N,), the same on every rank
            while pos < steps_per_epoch and step < total:
                idx = perm[pos * cfg.batch + lo : pos * cfg.batch + hi].to(dev, non_blocking=True)  # (b,)
                window.append(one_step(data[idx]))
                step, pos = step + 1, pos + 1
                bar.update(1)
                if len(window) >= log_every:
                    flush()
                if cfg.sample_every and step % cfg.sample_every == 0:
                    aside(sample)
                if evaluator is not None and cfg.eval_every and step % cfg.eval_every == 0:
                    flush()
                    aside(evaluate)
                # under DDP the ranks agree on stopping at the log cadence: a per-step all-reduce would
                # sync the host with the GPU every step
                if (not ctx.enabled or step % log_every == 0) and any_rank(stop.requested, dev, ctx):
                    interrupted = True
                    break
            if pos == steps_per_epoch:
                epoch, pos = epoch + 1, 0
                epoch_state = data_gen.get_state()
                periodic = cfg.checkpoint_every and epoch % cfg.checkpoint_every == 0
                if periodic and step < total and not interrupted:
                    flush()
                    aside(functools.partial(save, f"epoch {epoch}"))
            if interrupted:
                break
        flush()
        if interrupted:
            save("interrupted")
            log_line(f"interrupted at step {step}; run the same command again to continue")
            raise KeyboardInterrupt
        if step != resumed_from or last_ckpt is None:
            save("end")
        if step != resumed_from and not (cfg.sample_every and step % cfg.sample_every == 0):
            sample()  # the last grid (unless the cadence just drew it)
    finally:
        bar.close()
        if metrics_file is not None:
            metrics_file.close()
    return TrainResult(
        steps=step,
        epoch=epoch,
        checkpoint=last_ckpt,
        loss_d=last[0],
        loss_g=last[1],
        best_fid=best_fid if math.isfinite(best_fid) else None,
        resumed_from=resumed_from,
    )


def replace(cfg: TrainConfig, **overrides: Any) -> TrainConfig:
    """cfg with the given fields replaced, ignoring None (an option that was not given)."""
    return dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
