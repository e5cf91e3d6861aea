"""Can this D tell the real faces from its G's samples? Train D alone against the frozen G and watch.

    python benchmarks/d_alone.py runs/c64-diffaug/checkpoints/step-00006240.pt --data data/faces/cats-64 \
        --policy none translation color,translation,cutout

A run whose D sits at chance (mean D(x) = D(G(z)) = 0.5) is either a D that cannot separate the two, or
a G that moves away from whatever D has just learned. This tells them apart: from the checkpoint's D
(or a new one with --fresh), D trains alone for --steps batches of the run's batch size, with the run's
loss, learning rate and Adam betas, on random real faces and fresh samples of the checkpoint's G (frozen,
eval mode), each seen through one DiffAugment policy ("none" for no augmentation). It prints D's loss
and mean logits on that batch, before its update, at a few steps; one block per policy, each starting
from the same D.
"""

from __future__ import annotations

import argparse
import sys

import torch

from catgan import losses
from catgan.augment import diff_augment
from catgan.checkpoint import load_checkpoint
from catgan.config import ModelConfig, TrainConfig, from_dict
from catgan.data.dataset import load_dataset, to_float
from catgan.models.dcgan import Discriminator, Generator, sample_latents

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

    state = load_checkpoint(args.checkpoint)
    model, cfg = from_dict(ModelConfig, state["model_config"]), from_dict(TrainConfig, state["train_config"])
    G = Generator(model)
    G.load_state_dict(state["G"])
    G.eval().requires_grad_(False)
    faces = load_dataset(args.data, model.image_size)  # uint8 (N, 3, S, S)
    print(f"{args.checkpoint}: step {state['step']}, loss {cfg.loss}, lr_d {cfg.lr_d}, batch {cfg.batch}")
    print("policy | step | loss_d | mean logit real | mean logit fake")
    for policy in args.policy:
        torch.manual_seed(args.seed)  # the same new D for every policy
        D = Discriminator(model)
        if not args.fresh:
            D.load_state_dict(state["D"])
        D.train()
        opt = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
        gen = torch.Generator().manual_seed(args.seed)  # the same batches, samples and augmentations
        aug = "" if policy == "none" else policy
        for step in range(1, args.steps + 1):
            real = to_float(faces[torch.randint(0, len(faces), (cfg.batch,), generator=gen)])  # (B, 3, S, S)
            fake = G(sample_latents(model, cfg.batch, gen))  # (B, 3, S, S)
            real_logits = D(diff_augment(real, aug, gen))  # (B,)
            fake_logits = D(diff_augment(fake, aug, gen))  # (B,)
            loss = losses.d_loss(cfg.loss, real_logits, fake_logits, cfg.real_label)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step in REPORT or step == args.steps:
                print(
                    f"{policy} | {step} | {loss.item():.3f} | {real_logits.mean().item():+.3f} | "
                    f"{fake_logits.mean().item():+.3f}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
