"""The training loop: one GAN step (training.step) per batch, with samples, evaluations, checkpoints and
exact resume (training.state), reported by training.report.

    result = train("data/cats-64", preset.model, preset.train, "runs/cats64", RunOptions(device="cuda"))

The dataset is read once into a uint8 tensor on the training device; each epoch draws one permutation
from a dedicated generator and walks it in batches (the last partial batch is dropped). Under torchrun the
same loop runs data-parallel (see catgan.distributed and docs/distributed.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from catgan import checkpoint as ckpt
from catgan.checkpoint_integrity import set_aside_unreadable
from catgan.config import GANConfig, RunOptions, TrainConfig, dumps
from catgan.data.dataset import epoch_permutation, load_dataset
from catgan.distributed import DistContext, any_rank, broadcast_from_main, global_batchnorm
from catgan.errors import CatganError
from catgan.export import origin_label
from catgan.images import make_grid, save_image
from catgan.io import remove_stale_temps
from catgan.metrics.selection import check_selection_evaluator
from catgan.models import build_discriminator, build_generator, model_info
from catgan.runtime import cpu_count, cpu_has_native_bf16, resolve_device
from catgan.sampling import latents_from_seeds
from catgan.training import state as run_state
from catgan.training.lock import run_lock
from catgan.training.report import Report, amp_hint, first_faces
from catgan.training.step import GANStep

# A sample_fn(seeds) returns the current generator's images for those seeds as uint8 (n, 3, H, W) on the
# CPU (seed s -> the latent `catgan generate --seeds s` uses); an evaluator (e.g.
# catgan.metrics.evaluate.FIDEvaluator) turns it into metrics such as {"fid": 42.0}. Its numeric values
# go to metrics.jsonl; "fid", when present, also picks checkpoints/best.pt.
SampleFn = Callable[[Sequence[int]], torch.Tensor]
Evaluator = Callable[[SampleFn], dict[str, Any]]
N_SAMPLES = 64  # the fixed latent batch of the sample grids: seeds 0..63
SAMPLES = "samples"


@dataclass(frozen=True)
class TrainResult:
    steps: int  # optimisation steps done in total (resumed ones included)
    epoch: int  # completed epochs
    checkpoint: Path | None  # the last checkpoint written
    loss_d: float  # mean of the last logging window
    loss_g: float
    best_fid: float | None = None
    resumed_from: int = 0  # the step this call started at


def train(
    dataset: str | Path | torch.Tensor,
    model: GANConfig,
    cfg: TrainConfig,
    run_dir: str | Path,
    options: RunOptions | None = None,
    *,
    resume: bool = False,
    evaluator: Evaluator | None = None,
    dry_run: bool = False,
    dist_ctx: DistContext | None = None,
    log: Callable[[str], None] = print,
    init_from: str | Path | None = None,
) -> TrainResult:
    """Train a GAN on `dataset` into `run_dir`, or continue the run already there.

    dataset: a prepared dataset folder, or uint8 (N, 3, S, S) images.
    options: device, amp, compile, threads, progress, channels_last and the cadence of logs, samples,
        checkpoints and evaluations (RunOptions; none of them changes the weights, so a resume may
        change any; config.json records the cadence).
    resume: insist on continuing (an error when run_dir has no checkpoint). Without it, a run folder
        with checkpoints is continued anyway; a config that differs in anything but the stopping point
        (state.RESUMABLE_FIELDS) is refused with the differences listed, and so is other data than the
        run records (state.check_dataset; options.allow_new_data: a note instead). A run with nothing
        left to do says so in one line (state.finished) and returns at once.
    evaluator: called every options.eval_every steps with a sample_fn; see `Evaluator`.
    init_from: a checkpoint, run folder or generator a new run starts from (training.state); its model
        config must be `model`. Ignored when run_dir already has a checkpoint: that run resumes.
    dist_ctx: the torchrun context (catgan.distributed.setup); None = a single process.
    Ctrl-C (SIGINT) finishes the current step, saves a checkpoint and raises KeyboardInterrupt; SIGTERM
    does the same and raises data.prepare.Terminated (a KeyboardInterrupt with its signum: exit 143).
    The run folder is locked while training (training.lock; under torchrun by rank 0): a second trainer
    is refused. Temp files that killed writers left in it are removed at the start.
    """
    opts = options or RunOptions()
    ctx = dist_ctx or DistContext()
    dev = resolve_device(opts.device)
    if evaluator is not None:  # what may choose best.pt: not Inception, not D's networks (metrics.selection)
        check_selection_evaluator(evaluator, model.discriminator)
    log = log if ctx.is_main else (lambda _msg: None)
    old_threads = torch.get_num_threads()
    if dev.type == "cpu":  # all cores by default; torchrun ranks on one machine share them
        torch.set_num_threads(opts.threads or max(1, cpu_count() // ctx.local_world))
    try:
        stop_flag = _StopFlag(abort_on_second=not ctx.enabled)
        with stop_flag.installed() as stop, _peer_errors(ctx, run_dir), _locked(run_dir, ctx, dry_run, log):
            source = Path(init_from) if init_from is not None else None
            run = _Run(dataset, model, cfg, Path(run_dir), opts, ctx, dev, log, stop, evaluator, source)
            return run.start(resume, dry_run)
    finally:
        torch.set_num_threads(old_threads)


class _Run:
    """One call of train(): the sections of a run as methods over its fixed inputs and its Progress."""

    def __init__(self, dataset, model, cfg, run_dir, opts, ctx, dev, log, stop, evaluator, init_from):
        self.model, self.cfg, self.run_dir, self.opts = model, cfg, run_dir, opts
        self.ctx, self.dev, self.log, self.stop, self.evaluator = ctx, dev, log, stop, evaluator
        self.init_from, self.dataset = init_from, dataset

    def start(self, resume: bool, dry_run: bool) -> TrainResult:
        cfg, ctx, dev = self.cfg, self.ctx, self.dev
        # ---- data: a uint8 (N, 3, S, S) tensor, read once
        if cfg.batch % ctx.world:
            raise CatganError(
                f"--batch {cfg.batch} is the global batch and must divide by the {ctx.world} processes; "
                f"try {max(ctx.world, cfg.batch // ctx.world * ctx.world)}"
            )
        data = load_images(self.dataset, self.model.image_size)
        if cfg.batch > (n := len(data)):
            raise CatganError(
                f"--batch {cfg.batch} is larger than the dataset ({n} images); use --batch <= {n}"
            )
        self.steps_per_epoch = len(data) // cfg.batch  # the last partial batch is dropped
        self.total = run_state.total_steps(cfg, self.steps_per_epoch)

        # ---- run folder: a new run, a resume, or a start from another run or a generator
        latest, saved = self._read_state(resume, data)
        if latest is not None and (done := run_state.finished(saved, self.total)):
            self.log(done)  # nothing to train: no bar, no files touched
            step, epoch = int(saved["step"]), int(saved["epoch"])
            return TrainResult(step, epoch, latest, math.nan, math.nan, resumed_from=step)
        self._describe(len(data))
        if dry_run:
            return TrainResult(0, 0, None, math.nan, math.nan)

        # ---- networks, the GAN step, the data order
        torch.manual_seed(cfg.seed)  # the weight init (and spectral norm's first vectors) come from here
        G, D = (
            build_generator(self.model.generator).to(dev),
            build_discriminator(self.model.discriminator).to(dev),
        )
        if ctx.enabled and cfg.sync_batchnorm:  # statistics over the global batch; never D's frozen part
            G, D = global_batchnorm(G), global_batchnorm(D, skip=D.frozen_modules())
        D.train()  # a family's frozen part goes to eval mode here (models.base.Discriminator.train)
        gan = GANStep(G, D, cfg, self.model.generator, dev, amp=self.opts.amp)
        data_gen = self.data_gen = torch.Generator().manual_seed(cfg.seed)
        p = run_state.restore(saved, gan, latest is not None, self.steps_per_epoch, data_gen)
        p.last_checkpoint = latest
        g_from = self._announce(p, latest)
        channels_last = dev.type == "cuda" if self.opts.channels_last is None else self.opts.channels_last
        if dev.type == "cuda":  # fixed shapes: cuDNN times its algorithms once and reuses them
            torch.backends.cudnn.benchmark = True
        ids = [dev.index] if dev.type == "cuda" else None
        gan.wrap(channels_last, self.opts.compile, ids, ctx.rank, ctx.world)

        # ---- train, reporting as it goes
        report = Report(self.run_dir / run_state.METRICS, self.total, min(p.step, self.total),
                        self.opts.progress, ctx, self.log)  # fmt: skip
        try:
            self._loop(gan, p, data.to(dev), data_gen, g_from, report)
        finally:
            report.close()
        return TrainResult(
            steps=p.step, epoch=p.epoch, checkpoint=p.last_checkpoint, loss_d=report.last[0],
            loss_g=report.last[1], best_fid=p.best_fid if math.isfinite(p.best_fid) else None,
            resumed_from=self.resumed_from,
        )  # fmt: skip

    def _read_state(self, resume: bool, data: torch.Tensor):
        """Rank 0 reads the checkpoint and checks it and the data; every rank gets the same state (or the
        same error). Sets self.identity, the data's (state.dataset_identity; rank 0's, else None)."""
        latest, saved, problem, self.identity = None, None, None, None
        if self.ctx.is_main:
            try:
                latest, saved = run_state.resume_state(
                    self.run_dir, self.model, self.cfg, resume, self.steps_per_epoch
                )
                self.identity = run_state.dataset_identity(self.dataset, data)
                if latest is not None and not run_state.finished(saved, self.total):
                    allow = self.opts.allow_new_data
                    if note := run_state.check_dataset(self.run_dir, self.identity, allow):
                        self.log(note)
                if saved is None and self.init_from is not None:
                    saved = run_state.init_state(self.init_from, self.model)
            except CatganError as err:
                problem = str(err)
        latest, saved, problem = broadcast_from_main((latest, saved, problem), self.ctx)
        if problem:
            raise CatganError(problem)
        return latest, saved

    def _describe(self, n: int) -> None:
        self.log(dumps(model=self.model, train=self.cfg))
        info = model_info(self.model.generator, self.model.discriminator)
        self.log(
            f"G {info['g_params'] / 1e6:.2f}M params, D {info['d_params'] / 1e6:.2f}M params, "
            f"{info['step_gflop']:.3f} GFLOP per image per step; {n} images, {self.steps_per_epoch} "
            f"steps/epoch, global batch {self.cfg.batch} ({self.cfg.batch // self.ctx.world} x "
            f"{self.ctx.world} processes) on {self.dev}"
        )
        if hint := amp_hint(info["d_frozen_params"], self.dev.type, self.opts.amp, cpu_has_native_bf16()):
            self.log(hint)

    def _announce(self, p: run_state.Progress, latest: Path | None) -> int:
        """Say where the run starts, write its config; returns the step from which G trains."""
        cfg, origin = self.cfg, p.origin
        if latest is None and origin is not None and p.step >= self.total:
            ends = f"{cfg.epochs} epochs of {self.steps_per_epoch} steps, " if cfg.epochs else ""
            more = " or more --epochs" if cfg.epochs else ""
            raise CatganError(
                f"--init-from: {origin_label(origin)} is at step {p.step}, and this run ends at step "
                f"{self.total} ({ends}--max-steps {cfg.max_steps}); give a later --max-steps{more}"
            )
        where = f"at step {p.step} (epoch {p.epoch}, batch {p.pos})"
        if latest is not None:
            self.log(f"resuming {latest} {where}")
        elif origin is not None:
            self.log(f"starting from {origin_label(origin)} {where}")
        g_from = (origin["step"] if origin is not None else 0) + cfg.d_warmup  # G is frozen before this step
        if p.step < g_from:
            self.log(f"training D alone (G frozen) until step {g_from} (--d-warmup {cfg.d_warmup})")
        if faces := first_faces(self.model, p.step):
            self.log(faces)
        self.resumed_from = p.step
        if self.ctx.is_main:
            extra = {"output": self.opts.output(), "dataset": self.identity}
            extra.update({"init_from": origin} if origin else {})
            ckpt.save_run_config(self.run_dir, self.model, cfg, **extra)
            (self.run_dir / SAMPLES).mkdir(parents=True, exist_ok=True)
            run_state.truncate_metrics(self.run_dir / run_state.METRICS, p.step)
        return g_from

    def _loop(self, gan: GANStep, p: run_state.Progress, data, data_gen, g_from: int, report: Report) -> None:
        cfg, ctx, opts, every = self.cfg, self.ctx, self.opts, self.opts.log_every
        self.t_start = time.perf_counter()
        fixed_z = latents_from_seeds(self.model.generator, range(N_SAMPLES)).to(self.dev)  # (64, z_dim)
        interrupted = False
        if p.step == 0:
            self._sample(gan, p, fixed_z, report)
        while p.step < self.total and not interrupted:
            # the epoch's permutation: redrawn from the epoch's start state, so a resume sees the same one
            data_gen.set_state(p.epoch_state)
            perm = epoch_permutation(len(data), data_gen)  # (N,), the same on every rank
            while p.pos < self.steps_per_epoch and p.step < self.total:
                lo = p.pos * cfg.batch
                idx = perm[lo + gan.lo : lo + gan.hi].to(self.dev, non_blocking=True)  # (b,)
                scale = run_state.lr_scale(p.step, self.total, cfg.lr_decay_steps)
                report.window.append(gan(data[idx], p.step, scale, train_g=p.step >= g_from))
                p.step, p.pos = p.step + 1, p.pos + 1
                report.bar.update(1)
                if len(report.window) >= every:
                    self._flush(report, p)
                if opts.sample_every and p.step % opts.sample_every == 0:
                    report.aside(lambda: self._sample(gan, p, fixed_z, report))
                if self.evaluator is not None and opts.eval_every and p.step % opts.eval_every == 0:
                    self._flush(report, p)
                    report.aside(lambda: self._evaluate(gan, p, report))
                if p.pos < self.steps_per_epoch and self._checkpoint_due(p):  # an epoch's end: below
                    self._flush(report, p)
                    report.aside(lambda: self._save(gan, p, report, f"every {opts.checkpoint_every} steps"))
                # under DDP the ranks agree on stopping at the log cadence: a per-step all-reduce would
                # sync the host with the GPU every step
                if (not ctx.enabled or p.step % every == 0) and any_rank(self.stop.requested, self.dev, ctx):
                    interrupted = True
                    break
            if p.pos == self.steps_per_epoch:
                # saved after the epoch is counted, so a resume draws the next epoch's order
                p.epoch, p.pos, p.epoch_state = p.epoch + 1, 0, data_gen.get_state()
                if self._checkpoint_due(p, epoch_end=True) and not interrupted:
                    self._flush(report, p)
                    report.aside(lambda: self._save(gan, p, report, f"epoch {p.epoch}"))
        # ---- the end: save, the last grid
        self._flush(report, p)
        if interrupted:
            self._save(gan, p, report, "interrupted")
            report.line(f"interrupted at step {p.step}; run the same command again to continue")
            raise self.stop.interrupt()
        if not self._grid_path(p.step).exists():
            # the last grid (unless the cadence just drew it), before the end save: a run killed between
            # the two redraws it on the rerun, which a finished run (its end checkpoint saved) never does
            self._sample(gan, p, fixed_z, report)
        if p.step != self.resumed_from or p.last_checkpoint is None:
            self._save(gan, p, report, "end")

    def _checkpoint_due(self, p: run_state.Progress, epoch_end: bool = False) -> bool:
        """Whether the cadence asks for a checkpoint now (the run's end saves one anyway): every
        checkpoint_every steps, or at the end of every checkpoint_every_epochs-th epoch (a run made when
        the cadence counted epochs keeps it, config.RunOptions)."""
        every, epochs = self.opts.checkpoint_every, self.opts.checkpoint_every_epochs
        due = bool(every) and p.step % every == 0
        due = due or (epoch_end and bool(epochs) and p.epoch % epochs == 0)
        return due and p.step < self.total

    def _flush(self, report: Report, p: run_state.Progress) -> None:
        fields = {
            "epoch": p.epoch + p.pos / self.steps_per_epoch,
            "lr_scale": run_state.lr_scale(p.step - 1, self.total, self.cfg.lr_decay_steps),
            "time": p.elapsed + time.perf_counter() - self.t_start,
        }
        report.flush(p.step, self.cfg.batch, fields, p.last_checkpoint)

    def _state(self, gan: GANStep, p: run_state.Progress) -> dict[str, Any]:
        if p.pos == self.steps_per_epoch:  # saved as the epoch ends: resume at the next one's start
            # the data generator has drawn this epoch's permutation: its state starts the next epoch
            p = dataclasses.replace(p, epoch=p.epoch + 1, pos=0, epoch_state=self.data_gen.get_state())
        return run_state.checkpoint_state(gan, p, self.model, self.cfg, self.ctx.world, self.t_start)

    def _save(self, gan: GANStep, p: run_state.Progress, report: Report, reason: str) -> None:
        if self.ctx.is_main:
            p.last_checkpoint = run_state.save(self.run_dir, self._state(gan, p), self.opts.keep_checkpoints)
            report.line(f"step {p.step}: saved {p.last_checkpoint} ({reason})")

    def _sample(self, gan: GANStep, p: run_state.Progress, fixed_z: torch.Tensor, report: Report) -> None:
        if self.ctx.is_main:
            grid = make_grid(gan.draw(fixed_z), nrow=8)
            path = save_image(grid, self._grid_path(p.step))
            report.line(f"step {p.step}: samples {path}")

    def _grid_path(self, step: int) -> Path:
        return self.run_dir / SAMPLES / f"step-{step:06d}.png"

    def _evaluate(self, gan: GANStep, p: run_state.Progress, report: Report) -> None:
        if not self.ctx.is_main:
            return
        sample_fn = lambda seeds: gan.draw(latents_from_seeds(self.model.generator, seeds).to(self.dev))  # noqa: E731
        numbers = (int, float)
        result = {k: float(v) for k, v in self.evaluator(sample_fn).items() if isinstance(v, numbers)}
        label = getattr(self.evaluator, "label", None)  # e.g. the space and faces of FIDEvaluator
        where = {"eval_on": label} if isinstance(label, str) else {}
        report.write({"step": p.step, "epoch": p.epoch + p.pos / self.steps_per_epoch, **result, **where})
        shown = {k: v for k, v in result.items() if k in ("fid", "kid_mean")} or result
        said = ", ".join(f"{k} {v:.4g}" for k, v in shown.items())
        report.line(f"step {p.step}: {said}" + (f" ({label})" if where else ""))
        if result.get("fid", math.inf) < p.best_fid:
            p.best_fid = result["fid"]
            ckpt.save_checkpoint(self.run_dir / ckpt.CHECKPOINT_DIR / run_state.BEST, self._state(gan, p))


def load_images(dataset: str | Path | torch.Tensor, image_size: int) -> torch.Tensor:
    """A prepared dataset folder (or an in-memory uint8 tensor) as uint8 (N, 3, S, S), checked."""
    if not isinstance(dataset, torch.Tensor):
        return load_dataset(dataset, image_size=image_size)
    if dataset.dtype != torch.uint8 or dataset.ndim != 4 or dataset.shape[1] != 3:
        raise CatganError(
            f"dataset tensor must be uint8 (N, 3, H, W), got {dataset.dtype} {tuple(dataset.shape)}"
        )
    if len(dataset) == 0:
        raise CatganError("dataset tensor is empty")
    if dataset.shape[2:] != (image_size, image_size):
        raise CatganError(
            f"dataset images are {dataset.shape[3]}x{dataset.shape[2]} but the model makes "
            f"{image_size}x{image_size}: prepare the data at {image_size} px or pick a matching preset"
        )
    return dataset


@contextlib.contextmanager
def _locked(run_dir: str | Path, ctx: DistContext, dry_run: bool, log: Callable[[str], None]) -> Iterator:
    """Rank 0 holds the run folder's lock (a dry run writes nothing: no lock), and removes the temp files
    of writers that were killed (.step-N.pt.tmp-PID and the like) once it holds it."""
    if not ctx.is_main or dry_run:
        yield
        return
    with run_lock(run_dir, "train", log):
        for folder in (Path(run_dir), Path(run_dir) / ckpt.CHECKPOINT_DIR, Path(run_dir) / SAMPLES):
            for p in remove_stale_temps(folder):
                log(f"note: removed {p}, left by a killed writer")
        set_aside_unreadable(run_dir, log)  # a damaged newest checkpoint: resume from the one before
        yield


class _StopFlag:
    """SIGINT or SIGTERM asks the loop to stop after the current step and save; a second one aborts at
    once. interrupt() is what the loop raises then: KeyboardInterrupt, or for SIGTERM Terminated (the CLI
    exits 128 + its signum, 143).

    Under torchrun a worker gets Ctrl-C twice (from the terminal and from the launcher passing it on),
    so there a second signal changes nothing: the ranks agree on the step to stop at, rank 0 saves.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, abort_on_second: bool = True) -> None:
        self.requested = False
        self.signum = signal.SIGINT
        self.abort_on_second = abort_on_second

    def interrupt(self) -> KeyboardInterrupt:
        from catgan.data.prepare import Terminated

        return Terminated(self.signum) if self.signum == signal.SIGTERM else KeyboardInterrupt()

    def _handler(self, signum, frame) -> None:
        if self.requested and self.abort_on_second:
            raise self.interrupt()
        self.requested, self.signum = True, signum

    @contextlib.contextmanager
    def installed(self) -> Iterator[_StopFlag]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # signals only reach the main thread; elsewhere Ctrl-C is the caller's business
            return
        previous = {s: signal.signal(s, self._handler) for s in self.SIGNALS}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


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
