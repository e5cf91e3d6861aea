"""What a run reports while it trains: metrics.jsonl, the progress bar and log lines.

Per-step values stay on the device and are averaged once per window of log_every steps (each window is one
host sync); the same flush stops the run on the first non-finite loss, before anything is saved.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from catgan.config import GANConfig, presets
from catgan.distributed import DistContext, all_mean
from catgan.errors import CatganError

# When the sample grids of a new run of a preset first show cat faces, as measured: preset -> (the step,
# what was seen where). Steps carry over between machines, minutes do not: those given are the 2-core
# CPU's of the runs, with --amp. None: no faces yet at the last step looked at.
FIRST_FACES: dict[str, tuple[int | None, str]] = {
    "cats-64": (
        1_000,
        "faint faces at step 1,000, plainly cats by 4,000 (about 8 and 30 min at 137 img/s; "
        "docs/model-cards/cats-64.md, Training progression)",
    ),
    "cats-128-lite": (
        3_000,
        "plainly cats by step 3,000 (about 50 min; docs/log/2026-11.md, A 128 px model a CPU can train)",
    ),
    "cats-128": (
        3_288,
        "none at step 1,136, blurred but plainly cats at 3,288 (29 and 80 min; docs/log/2026-11.md, "
        "Ablation at 128 px)",
    ),
    "thesis-128": (
        None,
        "still cat-coloured noise at step 1,125 (80 min; docs/log/2026-11.md, Ablation at 128 px)",
    ),
    "projected-64": (
        1_000,
        "ghostly faces at step 500, plainly cats by 1,000 (about 4 and 9 min at 125 img/s; "
        "docs/log/2026-12.md, projected-64 on the CPU)",
    ),
    "projected-128-small": (
        500,
        "cat faces of one grey-brown hue at step 250, varied cats by 500 (about 18 and 36 min at 15 img/s "
        "on one thread; docs/log/2026-12.md, FastGAN against the projected D)",
    ),
}


def first_faces(model: GANConfig, step: int = 0) -> str | None:
    """The line that says, at the start of a run at `step`, roughly when its samples first show faces:
    for a model that is a measured preset's (FIRST_FACES; dcgan-64's is cats-64's), not yet past that
    step; else None."""
    name = next((n for n, p in presets().items() if p.model == model and n in FIRST_FACES), None)
    if name is None:
        return None
    when, seen = FIRST_FACES[name]
    if when is not None and step >= when:
        return None
    return f"when cats appear, as measured for {name} (a 2-core CPU, --amp): {seen}; grids before are noise"


def amp_hint(frozen_params: int, device_type: str, amp: bool, native_bf16: bool) -> str | None:
    """The line that says, at the start of a CPU run, what --amp does there (measured: docs/benchmarks.md):
    with --amp on a CPU without native bf16, that it is slow; without it, where a D has a frozen network
    and the CPU has native bf16, what it would bring; else None."""
    if device_type != "cpu":
        return None
    if amp and not native_bf16:
        return (
            "note: --amp on a CPU without native bf16 (AVX-512 BF16, AMX) emulates bf16: projected-128-small "
            "trained 14x slower with it on a 2-core AVX2 EPYC (docs/benchmarks.md); leave --amp out here"
        )
    if not frozen_params or amp or not native_bf16:
        return None
    return (
        "hint: this D has a frozen network, and this CPU has native bf16: --amp trained the projected "
        "presets 1.3-2.0x faster on a 2-core Xeon (docs/benchmarks.md, projected discriminator)"
    )


class Report:
    def __init__(
        self, metrics: Path, total: int, initial: int, progress: bool, ctx: DistContext, log: Callable
    ) -> None:
        from tqdm.auto import tqdm

        self.ctx, self.progress, self.log = ctx, progress, log
        self.file = open(metrics, "a") if ctx.is_main else None  # noqa: SIM115 (closed by close())
        disable = not progress or not ctx.is_main
        self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, disable=disable)
        self.window: list[torch.Tensor] = []
        self.window_t0 = time.perf_counter()
        self.last = (math.nan, math.nan)  # the last window's mean losses

    def line(self, msg: str) -> None:
        if self.ctx.is_main:
            self.bar.write(msg) if self.progress else self.log(msg)

    def write(self, record: dict[str, Any]) -> None:
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def aside(self, work: Callable[[], Any]) -> Any:
        """Run work that is not training (samples, FID, checkpoints), keeping its time out of img/s."""
        t0 = time.perf_counter()
        try:
            return work()
        finally:
            self.window_t0 += time.perf_counter() - t0

    def flush(self, step: int, batch: int, fields: dict[str, float], last_checkpoint: Path | None) -> None:
        """Log the window's means (with `fields`: epoch, lr_scale, time); stop on a non-finite loss."""
        if not self.window:
            return
        values = all_mean(torch.stack(self.window), self.ctx).tolist()  # (k, 4): the same on every rank
        first_step = step - len(self.window) + 1
        for i, v in enumerate(values):
            if not all(math.isfinite(x) for x in v[:2]):
                keep = (
                    f"the last good checkpoint is {last_checkpoint}"
                    if last_checkpoint
                    else "no checkpoint was written"
                )
                raise CatganError(
                    f"non-finite loss at step {first_step + i} (loss_d={v[0]}, loss_g={v[1]}); "
                    f"stopped without saving; {keep}; try lower --lr-d / --lr-g or without --amp"
                )
        now = time.perf_counter()
        mean = [sum(col) / len(values) for col in zip(*values, strict=True)]
        img_s = len(self.window) * batch / max(now - self.window_t0, 1e-9)
        self.last = (mean[0], mean[1])
        names = ("loss_d", "loss_g", "d_real", "d_fake")
        self.write({"step": step, "epoch": fields["epoch"], **dict(zip(names, mean, strict=True)),
                    "img/s": img_s, "lr_scale": fields["lr_scale"], "time": fields["time"]})  # fmt: skip
        self.bar.set_postfix(d=f"{mean[0]:.3f}", g=f"{mean[1]:.3f}", img_s=f"{img_s:.0f}", refresh=False)
        self.window, self.window_t0 = [], now

    def close(self) -> None:
        self.bar.close()
        if self.file is not None:
            self.file.close()
