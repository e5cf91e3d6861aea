"""The GAN step: a D phase and a G phase on one batch, as an object the loop and the benchmarks call.

    step = GANStep(G, D, cfg, gcfg, device)         # builds the EMA copy, both optimizers, the noise
    stats = step(real_u8, step=i, lr_scale=1.0, train_g=True)   # [loss_d, loss_g, D(x), D(G(z))]

Its parts: the loss (catgan.losses, by name), DiffAugment on everything D sees, lazy R1 on the reals,
freezing (G during a D warm-up; D's trainable parameters during the G phase; a D's frozen part always),
the EMA of G and the learning-rate scale. Randomness: `noise` draws the latents and flips for the whole
global batch on every rank (each rank keeps its slice [lo:hi]), so N data-parallel ranks see the same z
as one process; the augmentations are reseeded from (seed, step, rank) each step, so they need no state.
"""

from __future__ import annotations

import contextlib
import copy

import torch
from torch import nn

from catgan import losses
from catgan.augment import diff_augment
from catgan.config import TrainConfig
from catgan.data.dataset import to_float
from catgan.models.base import sample_latents


def ema_decay(decay: float, step: int) -> float:
    """The decay warmed up as (1 + step) / (10 + step) (TensorFlow's num_updates rule), capped at `decay`:
    with a fixed 0.999 the average would still be 80% random init after 200 steps."""
    return min(decay, (1.0 + step) / (10.0 + step))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema = decay * ema + (1 - decay) * model for parameters; buffers (BatchNorm statistics) copied."""
    e_params = list(ema.parameters())
    m_params = [p.detach() for p in model.parameters()]
    torch._foreach_lerp_(e_params, m_params, 1.0 - decay)
    if buffers := list(ema.buffers()):  # a G without BatchNorm has none
        torch._foreach_copy_(buffers, list(model.buffers()))  # one launch, not one per buffer


class GANStep:
    """One D update and one G update per call; holds G, D, the EMA of G, both optimizers and the noise.

    The networks are used as given (their state dicts are what a checkpoint saves); `wrap` may later put
    data-parallel and compiled runners around them for the forward passes.
    """

    def __init__(self, G: nn.Module, D: nn.Module, cfg: TrainConfig, gcfg, device: torch.device, amp=False):
        self.G, self.D, self.cfg, self.gcfg, self.device = G, D, cfg, gcfg, device
        self.G_ema = copy.deepcopy(G).eval().requires_grad_(False) if cfg.ema > 0 else None
        self.d_params = D.trainable_parameters()  # what D's optimizer gets and the G phase freezes
        # fused: one kernel per Adam step, not a dozen foreach ones (on an H200 a 128 px step is
        # launch-bound); a resumed run keeps what its checkpoint's optimizer used
        betas = (cfg.beta1, cfg.beta2)
        self.opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=betas, fused=True)
        self.opt_d = torch.optim.Adam(self.d_params, lr=cfg.lr_d, betas=betas, fused=True)
        self.noise = torch.Generator(device=device).manual_seed(cfg.seed + 1)
        self.aug = torch.Generator(device=device)
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)
        self.fmt = torch.contiguous_format
        self.G_run, self.D_run, self.D_for_g = G, D, D
        self.lo, self.hi, self.rank = 0, cfg.batch, 0

    def wrap(self, channels_last=False, compile=False, ddp_devices=None, rank=0, world=1) -> GANStep:
        """Memory format, data parallelism (this rank's slice of each global batch; DDP over G and D for
        the D phase; the G phase runs D outside DDP: nothing of D's to all-reduce) and torch.compile."""
        self.fmt = torch.channels_last if channels_last else torch.contiguous_format
        for m in (self.G, self.D, self.G_ema):
            if m is not None:
                m.to(memory_format=self.fmt)
        local = self.cfg.batch // world
        self.lo, self.hi, self.rank = rank * local, (rank + 1) * local, rank
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.G_run, self.D_run = DDP(self.G, device_ids=ddp_devices), DDP(self.D, device_ids=ddp_devices)
        if compile:
            self.G_run, self.D_run = torch.compile(self.G_run), torch.compile(self.D_run)
            self.D_for_g = torch.compile(self.D)
        return self

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, self.cfg.diffaug, self.aug) if self.cfg.diffaug else x

    def set_lr(self, scale: float) -> None:
        for opt, lr in ((self.opt_d, self.cfg.lr_d), (self.opt_g, self.cfg.lr_g)):
            for group in opt.param_groups:
                group["lr"] = lr * scale

    def d_phase(self, real: torch.Tensor, fake: torch.Tensor, step: int) -> tuple[torch.Tensor, ...]:
        """(1) Update D: push D(x) up and D(G(z)) down. Returns (loss_d, real logits, fake logits)."""
        cfg = self.cfg
        lazy_r1 = cfg.r1_gamma > 0 and step % cfg.r1_every == 0
        real.requires_grad_(lazy_r1)
        with self.autocast:
            real_logits = self.D_run(self._augment(real)).float()  # (b,) or (b, K)
            fake_logits = self.D_run(self._augment(fake.detach())).float()
        loss_d = losses.d_loss(cfg.loss, real_logits, fake_logits, cfg.real_label)
        total = loss_d
        if lazy_r1:  # scaled by the interval so lazy R1 has the strength of R1 every step
            total = total + losses.r1_penalty(real, real_logits) * (cfg.r1_gamma / 2 * cfg.r1_every)
        self.opt_d.zero_grad(set_to_none=True)
        total.backward()
        self.opt_d.step()
        return loss_d, real_logits, fake_logits

    def g_phase(self, fake: torch.Tensor, real_logits: torch.Tensor, train_g: bool) -> torch.Tensor:
        """(2) Update G: push D(G(z)) up, through the D just updated, whose weights need no gradient here.
        While G is frozen (a D warm-up) its loss is only measured."""
        with _frozen(self.d_params):
            with self.autocast, torch.set_grad_enabled(train_g):
                fake_logits = self.D_for_g(self._augment(fake)).float()
            loss_g = losses.g_loss(self.cfg.loss, real_logits.detach(), fake_logits)
            if train_g:
                self.opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                self.opt_g.step()
        return loss_g

    def ema_phase(self, step: int) -> None:
        """(3) The EMA of G follows G (a plain copy of it before cfg.ema_start)."""
        if self.G_ema is None:
            return
        if step >= self.cfg.ema_start:
            update_ema(self.G_ema, self.G, ema_decay(self.cfg.ema, step - self.cfg.ema_start))
        else:
            self.G_ema.load_state_dict(self.G.state_dict())

    def __call__(self, real_u8: torch.Tensor, step: int, lr_scale: float, train_g: bool) -> torch.Tensor:
        """One step on this rank's uint8 (b, 3, S, S) batch. Returns [loss_d, loss_g, mean D(x),
        mean D(G(z))] (sigmoid of the logits), on the device: no host sync."""
        cfg = self.cfg
        real = to_float(real_u8).contiguous(memory_format=self.fmt)  # (b, 3, S, S) in [-1, 1]
        z = sample_latents(self.gcfg, cfg.batch, self.noise, self.device)[self.lo : self.hi]  # (b, z_dim)
        if cfg.flip:
            flip = (torch.rand(cfg.batch, generator=self.noise, device=self.device) < 0.5)[self.lo : self.hi]
            real = torch.where(flip[:, None, None, None], real.flip(3), real)  # (b, 3, S, S)
        self.aug.manual_seed((cfg.seed * 1_000_003 + step) * 1024 + self.rank)
        self.set_lr(lr_scale)
        with self.autocast, torch.set_grad_enabled(train_g):
            fake = self.G_run(z)  # (b, 3, S, S); the G phase reuses it
        loss_d, real_logits, fake_logits = self.d_phase(real, fake, step)
        loss_g = self.g_phase(fake, real_logits, train_g)
        self.ema_phase(step)
        return torch.stack(
            [loss_d.detach(), loss_g.detach(), real_logits.detach().sigmoid().mean(),
             fake_logits.detach().sigmoid().mean()]
        )  # fmt: skip

    @torch.no_grad()
    def draw(self, z: torch.Tensor) -> torch.Tensor:
        """uint8 (n, 3, S, S) on the CPU from z (n, z_dim), by the EMA generator when there is one."""
        from catgan.data.dataset import to_uint8

        net = self.G_ema if self.G_ema is not None else self.G
        was_training = net.training
        net.eval()
        try:
            return torch.cat([to_uint8(net(chunk)).cpu() for chunk in z.split(self.cfg.batch)])
        finally:
            net.train(was_training)


@contextlib.contextmanager
def _frozen(params: list[nn.Parameter]):
    """The parameters need no gradient inside the block (a D's frozen part never does, so it is not here)."""
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)
