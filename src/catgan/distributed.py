"""Data-parallel training under torchrun: one process per device, gradients all-reduced by DDP.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK (and MASTER_ADDR / MASTER_PORT); `setup()` reads them and
joins the process group (gloo on the CPU, nccl on CUDA). Outside torchrun it returns a single-process
context, so the trainer has one code path. Nothing here runs on import.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from catgan.errors import CatganError

# How long a collective may wait for a peer before the job gives up. A dead rank is noticed much sooner
# (torchrun stops the others within seconds); this bounds the rest: a hung or unreachable peer. It must
# exceed the longest stretch rank 0 spends alone: a checkpoint write or an FID evaluation.
DEFAULT_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class DistContext:
    """Who this process is in the job. world == 1 means plain single-process training."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_context() -> DistContext:
    """The ranks torchrun put in the environment (or a single process when there are none)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    except ValueError as err:
        raise CatganError(f"bad torchrun environment (RANK/WORLD_SIZE/LOCAL_RANK): {err}") from err
    if world < 1 or not 0 <= rank < world:
        raise CatganError(f"bad torchrun environment: RANK={rank} WORLD_SIZE={world}")
    return DistContext(rank, world, local_rank, local_world)


def setup(device: torch.device, timeout_s: float = DEFAULT_TIMEOUT_S) -> DistContext:
    """Join the process group when launched by torchrun with WORLD_SIZE > 1; else a 1-process context."""
    ctx = env_context()
    if not ctx.enabled or dist.is_initialized():
        return ctx
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        dist.init_process_group(
            backend, rank=ctx.rank, world_size=ctx.world, timeout=timedelta(seconds=timeout_s)
        )
    except Exception as err:  # rendezvous failures: wrong address, port taken, peers that never came
        raise CatganError(f"rank {ctx.rank}: could not join the {backend} process group: {err}") from err
    return ctx


def teardown(ctx: DistContext, *, finished: bool) -> None:
    """Leave the process group. After a normal finish every rank first waits for the others (a barrier):
    rank 0 writes the last checkpoint and grid alone, and a rank that destroyed its gloo / NCCL
    connections while a peer still had them open could abort at exit. After an error there is no barrier
    (the peers may be gone; torchrun stops them)."""
    if ctx.enabled and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


def local_device(name: str, ctx: DistContext) -> str:
    """Under torchrun each process takes the GPU of its LOCAL_RANK ("cuda" -> "cuda:LOCAL_RANK")."""
    if ctx.enabled and name in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{ctx.local_rank}"
    return name


def all_mean(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Mean of `t` over all ranks (a no-op for one process)."""
    if ctx.enabled:
        t = t.clone()
        dist.all_reduce(t)
        t /= ctx.world
    return t


def any_rank(flag: bool, device: torch.device, ctx: DistContext) -> bool:
    """True when `flag` is true on any rank: every rank then takes the same decision (e.g. stop now)."""
    if not ctx.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def broadcast_from_main(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's `obj` on every rank (pickled over the process group: rank 0 is trusted, files are not)."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the global batch: every rank's images together.

    Unlike nn.SyncBatchNorm (CUDA only) it runs on any backend, gloo on the CPU included, so the same
    code is tested on the CPU and used on GPUs. The per-channel sums travel in one differentiable
    all-reduce (its backward all-reduces the gradients), so the gradients are those of one big batch.
    With one process, or in eval mode, it is exactly BatchNorm2d. Same parameters, buffers and state
    dict keys as BatchNorm2d, so checkpoints move freely between --sync-bn and not.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        if not (
            self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        ):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        xf = x.float()  # statistics in fp32, also under bf16 autocast
        count = torch.full((1,), x.numel() / c, device=x.device)
        stats = all_reduce(torch.cat([xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3)), count]))  # (2C + 1,)
        n = stats[-1]
        mean = stats[:c] / n  # (C,)
        var = (stats[c : 2 * c] / n - mean * mean).clamp_min(0)  # biased, as BatchNorm normalises with
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_(var.detach() * n / (n - 1).clamp_min(1), m)  # unbiased, as BatchNorm
        y = (xf - mean[None, :, None, None]) * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


def global_batchnorm(module: nn.Module, skip: Sequence[nn.Module] = ()) -> nn.Module:
    """Every BatchNorm2d in `module` replaced (in place) by a GlobalBatchNorm2d holding the same tensors,
    except inside the modules in `skip` (a discriminator's frozen part: its statistics never change)."""
    for name, child in module.named_children():
        if any(child is m for m in skip):
            continue
        if type(child) is nn.BatchNorm2d:
            new = GlobalBatchNorm2d(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            )
            new.load_state_dict(child.state_dict())
            setattr(module, name, new.to(next(child.buffers()).device))
        else:
            global_batchnorm(child, skip)
    return module
