"""Train the self-supervised face encoder (SimCLR) that `catgan.metrics.selfsup` ships, on the CPU.

Trains only on faces outside the held-out share (`catgan.data.split.is_holdout(source, 0.1)` is False for
every face used), never with ImageNet labels or weights. Writes, each atomically: the encoder weights and
their .json (sha256, config, the run's facts), a checkpoint every --save-every steps (a rerun resumes
from it), and a training log (loss per step, wall and CPU seconds, machine) as JSON lines.

    OMP_NUM_THREADS=2 nice -n 5 python benchmarks/train_selfsup.py --data /root/data/cats-64 \\
        --run /root/work-C/selfsup --minutes 60 \\
        --out src/catgan/weights/features/selfsup-simclr-64.safetensors
    python benchmarks/train_selfsup.py --data DIR/cats-64 --run /tmp/pilot --steps 5 --batch 32   # a pilot
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from catgan.checkpoint import atomic_write
from catgan.errors import CatganError
from catgan.metrics.selfsup import Encoder, EncoderConfig, normalise, save_weights

HOLDOUT_FRACTION = 0.1


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000  # the cosine schedule's length; --minutes may stop earlier (and then says so)
    batch: int = 256  # pairs per step: 2 x batch views, 2 x batch - 2 negatives for each
    lr: float = 2e-3
    weight_decay: float = 1e-4
    temperature: float = 0.2
    warmup: int = 50
    crop_scale: tuple[float, float] = (0.35, 1.0)  # share of the face's area a view keeps
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # its aspect ratio (before resizing back to square)
    jitter: float = 0.3  # brightness / contrast / saturation strength, applied with probability 0.8
    gray_p: float = 0.2
    bf16: bool = False  # CPU autocast where the CPU has native bf16 (AMX / avx512_bf16)
    # A wall-time budget (0 = none): the cosine runs on max(step share, time share), so on a CPU shared
    # with other work the learning rate still reaches zero when the budget ends, however many steps fit.
    budget_minutes: float = 0.0
    seed: int = 0


def split_faces(data: Path, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A prepared dataset's faces as (training, held-out) uint8 (N, 3, S, S), by `is_holdout(source, 0.1)`."""
    from catgan.data.dataset import load_dataset, resolve
    from catgan.data.split import is_holdout

    folder = resolve(data, image_size)
    images = load_dataset(folder, image_size)
    records = json.loads((folder / "dataset.json").read_text())["images"]
    by_file = {str(r["file"]): str(r.get("source", r["file"])) for r in records}
    held = torch.tensor([is_holdout(by_file[f], HOLDOUT_FRACTION) for f in sorted(by_file)])  # load order
    return images[~held], images[held]


def training_faces(data: Path, image_size: int) -> tuple[torch.Tensor, int]:
    """The dataset's faces outside the held-out share (uint8 (N, 3, S, S)), and how many were left out."""
    train, held = split_faces(data, image_size)
    return train, len(held)


