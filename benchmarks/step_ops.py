"""How many operations does one catgan training step dispatch? On a GPU each is (about) one kernel launch,
and a small model's step costs what its launches cost, not what it computes.

    python benchmarks/step_ops.py --preset cats-128 thesis-128

`catgan.train.train()` itself runs 4 and then 8 steps (bf16 autocast, as `--amp`) on random uint8 images,
under a TorchDispatchMode that counts every operation reaching the kernels; the difference over the 4
extra steps is one step's count, without the setup, checkpoints and sample grids. The layers are the
preset's, their widths shrunk (--width) so that the math costs nothing: the count does not depend on it.
It runs on the CPU, where Adam without `fused` dispatches per-parameter operations that CUDA's default
foreach path would batch, so CPU counts of an unfused optimizer overstate a GPU's.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import sys
import tempfile
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from catgan.config import GANConfig, RunOptions, get_preset
from catgan.training.loop import train

# operations that launch no kernel: views, allocations, profiler markers
NO_KERNEL = {"detach", "view", "slice", "unsqueeze", "t", "transpose", "expand", "alias", "_unsafe_view"}
NO_KERNEL |= {"empty", "empty_like", "empty_strided", "_record_function_enter_new", "_record_function_exit"}


class _Count(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None) -> Any:
        self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def ops_per_step(preset_name: str, width: int) -> dict[str, float]:
    """{operation: dispatches per training step} for the preset's layers at base width `width`."""
    preset = get_preset(preset_name)
    g, d = preset.model.generator, preset.model.discriminator
    model = GANConfig(
        dataclasses.replace(g, g_base=width, max_channels=8 * width),
        dataclasses.replace(d, d_base=width, max_channels=8 * width),
    )
    s = model.image_size
    data = torch.randint(0, 256, (preset.train.batch * 4, 3, s, s), dtype=torch.uint8)  # (N, 3, S, S)
    counts = {}
    for steps in (4, 8):
        cfg = dataclasses.replace(preset.train, epochs=0, max_steps=steps)
        with tempfile.TemporaryDirectory() as tmp, _Count() as count:
            options = RunOptions(device="cpu", amp=True, progress=False, sample_every=0, checkpoint_every=0)
            train(data, model, cfg, f"{tmp}/run", options, log=lambda _: None)
        counts[steps] = count.ops
    return {k: (counts[8][k] - counts[4][k]) / 4 for k in counts[8] if counts[8][k] != counts[4][k]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", nargs="+", default=["cats-128", "thesis-128"])
    p.add_argument("--width", type=int, default=4, help="g_base = d_base (max_channels 8x)")
    p.add_argument("--top", type=int, default=12, help="how many operations to list")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    for name in args.preset:
        per = ops_per_step(name, args.width)
        launches = {k: v for k, v in per.items() if k not in NO_KERNEL}
        total, kernels = sum(per.values()), sum(launches.values())
        print(f"{name}: {total:.0f} operations per step, {kernels:.0f} of them kernels")
        for op, n in sorted(launches.items(), key=lambda kv: -kv[1])[: args.top]:
            print(f"  {n:6.1f}  {op}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
