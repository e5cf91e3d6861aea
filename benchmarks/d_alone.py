"""Can this D tell the real faces from its G's samples? Train D alone against the frozen G and watch.

    python benchmarks/d_alone.py runs/c64-diffaug/checkpoints/step-00006240.pt --data data/faces/cats-64 \
        --policy none translation color,translation,cutout

A run whose D sits at chance (mean D(x) = D(G(z)) = 0.5) is either a D that cannot separate the two, or
a G that moves away from whatever D has just learned. This tells them apart: from the checkpoint's D
(or a new one with --fresh), D trains alone for --steps batches of the run's batch size by the run's
own D phase (catgan.training.step: its loss, learning rate, Adam betas and R1), on random real faces
and fresh samples of the checkpoint's G (frozen, eval mode), each seen through one DiffAugment policy
("none" for no augmentation). It prints D's loss and mean logits on that batch, before its update, at a
few steps; one block per policy, each starting from the same D.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import torch

from catgan.checkpoint import load_checkpoint, saved_configs
from catgan.data.dataset import load_dataset, to_float
from catgan.models import build_discriminator, build_generator
from catgan.models.base import sample_latents
from catgan.training.step import GANStep

REPORT = (1, 10, 30, 60, 100, 150, 250, 500)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", help="a training checkpoint (step-*.pt): G, D and the run's configs")
    p.add_argument("--data", required=True, help="the run's prepared faces, e.g. data/faces/cats-64")
    p.add_argument("--policy", nargs="+", default=["none"], help='DiffAugment policies; "none" = off')
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--fresh", action="store_true", help="a new D instead of the checkpoint's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    cpu = torch.device("cpu")
    state = load_checkpoint(args.checkpoint)
    model, cfg = saved_configs(state, args.checkpoint)
    G = build_generator(model.generator)
    G.load_state_dict(state["G"])
    G.eval().requires_grad_(False)
    faces = load_dataset(args.data, model.image_size)  # uint8 (N, 3, S, S)
    print(f"{args.checkpoint}: step {state['step']}, loss {cfg.loss}, lr_d {cfg.lr_d}, batch {cfg.batch}")
    print("policy | step | loss_d | mean logit real | mean logit fake")
    for policy in args.policy:
        torch.manual_seed(args.seed)  # the same new D for every policy
        D = build_discriminator(model.discriminator)
        if not args.fresh:
            D.load_state_dict(state["D"])
        D.train()
        aug = "" if policy == "none" else policy
        # the run's own D phase (loss, augmentation, R1, optimizer), without its G phase
        step = GANStep(G, D, dataclasses.replace(cfg, diffaug=aug, ema=0.0), model.generator, cpu)
        step.aug.manual_seed(args.seed)  # the same augmentations for every policy that shares ops
        gen = torch.Generator().manual_seed(args.seed)  # the same batches and samples
        for i in range(1, args.steps + 1):
            real = to_float(faces[torch.randint(0, len(faces), (cfg.batch,), generator=gen)])  # (B, 3, S, S)
            with torch.no_grad():
                fake = G(sample_latents(model.generator, cfg.batch, gen))  # (B, 3, S, S)
            loss, real_logits, fake_logits = step.d_phase(real, fake, i)  # logits before the update
            if i in REPORT or i == args.steps:
                print(
                    f"{policy} | {i} | {loss.item():.3f} | {real_logits.mean().item():+.3f} | "
                    f"{fake_logits.mean().item():+.3f}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
