"""Training a learned 2x upsampler, and joining it to a generator as one cascade model file.

    train_upsampler("data/faces", UpsamplerConfig(image_size=128), "runs/up128")
    export_cascade("cats-64", "runs/up128", "cats-128.safetensors", fp16=True)

The upsampler learns on pairs of real faces from one `catgan prepare` output: each face's image_size / 2
picture (the input) and its image_size picture (the target), matched by file name. One step: a patch
discriminator step (hinge loss, real faces against upsampled ones), then an upsampler step (L1 to the real
face + adv_weight x the hinge generator loss). The batch of a step is drawn from a generator reseeded
from (seed, step), so a run resumes exactly with no random state to save. A run folder holds
`config.json`, `checkpoints/step-*.pt`, `metrics.jsonl` and `samples/` (rows: bicubic, learned, real).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from catgan import checkpoint as ckpt
from catgan.config import UpsamplerConfig, diff, from_dict, to_dict
from catgan.data.dataset import image_files, load_dataset, resolve, to_float, to_uint8
from catgan.errors import CatganError
from catgan.generate import make_grid, read_generator, save_image
from catgan.models.upsampler import PatchDiscriminator, Upsampler
from catgan.runtime import resolve_device

METRICS = "metrics.jsonl"
SAMPLES = "samples"
N_SHOWN = 8  # faces in a sample grid: the first 8 pairs of the dataset
STATE_KEYS = ("U", "D", "opt_u", "opt_d", "step", "upsampler_config")
# may change when a run resumes (adv_weight: ESRGAN's two stages, L1 alone first, then adversarial);
# anything else would change what the saved weights mean, so a resume that changes it is refused
_RESUMABLE = frozenset({"steps", "sample_every", "checkpoint_every", "keep_checkpoints", "adv_weight"})


@dataclass(frozen=True)
class UpsamplerResult:
    steps: int
    checkpoint: Path | None
    l1: float  # mean of the last logging window, on [-1, 1] pixels
    resumed_from: int = 0


def load_pairs(data: str | Path, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs uint8 (N, 3, S/2, S/2), targets uint8 (N, 3, S, S)): every image_size face of the prepared
    folder `data` (holding cats-S/2 and cats-S) with the image_size / 2 picture of the same face."""
    high_dir, low_dir = resolve(data, image_size), resolve(data, image_size // 2)
    if high_dir == low_dir:
        raise CatganError(
            f"{data}: give the folder that holds both cats-{image_size // 2} and cats-{image_size}"
        )
    low_names = {f.name: i for i, f in enumerate(image_files(low_dir))}
    high_names = [f.name for f in image_files(high_dir)]
    missing = [n for n in high_names if n not in low_names]
    if missing:
        raise CatganError(
            f"{len(missing)} face(s) of {high_dir} are not in {low_dir} (e.g. {missing[0]}); prepare both "
            f"sizes in one run: catgan prepare SOURCE --out DIR --sizes {image_size // 2},{image_size}"
        )
    low = load_dataset(low_dir, image_size // 2)  # (M, 3, S/2, S/2), sorted by name
    high = load_dataset(high_dir, image_size)  # (N, 3, S, S)
    return low[torch.tensor([low_names[n] for n in high_names])], high


def _read_state(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, foreign, not a torch file
        first = (str(err).strip().splitlines() or ["(no message)"])[0]
        raise CatganError(f"cannot read upsampler checkpoint {path}: {type(err).__name__}: {first}") from err
    if not isinstance(state, dict) or any(k not in state for k in STATE_KEYS):
        raise CatganError(
            f"{path} is not a catgan upsampler checkpoint (`catgan train-upsampler` writes those)"
        )
    return state


def latest_state(run: str | Path) -> tuple[Path, dict[str, Any]]:
    """(path, state) of an upsampler run's latest checkpoint, or of a checkpoint file given directly."""
    run = Path(run)
    if run.is_file():
        return run, _read_state(run)
    if not run.is_dir():
        raise CatganError(f"upsampler run not found: {run}")
    path = ckpt.latest_checkpoint(run)
    if path is None:
        raise CatganError(f"{run} has no upsampler checkpoints yet; train it with `catgan train-upsampler`")
    return path, _read_state(path)


def _saved_config(state: dict[str, Any], where: Path) -> UpsamplerConfig:
    try:
        return from_dict(UpsamplerConfig, dict(state["upsampler_config"]))
    except (TypeError, ValueError) as err:
        raise CatganError(f"{where}: unreadable upsampler config: {err}") from err


def train_upsampler(
    data: str | Path,
    cfg: UpsamplerConfig,
    run_dir: str | Path,
    device: str = "auto",
    amp: bool = False,
    threads: int | None = None,
    log_every: int = 50,
    log: Callable[[str], None] = print,
) -> UpsamplerResult:
    """Train (or continue) an upsampler into run_dir. A run folder with checkpoints resumes when its saved
    config differs at most in `steps`, `adv_weight` and the output cadence (_RESUMABLE).
    amp: bf16 autocast. Ctrl-C finishes the step, saves a checkpoint and raises KeyboardInterrupt."""
    from catgan.train import _StopFlag  # the trainer's Ctrl-C handling: one flag, saved on the way out

    dev, run_dir = resolve_device(device), Path(run_dir)
    old_threads = torch.get_num_threads()
    if dev.type == "cpu" and threads:
        torch.set_num_threads(threads)
    try:
        with _StopFlag().installed() as stop:
            return _train(data, cfg, run_dir, dev, amp, max(1, log_every), log, lambda: stop.requested)
    finally:
        torch.set_num_threads(old_threads)


def _train(data, cfg: UpsamplerConfig, run_dir: Path, dev, amp, log_every, log, stopping) -> UpsamplerResult:
    low, high = load_pairs(data, cfg.image_size)  # (N, 3, S/2, S/2), (N, 3, S, S) uint8
    n = len(high)
    if cfg.batch > n:
        raise CatganError(f"--batch {cfg.batch} is larger than the {n} pairs in {data}")
    torch.manual_seed(cfg.seed)
    U = Upsampler(cfg.channels, cfg.blocks).to(dev)
    D = PatchDiscriminator(cfg.d_channels, cfg.d_layers).to(dev)
    opt_u = torch.optim.Adam(U.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
    step, elapsed = 0, 0.0
    stages = [{"from_step": 0, "adv_weight": cfg.adv_weight}]  # the adversarial weight over the run
    latest = ckpt.latest_checkpoint(run_dir) if run_dir.is_dir() else None
    if latest is not None:
        state = _read_state(latest)
        saved = _saved_config(state, latest)
        changed = [d for d in diff(saved, cfg) if d.split(":")[0] not in _RESUMABLE]
        if changed:
            raise CatganError(
                f"{run_dir} was trained with another config ({'; '.join(changed)}); use a new --run"
            )
        U.load_state_dict(state["U"])
        D.load_state_dict(state["D"])
        opt_u.load_state_dict(state["opt_u"])
        opt_d.load_state_dict(state["opt_d"])
        step, elapsed = int(state["step"]), float(state.get("elapsed", 0.0))
        stages = list(state.get("stages") or [{"from_step": 0, "adv_weight": saved.adv_weight}])
        log(f"resuming {latest} at step {step}")
    if stages[-1]["adv_weight"] != cfg.adv_weight:
        stages.append({"from_step": step, "adv_weight": cfg.adv_weight})
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt.write_json(run_dir / "config.json", {"upsampler": to_dict(cfg), "data": str(data)})
    (run_dir / SAMPLES).mkdir(exist_ok=True)
    n_u, n_d = (sum(p.numel() for p in m.parameters()) for m in (U, D))
    log(
        f"upsampler {n_u / 1e3:.0f}k params, D {n_d / 1e3:.0f}k; "
        f"{n} pairs {cfg.image_size // 2} -> {cfg.image_size} px on {dev}"
    )
    low, high = low.to(dev), high.to(dev)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp)
    gen = torch.Generator(device=dev)

    def one_step() -> torch.Tensor:
        """[loss_d, adversarial loss, L1] of one D step and one upsampler step."""
        gen.manual_seed(cfg.seed * 1_000_003 + step)
        idx = torch.randint(0, n, (cfg.batch,), generator=gen, device=dev)  # (B,)
        x, y = to_float(low[idx]), to_float(high[idx])  # (B, 3, S/2, S/2), (B, 3, S, S) in [-1, 1]
        if cfg.flip:
            flip = (torch.rand(cfg.batch, generator=gen, device=dev) < 0.5)[:, None, None, None]
            x, y = torch.where(flip, x.flip(3), x), torch.where(flip, y.flip(3), y)
        with autocast:
            fake = U(x)  # (B, 3, S, S)
            loss_d = F.relu(1 - D(y).float()).mean() + F.relu(1 + D(fake.detach()).float()).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        D.requires_grad_(False)
        with autocast:
            adv = -D(fake).float().mean()
        l1 = (fake.float() - y).abs().mean()
        opt_u.zero_grad(set_to_none=True)
        (l1 + cfg.adv_weight * adv).backward()
        opt_u.step()
        D.requires_grad_(True)
        return torch.stack([loss_d.detach(), adv.detach(), l1.detach()])

    def save(reason: str) -> Path:
        state = {"U": U.state_dict(), "D": D.state_dict(), "opt_u": opt_u.state_dict()}
        state |= {
            "opt_d": opt_d.state_dict(),
            "step": step,
            "upsampler_config": to_dict(cfg),
            "stages": stages,
        }
        state["elapsed"] = elapsed + time.perf_counter() - t0
        path = ckpt.save_checkpoint(ckpt.checkpoint_path(run_dir, step), state)
        ckpt.prune_checkpoints(run_dir, cfg.keep_checkpoints)
        log(f"step {step}: saved {path} ({reason})")
        return path

    @torch.no_grad()
    def sample() -> None:
        x = to_float(low[:N_SHOWN])  # (8, 3, S/2, S/2)
        U.eval()
        rows = [
            F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False),
            U(x),
            to_float(high[:N_SHOWN]),
        ]
        U.train()
        grid = make_grid(to_uint8(torch.cat(rows)).cpu(), nrow=N_SHOWN)
        save_image(grid, run_dir / SAMPLES / f"step-{step:06d}.png")

    resumed_from, last_path, window, last_l1 = step, latest, [], math.nan
    t0 = tw = time.perf_counter()
    with open(run_dir / METRICS, "a") as metrics:
        while step < cfg.steps:
            window.append(one_step())
            step += 1
            if len(window) == log_every or step == cfg.steps:
                loss_d, adv, l1 = torch.stack(window).mean(0).tolist()
                if not all(map(math.isfinite, (loss_d, adv, l1))):
                    raise CatganError(
                        f"non-finite loss at step {step}; the last good checkpoint is {last_path}"
                    )
                now = time.perf_counter()
                img_s = len(window) * cfg.batch / (now - tw)
                record = {"step": step, "loss_d": loss_d, "loss_adv": adv, "l1": l1, "img/s": img_s}
                record["time"] = elapsed + now - t0
                metrics.write(json.dumps(record) + "\n")
                metrics.flush()
                log(f"step {step}: d {loss_d:.3f} adv {adv:.3f} l1 {l1:.4f} {record['img/s']:.0f} img/s")
                window, tw, last_l1 = [], now, l1
            if cfg.sample_every and step % cfg.sample_every == 0:
                sample()
            if stopping():
                last_path = save("interrupted")
                log(f"interrupted at step {step}; run the same command again to continue")
                raise KeyboardInterrupt
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps:
                last_path = save("periodic")
        if step != resumed_from or last_path is None:
            last_path = save("end")
            if not (cfg.sample_every and step % cfg.sample_every == 0):
                sample()
    return UpsamplerResult(step, last_path, last_l1, resumed_from)


def export_cascade(base: str | Path, upsampler_run: str | Path, out: str | Path, fp16: bool = False) -> Path:
    """Write one generator file: the generator `base` (an exported .safetensors or a bundled name) drawing
    at S/2, followed by the upsampler of `upsampler_run` (a run folder or one of its checkpoints)."""
    base_sd, base_cfg, base_prov = read_generator(base)
    up_path, state = latest_state(upsampler_run)
    up_cfg = _saved_config(state, up_path)
    if base_cfg.upsampler:
        raise CatganError(
            f"--base {base} is already a cascade ({base_cfg.image_size} px); give a plain generator"
        )
    if base_cfg.image_size * 2 != up_cfg.image_size:
        raise CatganError(
            f"--base {base} draws {base_cfg.image_size} px but the upsampler of {up_path} reads "
            f"{up_cfg.image_size // 2} px and makes {up_cfg.image_size} px"
        )
    model = dataclasses.replace(
        base_cfg, image_size=up_cfg.image_size, upsampler=up_cfg.channels, upsampler_blocks=up_cfg.blocks
    )
    tensors = {f"base.{k}": v for k, v in base_sd.items()} | {f"up.{k}": v for k, v in state["U"].items()}
    provenance = {
        "step": base_prov.get("step"),
        "base": {"source": str(base), "sha256": ckpt.generator_hash(base_sd, base_cfg), **base_prov},
        "upsampler": {
            "checkpoint": str(up_path),
            "step": int(state["step"]),
            "config": to_dict(up_cfg),
            "stages": state.get("stages"),
            "elapsed": state.get("elapsed"),
        },
    }
    return ckpt.export_generator(tensors, model, out, dtype=torch.float16 if fp16 else None, **provenance)
