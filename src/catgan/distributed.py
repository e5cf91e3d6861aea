"""Data-parallel training under torchrun: one process per device, gradients all-reduced by DDP.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK (and MASTER_ADDR / MASTER_PORT); `setup()` reads them and
joins the process group (gloo on the CPU, nccl on CUDA). Outside torchrun it returns a single-process
context, so the trainer has one code path. Nothing here runs on import.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from catgan.errors import CatganError

# How long a collective may wait for a peer before the job gives up. A dead rank is usually noticed much
# sooner (torchrun stops the others, gloo reports the closed connection); this bounds the rest.
DEFAULT_TIMEOUT_S = 300.0


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


def teardown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
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