def random_views(x: torch.Tensor, cfg: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    """float (B, 3, S, S) in [0, 1] -> one augmented view per image, normalised (B, 3, S, S).

    Crop + flip + colour only. No blur and no noise: the metric must see those, so the encoder must not
    learn to ignore them.
    """
    b = len(x)
    area = torch.empty(b).uniform_(*cfg.crop_scale, generator=gen)
    log_r = torch.empty(b).uniform_(*(math.log(r) for r in cfg.crop_ratio), generator=gen)
    sx, sy = (area * log_r.exp()).sqrt().clamp(max=1), (area / log_r.exp()).sqrt().clamp(max=1)
    tx, ty = (
        (torch.rand(b, generator=gen) * 2 - 1) * (1 - sx),
        (torch.rand(b, generator=gen) * 2 - 1) * (1 - sy),
    )
    flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx * flip, tx, sy, ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # (B, 3, S, S): reflection, so a crop at the border does not bring black edges the metric must see
    v = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    on = (torch.rand(b, 1, 1, 1, generator=gen) < 0.8).float()
    j = lambda: 1 + on * (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * cfg.jitter  # noqa: E731
    gray = v.mean(dim=1, keepdim=True)  # (B, 1, S, S)
    v = v * j()  # brightness
    v = (v - v.mean(dim=(1, 2, 3), keepdim=True)) * j() + v.mean(dim=(1, 2, 3), keepdim=True)  # contrast
    v = (v - gray) * j() + gray  # saturation
    to_gray = (torch.rand(b, 1, 1, 1, generator=gen) < cfg.gray_p).float()
    v = to_gray * v.mean(dim=1, keepdim=True) + (1 - to_gray) * v
    return normalise(v.clamp(0, 1))


def nt_xent(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss. z: (2B, D), rows i and i+B are two views of one image; each must find its partner."""
    z = F.normalize(z.float(), dim=1)
    sim = z @ z.t() / temperature  # (2B, 2B)
    n = len(z) // 2
    sim.fill_diagonal_(float("-inf"))  # an image is not its own positive
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return F.cross_entropy(sim, target)


def lr_at(step: int, cfg: TrainConfig, minutes_done: float = 0.0) -> float:
    """Linear warm-up, then a cosine to zero over the steps or the time budget, whichever ends first."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    done = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    if cfg.budget_minutes > 0:
        done = max(done, min(1.0, minutes_done / cfg.budget_minutes))
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * done))


def train_step(
    model: Encoder, opt: torch.optim.Optimizer, images: torch.Tensor, cfg: TrainConfig, gen: torch.Generator
) -> float:
    """One SimCLR step on uint8 (B, 3, S, S) images; returns the loss."""
    x = images.float() / 255.0  # (B, 3, S, S)
    views = torch.cat([random_views(x, cfg, gen), random_views(x, cfg, gen)])  # (2B, 3, S, S)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
        z = model.project(model(views))  # (2B, proj_dim)
    loss = nt_xent(z, cfg.temperature)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def new_state(enc: EncoderConfig, cfg: TrainConfig) -> dict:
    torch.manual_seed(cfg.seed)
    model = Encoder(enc)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    return {"model": model, "opt": opt, "gen": gen, "step": 0, "cpu_s": 0.0, "wall_s": 0.0}


def save_state(path: Path, state: dict, enc: EncoderConfig, cfg: TrainConfig) -> None:
    blob = {
        "model": state["model"].state_dict(),
        "opt": state["opt"].state_dict(),
        "gen": state["gen"].get_state(),
        "step": state["step"],
        "cpu_s": state["cpu_s"],
        "wall_s": state["wall_s"],
        "configs": json.dumps([asdict(enc), asdict(cfg)]),
    }
    atomic_write(path, lambda tmp: torch.save(blob, tmp), "checkpoint")


def resume_state(path: Path, enc: EncoderConfig, cfg: TrainConfig) -> dict:
    """A fresh state, or the checkpoint at `path` when it exists (it must be of the same configs)."""
    state = new_state(enc, cfg)
    if not path.is_file():
        return state
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if blob["configs"] != json.dumps([asdict(enc), asdict(cfg)]):
        raise CatganError(
            f"{path} was written with other settings; use another --run folder or the same options"
        )
    state["model"].load_state_dict(blob["model"])
    state["opt"].load_state_dict(blob["opt"])
    state["gen"].set_state(blob["gen"])
    state.update(step=blob["step"], cpu_s=blob["cpu_s"], wall_s=blob["wall_s"])
    return state


def train(
    images: torch.Tensor,
    enc: EncoderConfig,
    cfg: TrainConfig,
    run: Path,
    minutes: float = math.inf,
    save_every: int = 50,
    log_every: int = 1,
    until: int | None = None,
) -> dict:
    """Train (resuming from run/state.pt), appending {step, loss, lr, wall_s, cpu_s} lines to run/log.jsonl.

    Stops at cfg.steps, after `minutes` of wall time in all, or at step `until` (then a rerun resumes).
    """
    run.mkdir(parents=True, exist_ok=True)
    ckpt, log_path = run / "state.pt", run / "log.jsonl"
    state = resume_state(ckpt, enc, cfg)
    model, opt, gen = state["model"].train(), state["opt"], state["gen"]
    wall0, cpu0, started = (
        time.perf_counter() - state["wall_s"],
        time.process_time() - state["cpu_s"],
        state["step"],
    )
    with open(log_path, "a") as log:
        end = cfg.steps if until is None else min(until, cfg.steps)
        limit = min(minutes, cfg.budget_minutes or math.inf)
        while state["step"] < end and (time.perf_counter() - wall0) / 60 < limit:
            for group in opt.param_groups:
                group["lr"] = lr_at(state["step"], cfg, (time.perf_counter() - wall0) / 60)
            idx = torch.randint(len(images), (cfg.batch,), generator=gen)
            loss = train_step(model, opt, images[idx], cfg, gen)
            state["step"] += 1
            state["wall_s"], state["cpu_s"] = time.perf_counter() - wall0, time.process_time() - cpu0
            if state["step"] % log_every == 0 or state["step"] == cfg.steps:
                row = {"step": state["step"], "loss": round(loss, 5), "lr": opt.param_groups[0]["lr"]}
                row.update(wall_s=round(state["wall_s"], 2), cpu_s=round(state["cpu_s"], 2))
                log.write(json.dumps(row) + "\n")
                log.flush()
            if state["step"] % save_every == 0:
                save_state(ckpt, state, enc, cfg)
    save_state(ckpt, state, enc, cfg)
    state["resumed_from"] = started
    return state


def plot_log(log: Path, out: Path) -> None:
    """loss and learning rate per step from log.jsonl, as a small PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    fig = Figure(figsize=(7, 3), dpi=80)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=0.6, label="NT-Xent loss")
    ax.set_xlabel("step (256 faces, 512 views)")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    lr = ax.twinx()
    lr.plot([r["step"] for r in rows], [r["lr"] for r in rows], color="tab:orange", lw=1, label="lr")
    lr.set_ylabel("learning rate")
    mins = rows[-1]["wall_s"] / 60
    ax.set_title(f"SimCLR on the training faces: {rows[-1]['step']} steps, {mins:.0f} min wall", fontsize=9)
    fig.tight_layout()
    fig.savefig(out)


def machine() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in _cpuinfo() if ln.startswith("model name")), "unknown")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="a prepared dataset (cats-64)")
    p.add_argument("--run", type=Path, required=True, help="folder for state.pt and log.jsonl (resumes)")
    p.add_argument("--out", type=Path, help="where to write the encoder .safetensors (+ .json)")
    p.add_argument("--steps", type=int, default=TrainConfig.steps)
    p.add_argument("--batch", type=int, default=TrainConfig.batch)
    p.add_argument(
        "--minutes", type=float, default=0.0, help="wall-time budget: the schedule ends there (0 = none)"
    )
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (CPUs with native bf16)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    enc = EncoderConfig()
    cfg = TrainConfig(steps=args.steps, batch=args.batch, bf16=args.bf16, budget_minutes=args.minutes)
    try:
        images, held_out = training_faces(args.data, enc.input_size)
    except CatganError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    x = images.float() / 255
    print(
        f"{len(images)} training faces ({held_out} held out); channel mean {x.mean((0, 2, 3)).tolist()} "
        f"std {x.std((0, 2, 3)).tolist()}",
        flush=True,
    )
    state = train(images, enc, cfg, args.run)
    facts = {
        "method": "SimCLR (NT-Xent), crop/flip/colour views, features before the projection head",
        "train_config": asdict(cfg),
        "faces": len(images),
        "held_out": held_out,
        "holdout_fraction": HOLDOUT_FRACTION,
        "data": str(args.data),
        "steps_done": state["step"],
        "wall_s": round(state["wall_s"], 1),
        "cpu_s": round(state["cpu_s"], 1),
        "machine": machine(),
        "command": "python benchmarks/train_selfsup.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    print(json.dumps(facts, indent=1), flush=True)
    if args.out is not None:
        save_weights(state["model"], args.out, facts)
        plot_log(args.run / "log.jsonl", args.run / "loss.png")
        print(f"wrote {args.out}, {args.out.with_suffix('.json')} and {args.run / 'loss.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
