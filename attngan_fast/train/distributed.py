"""Multi-process training through ``torchrun`` (one process per GPU, any number of nodes).

``torchrun --nproc_per_node 8 -m attngan_fast.cli train ...`` (or ``attngan-fast train`` under
torchrun) sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; ``init_distributed`` then joins the
process group (NCCL on GPUs, gloo on CPU), picks ``cuda:LOCAL_RANK`` and returns the ``DistInfo``.
Without those variables it is a no-op (a single process, rank 0 of 1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from attngan_fast.errors import UsageError


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: rank of world_size, its local rank and device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(requested: str | None, local_rank: int = 0) -> torch.device:
    """``requested`` (``cpu``, ``cuda``, ``cuda:1``), else the local GPU if any, else the CPU."""
    if requested in (None, "", "auto"):
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise UsageError(f"--device {requested!r} is not a device: use cpu, cuda, cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(
                f"--device {requested!r} asked for, but no CUDA GPU is usable: use --device cpu"
            )
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def init_distributed(requested_device: str | None = None) -> DistInfo:
    """Join the torchrun process group when launched by torchrun; else a single-process DistInfo."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo(device=pick_device(requested_device))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(requested_device, local_rank)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def wrap_ddp(module: nn.Module, info: DistInfo, sync_bn: bool = False) -> nn.Module:
    """``module`` under DistributedDataParallel (SyncBatchNorm first if asked); as is alone.

    Only for modules whose every trainable parameter is used by each forward call. SyncBatchNorm
    (CUDA only) replaces ``nn.BatchNorm*`` modules and so only acts where they are called (the
    Ds, the encoders); the generator's fused BN ops keep per-process batch statistics.
    """
    if not info.enabled:
        return module
    if sync_bn:
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the module itself)."""
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def all_ranks_agree(flag: bool, info: DistInfo) -> bool:
    """True when ``flag`` holds on every rank (a collective: every rank must call it)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0.5)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
