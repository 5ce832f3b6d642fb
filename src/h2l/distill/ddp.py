"""Data-parallel distillation on torch.distributed: the process group, per-rank seeds, collectives.

``torchrun --standalone --nproc-per-node K -m h2l distill ...`` sets RANK,
WORLD_SIZE and LOCAL_RANK; :func:`dist_context` joins the group (gloo on CPU,
NCCL on CUDA).  Each rank draws its own shard of the stream from (seed, rank),
DistributedDataParallel averages gradients every step, and rank 0 alone
evaluates and writes the checkpoint.  Without those variables nothing here
touches torch.distributed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from ..errors import InputError

TIMEOUT_ENV = "H2L_DIST_TIMEOUT"  # seconds a collective waits for a lost peer (default 300)


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    active: bool = False
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def rank_seed(seed: int, rank: int) -> int:
    """The stream seed of one rank: the run's seed on rank 0 (so one process is shard 0), derived elsewhere."""
    if rank == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def dist_context(cuda: bool) -> DistContext:
    """Join (or reuse) the process group when launched by torchrun; a no-op in one plain process."""
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)),
                           dist.get_world_size() > 1, False)
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return DistContext()
    if not dist.is_available():  # pragma: no cover - every torch wheel we pin has it
        raise InputError("WORLD_SIZE > 1 but this torch has no torch.distributed", "run without torchrun")
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local)
    timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "300")))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout)
    return DistContext(rank, world, local, True, True)


def barrier(ctx: DistContext) -> None:
    """Wait for every rank before teardown.

    Without it a non-main rank destroys its gloo group while rank 0 is still
    evaluating and writing, and gloo can then abort that rank at exit
    ("terminate called without an active exception", seen once in CI).
    """
    if ctx.active:
        dist.barrier()


def close(ctx: DistContext) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def gather_states(ctx: DistContext, state: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's generator state (a uint8 tensor), in rank order, on every rank.

    Tensor collectives only: ``all_gather_object`` unpickles what the peers send, so any process that can
    reach the rendezvous could run code here.  The sizes go first, so a peer whose generator state has
    another size (another torch build or device type) is refused on every rank alike instead of garbled."""
    if not ctx.active:
        return [state]
    if state.dtype != torch.uint8 or state.dim() != 1:
        raise TypeError(f"a generator state is a 1-d uint8 tensor, got {state.dtype} {tuple(state.shape)}")
    dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    mine = state.to(dev)
    sizes = [torch.zeros(1, dtype=torch.int64, device=dev) for _ in range(ctx.world)]
    dist.all_gather(sizes, torch.tensor([mine.numel()], dtype=torch.int64, device=dev))
    got = [int(t.item()) for t in sizes]
    if len(set(got)) != 1:
        raise InputError(f"generator states differ in size across ranks ({got} bytes, in rank order)",
                         "run every rank with the same torch build and --device")
    out = [torch.empty_like(mine) for _ in range(ctx.world)]
    dist.all_gather(out, mine)
    return [t.cpu() for t in out]


def broadcast_flag(ctx: DistContext, flag: bool, device: torch.device) -> bool:
    """Rank 0's decision (stop now?) on every rank: one tiny collective per evaluation, none per step."""
    if not ctx.active:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())
