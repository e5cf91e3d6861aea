"""The loss plot of a run (`loss.png`), drawn from its metrics.jsonl.

Uses matplotlib's object API with the Agg canvas directly: no pyplot, no global backend switch, so
importing or calling this never changes the state of a program that also uses matplotlib.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from catgan.checkpoint import atomic_write


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl; a torn last line (a killed writer) is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def plot_losses(records: list[dict[str, Any]], out: str | Path, title: str = "") -> Path:
    """Losses, D(x) / D(G(z)) and (when evaluated) FID against the step, as one PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    train = [r for r in records if "loss_d" in r]
    evals = [r for r in records if "fid" in r]
    panels = 3 if evals else 2
    fig = Figure(figsize=(8, 2.6 * panels), tight_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(panels, 1, sharex=True)
    steps = [r["step"] for r in train]
    axes[0].plot(steps, [r["loss_d"] for r in train], label="D loss", lw=1)
    axes[0].plot(steps, [r["loss_g"] for r in train], label="G loss", lw=1)
    axes[0].set_ylabel("loss")
    axes[1].plot(steps, [r["d_real"] for r in train], label="D(x)", lw=1)
    axes[1].plot(steps, [r["d_fake"] for r in train], label="D(G(z))", lw=1)
    axes[1].set_ylabel("mean sigmoid")
    axes[1].set_ylim(0, 1)
    if evals:
        axes[2].plot([r["step"] for r in evals], [r["fid"] for r in evals], "o-", label="FID", lw=1)
        axes[2].set_ylabel("FID")
    for ax in axes:
        ax.legend(loc="upper right", fontsize="small")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("step")
    if title:  # a folder name that is not UTF-8 holds surrogates, which no font can draw
        axes[0].set_title(title.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))
    return atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=100), "loss plot")
