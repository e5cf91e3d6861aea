"""Discriminator rejection sampling (Azadi et al. 2019) for an exported generator, against plain sampling.

    python benchmarks/rejection_sampling.py --critic runs/dcgan-64/checkpoints/step-00030000.pt \
        --data data/faces/cats-64 --n 2000 --quantiles 0.5 0.9

1. Calibrate: the run's D, in eval mode (BatchNorm on its running statistics, so a sample's score does
   not depend on its batch), trains on for --steps steps of sigmoid cross-entropy (real = 1, no
   smoothing) against the frozen generator (default: the bundled cats-64), so that its logit estimates
   log p_data(x) / p_G(x).
2. Sample: for each seed, candidates from the seed's own random stream; candidate x is accepted with
   probability min(1, exp(D(x) - T)), T the q-quantile of D over 10,000 burn-in samples (q = 1 is exact
   rejection sampling for an optimal D). After 64 rejections the best-scored candidate is kept.
3. FID on the same n seeds for plain sampling (unless --no-baseline) and each quantile, measured where a
   choice may be made (catgan.metrics.selection): the self-supervised space, against the held-out faces
   (DATA's `cats-S-holdout` sibling; without one, DATA itself, with a note). Never Inception nor a network
   the critic uses: a threshold picked by those would reward matching ImageNet's classes.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from catgan.checkpoint import load_checkpoint, saved_configs
from catgan.data.dataset import load_dataset, to_float
from catgan.generate import generate_images, load_generator
from catgan.images import to_uint8
from catgan.metrics.evaluate import FIDEvaluator
from catgan.metrics.selection import check_selection_space
from catgan.models import build_discriminator
from catgan.models.base import sample_latents


def calibrate(D: nn.Module, G: nn.Module, cfg: Any, real: torch.Tensor, steps: int) -> None:
    """Train D (eval mode) against the frozen G on batches of 64 reals (uint8 (N, 3, S, S)) and fakes."""
    rng = torch.Generator().manual_seed(123)
    opt = torch.optim.Adam(D.parameters(), lr=5e-5, betas=(0.5, 0.999))
    start = time.perf_counter()
    for step in range(1, steps + 1):
        xr = to_float(real[torch.randint(len(real), (64,), generator=rng)])  # (64, 3, S, S)
        with torch.no_grad():
            xf = G(sample_latents(cfg, 64, rng))  # (64, 3, S, S)
        lr, lf = D(xr), D(xf)  # (64,) each
        loss = F.binary_cross_entropy_with_logits(lr, torch.ones_like(lr))
        loss = loss + F.binary_cross_entropy_with_logits(lf, torch.zeros_like(lf))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            print(f"  calibration step {step}: loss {loss.item():.3f} ({time.perf_counter() - start:.0f} s)")
    D.requires_grad_(False)


@torch.no_grad()
def logits(D: nn.Module, x: torch.Tensor, G: nn.Module | None = None, batch: int = 500) -> torch.Tensor:
    """D's logits (N,) for float images x (N, 3, S, S) in [-1, 1], or, with G, for G's samples of
    latents x (N, z_dim)."""
    score = D if G is None else lambda z: D(G(z))
    return torch.cat([score(x[i : i + batch]) for i in range(0, len(x), batch)])


def rejection_sampler(G: nn.Module, D: nn.Module, cfg: Any, T: float, tries: int = 64):
    """A sample function: seeds -> uint8 images (N, 3, S, S), each by rejection from its seed's stream."""

    def draw(seeds) -> torch.Tensor:
        rngs = [torch.Generator().manual_seed(int(s) * 7919 + (1 << 40)) for s in seeds]
        out: list[torch.Tensor | None] = [None] * len(seeds)
        best: list[tuple[float, torch.Tensor | None]] = [(-float("inf"), None)] * len(seeds)
        todo = list(range(len(seeds)))
        for _ in range(tries):
            if not todo:
                break
            z = torch.cat([sample_latents(cfg, 1, rngs[i]) for i in todo])  # (k, z_dim)
            u = torch.cat([torch.rand(1, generator=rngs[i]) for i in todo])  # (k,)
            with torch.no_grad():
                x = G(z)  # (k, 3, S, S)
                score = D(x)  # (k,)
            accept = u < torch.exp((score - T).clamp(max=0))
            images = to_uint8(x)  # (k, 3, S, S)
            left = []
            for k, i in enumerate(todo):
                if accept[k]:
                    out[i] = images[k : k + 1]
                    continue
                if score[k] > best[i][0]:
                    best[i] = (float(score[k]), images[k : k + 1])
                left.append(i)
            todo = left
        for i in todo:
            out[i] = best[i][1]
        return torch.cat(out)

    return draw


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--critic", required=True, help="a training checkpoint whose D scores the samples")
    p.add_argument(
        "--data", required=True, help="the prepared training faces (calibration; FID: their held-out sibling)"
    )
    p.add_argument("--model", default=None, help="bundled generator (default: cats-64)")
    p.add_argument("--weights", default=None, help="or an exported .safetensors generator")
    p.add_argument("--n", type=int, default=2000, help="samples per FID (seeds 0..n-1)")
    p.add_argument("--steps", type=int, default=500, help="calibration steps")
    p.add_argument("--quantiles", type=float, nargs="+", default=[0.5, 0.9])
    p.add_argument("--no-baseline", action="store_true", help="skip the plain-sampling FID")
    args = p.parse_args()

    gen = load_generator(weights=args.weights, model=args.model)
    state = load_checkpoint(args.critic)
    D = build_discriminator(saved_configs(state, args.critic)[0].discriminator)
    D.load_state_dict(state["D"])
    D.eval()
    real = load_dataset(args.data, image_size=gen.model.image_size)  # (N, 3, S, S) uint8

    def separation(tag: str) -> None:
        idx = torch.randperm(len(real), generator=torch.Generator().manual_seed(7))[:1024]
        lr = logits(D, to_float(real[idx]))
        lf = logits(D, sample_latents(gen.model, 1024, torch.Generator().manual_seed(8)), gen.G)
        acc = ((lr > 0).float().mean() + (lf < 0).float().mean()) / 2
        print(
            f"{tag}: D logit on reals {lr.mean():.2f} ± {lr.std():.2f}, on samples {lf.mean():.2f} ± "
            f"{lf.std():.2f}; accuracy {acc:.3f}"
        )

    separation("D before calibration")
    calibrate(D, gen.G, gen.model, real, args.steps)
    separation("D after calibration")
    burn = logits(D, sample_latents(gen.model, 10_000, torch.Generator().manual_seed(9)), gen.G)

    evaluator = FIDEvaluator(args.data, n=args.n, device="cpu")  # selfsup, held-out faces
    check_selection_space(evaluator.extractor, saved_configs(state, args.critic)[0].discriminator,
                          "rejection sampling")  # fmt: skip
    print(f"FID and KID in the {evaluator.label}")
    runs = [] if args.no_baseline else [("plain sampling", lambda seeds: generate_images(gen, seeds), 1.0)]
    for q in args.quantiles:
        T = float(burn.quantile(q))
        accept = float(torch.exp((burn - T).clamp(max=0)).mean())
        runs.append((f"rejection, q {q} (T {T:.2f})", rejection_sampler(gen.G, D, gen.model, T), accept))
    print(f"{'sampler':<34} {'accept':>7} {f'FID-{args.n}':>9} {'KID x1000':>10} {'time':>7}")
    for name, fn, accept in runs:
        start = time.perf_counter()
        m = evaluator(fn)
        took = time.perf_counter() - start
        kid = 1000 * m["kid_mean"]
        print(f"{name:<34} {accept:>7.3f} {m['fid']:>9.2f} {kid:>10.2f} {took:>6.0f}s", flush=True)


if __name__ == "__main__":
    main()
