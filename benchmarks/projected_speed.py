"""How fast is the projected discriminator's frozen network on this machine, and how much of a step is it?

    python benchmarks/projected_speed.py --batch 32 --sizes 64,128 --threads 2

For each input size: the frozen EfficientNet-Lite0 stages' forward (no grad) and forward + backward to the
input (what the G phase pays), in fp32 and bf16 autocast, contiguous and channels_last; then one whole
training step (FastGAN G + projected D, hinge, DiffAugment, Adam; both phases) and the share of it spent in
the frozen network: per step it runs forward three times (real and fake in the D phase, fake in the G
phase), the D phase needs no backward through it (nothing upstream trains), the G phase one backward to
its input. Repeats are interleaved across variants so a busy machine slows them alike; medians printed,
then the ratios side by side. On a shared machine the figures are a floor.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from catgan.augment import diff_augment
from catgan.backbones import efficientnet_lite0
from catgan.losses import d_loss, g_loss
from catgan.models.base import sample_latents
from catgan.models.fastgan import FastGANConfig, Generator
from catgan.models.projected import Discriminator, ProjectedDConfig

VARIANTS = [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]  # (dtype, channels_last)
POLICY = "color,translation,cutout"


def _frozen_call(net, x: torch.Tensor, dtype: str, backward: bool) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
        feats = net.stages(x)
    if backward:
        sum(f.float().mean() for f in feats).backward()


def _timed(fn, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def frozen_times(size: int, batch: int, warmup: int, repeats: int) -> dict[tuple[str, bool, bool], float]:
    """Median seconds per call for each (dtype, channels_last, backward)."""
    nets = {cl: efficientnet_lite0() for cl in (False, True)}
    nets[True].to(memory_format=torch.channels_last)
    x0 = torch.rand(batch, 3, size, size) * 2 - 1
    times: dict[tuple[str, bool, bool], list[float]] = {}
    for _ in range(repeats):  # interleaved: every variant sees the same machine load
        for dtype, cl in VARIANTS:
            x = x0.contiguous(memory_format=torch.channels_last) if cl else x0.clone()
            fwd = _timed(lambda: torch.no_grad()(_frozen_call)(nets[cl], x, dtype, False), warmup, 1)  # noqa: B023
            xg = x.requires_grad_()
            bwd = _timed(lambda: _frozen_call(nets[cl], xg, dtype, True), warmup, 1)  # noqa: B023
            times.setdefault((dtype, cl, False), []).extend(fwd)
            times.setdefault((dtype, cl, True), []).extend(bwd)
        warmup = 0
    return {k: statistics.median(v) for k, v in times.items()}


def step_time(size: int, batch: int, ngf: int, warmup: int, repeats: int) -> float:
    """Median seconds of one training step (D phase + G phase) with the default (bf16, channels_last) D."""
    torch.manual_seed(0)
    gcfg = FastGANConfig(image_size=size, ngf=ngf, z_dim=128)
    G, D = Generator(gcfg), Discriminator(ProjectedDConfig(image_size=size))
    opt_g = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.0, 0.99))
    opt_d = torch.optim.Adam(D.trainable_parameters(), 2e-4, betas=(0.0, 0.99))
    real = torch.rand(batch, 3, size, size) * 2 - 1

    def step() -> None:
        # (1) D phase: hinge on augmented reals and fakes
        with torch.no_grad():
            fake = G(sample_latents(gcfg, batch))
        loss = d_loss("hinge", D(diff_augment(real, POLICY)), D(diff_augment(fake, POLICY)))
        opt_d.zero_grad(set_to_none=True)
        loss.backward()
        opt_d.step()
        # (2) G phase: through the frozen network to G
        loss = g_loss("hinge", None, D(diff_augment(G(sample_latents(gcfg, batch)), POLICY)))
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()

    return statistics.median(_timed(step, warmup, repeats))


def report(size: int, batch: int, t: dict, step: float | None) -> None:
    print(f"\n## {size} px, batch {batch}")
    print("| frozen EfficientNet-Lite0 stages | fwd img/s | fwd+bwd-to-input img/s |")
    print("|---|---|---|")
    for dtype, cl in VARIANTS:
        name = f"{dtype}{', channels_last' if cl else ''}"
        print(f"| {name} | {batch / t[dtype, cl, False]:.1f} | {batch / t[dtype, cl, True]:.1f} |")
    base_f, base_b = t["fp32", False, False], t["fp32", False, True]
    for dtype, cl in VARIANTS[1:]:
        f, b = base_f / t[dtype, cl, False], base_b / t[dtype, cl, True]
        print(f"{size} px {dtype}{' channels_last' if cl else ''} / fp32: {f:.2f}x fwd, {b:.2f}x fwd+bwd")
    if step is not None:
        frozen = 2 * t["bf16", True, False] + t["bf16", True, True]  # what one step runs of it
        print(f"{size} px training step (bf16 channels_last D): {step:.2f} s, {batch / step:.1f} img/s")
        print(f"{size} px frozen network share of the step: {frozen / step:.2f} ({frozen:.2f} s)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--sizes", default="64,128", help="comma-separated input sizes, multiples of 32")
    p.add_argument("--ngf", type=int, default=16, help="the FastGAN G's width in the step timing")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-step", action="store_true", help="time only the frozen network")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"threads {torch.get_num_threads()}, torch {torch.__version__}, bf16 autocast on CPU")
    for size in sizes:
        t = frozen_times(size, args.batch, args.warmup, args.repeats)
        step = None if args.no_step else step_time(size, args.batch, args.ngf, args.warmup, args.repeats)
        report(size, args.batch, t, step)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
