"""Thin helpers over ``torch.distributed`` for runs launched with ``torchrun``.

Without ``torchrun`` (no ``RANK``/``WORLD_SIZE`` in the environment) everything here is a no-op
and reports a single process, so the same training code runs in a notebook, on one GPU and on a
multi-GPU node.

Example:
    >>> info = init_distributed()     # torchrun --nproc_per_node 4 train.py
    >>> info.world_size, info.is_main
    (1, True)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from obstructlib.errors import ConfigError

if TYPE_CHECKING:
    from obstructlib.data.base import SizedDataset

__all__ = [
    "DistInfo",
    "all_gather_with_grad",
    "all_reduce_sum",
    "barrier",
    "cleanup",
    "epoch_loader",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "shard_loader",
    "unwrap",
    "wrap_ddp",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a distributed run.

    Attributes:
        rank: global rank, 0..world_size-1.
        world_size: number of processes.
        local_rank: rank on this node (the CUDA device index under torchrun).
        is_main: True on rank 0, the process that logs and writes checkpoints.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    is_main: bool = True


def is_distributed() -> bool:
    """True when a process group is initialised with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """Global rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def full_batches_per_epoch(num_items: int, batch_size: int, what: str = "training items") -> int:
    """Global batches of ``batch_size`` in ``num_items``, checking they split over the processes.

    Raises:
        ConfigError: ``batch_size`` is not a multiple of the world size, or exceeds ``num_items``.
    """
    world = get_world_size()
    if batch_size % world:
        raise ConfigError(f"batch_size={batch_size} is not divisible by {world} processes: pick a multiple")
    steps = num_items // batch_size
    if steps == 0:
        raise ConfigError(f"batch_size={batch_size} exceeds the {num_items} {what}: lower batch_size")
    return steps


def is_main_process() -> bool:
    """True on rank 0 or outside a distributed run."""
    return get_rank() == 0


def _info() -> DistInfo:
    rank = get_rank()
    local = int(os.environ.get("LOCAL_RANK", rank))
    return DistInfo(rank=rank, world_size=get_world_size(), local_rank=local, is_main=rank == 0)


def init_distributed(backend: str | None = None, timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group described by torchrun's environment variables.

    Reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. Without
    them (a plain ``python`` run) nothing is initialised and a single-process ``DistInfo`` is
    returned. Calling it twice is harmless.

    Args:
        backend: ``"nccl"`` or ``"gloo"``; None picks nccl when CUDA is available, else gloo.
        timeout_s: collective timeout in seconds.

    Returns:
        The :class:`DistInfo` of this process. On CUDA the current device is set to ``local_rank``.
    """
    if dist.is_available() and dist.is_initialized():
        return _info()
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo()
    local_rank = int(os.environ.get("LOCAL_RANK", os.environ["RANK"]))
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, init_method="env://", timeout=timedelta(seconds=timeout_s))
    return _info()


def barrier() -> None:
    """Wait for every process (no-op outside a distributed run)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient and returns this rank's slice."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        ctx.batch = tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)  # all_reduce works on every backend (gloo too)
        start = dist.get_rank() * ctx.batch
        return grad[start : start + ctx.batch]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank along dim 0, keeping the gradient path.

    Backward sums the gradient that every rank computes for each slice and hands each rank its
    own slice, which is what a contrastive loss over the global batch needs (open_clip's
    ``gather_with_grad=True``). Every rank must pass the same shape.

    Shape:
        ``(B, ...)`` per rank to ``(world_size * B, ...)``, rank r's rows at ``r*B:(r+1)*B``.
    """
    if not is_distributed():
        return tensor
    return _GatherWithGrad.apply(tensor)


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks (returns it unchanged outside a distributed run)."""
    if is_distributed():
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def cleanup() -> None:
    """Destroy the process group if one is initialised."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside ``DistributedDataParallel``/``DataParallel``/``torch.compile`` wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def epoch_loader(
    dataset: SizedDataset,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    skip_batches: int = 0,
    num_workers: int = 0,
    collate_fn: Callable[[list], Any] | None = None,
    pin_memory: bool = False,
) -> DataLoader:
    """This rank's shuffled batches of one epoch; the order is a function of ``(seed, epoch)`` only.

    The permutation is :class:`~torch.utils.data.DistributedSampler`'s (``drop_last=True``), so
    with ``world_size`` ranks and per-rank batch ``B`` the union of the ranks' b-th batches is
    exactly the b-th batch of a single process with batch ``world_size * B``: 1-GPU and N-GPU
    runs see the same global batches. ``skip_batches`` drops batches already consumed before an
    interruption, so a resumed run continues mid-epoch where it stopped. The loader gets its own
    generator, so creating it never draws from the global RNG (which checkpoints restore).

    Args:
        dataset: map-style dataset.
        batch_size: per-rank batch size; incomplete batches are dropped.
        seed: shuffling seed.
        epoch: epoch index (0-based).
        skip_batches: batches of this epoch to skip.
        num_workers: DataLoader workers.
        collate_fn: optional collate function.
        pin_memory: pin host memory (for CUDA training).
    """
    torch_dataset = cast(Dataset, dataset)  # torch annotates its nominal Dataset; any map-style dataset works
    sampler: DistributedSampler[int] = DistributedSampler(
        torch_dataset, num_replicas=get_world_size(), rank=get_rank(), shuffle=True, seed=seed, drop_last=True
    )
    sampler.set_epoch(epoch)
    indices = list(sampler)[skip_batches * batch_size :]
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)  # worker seeds only
    return DataLoader(
        torch_dataset,
        batch_size=batch_size,
        sampler=indices,
        drop_last=True,
        num_workers=num_workers,
        collate_fn=collate_fn,
        pin_memory=pin_memory,
        generator=generator,
    )


def shard_loader(
    dataset: SizedDataset,
    batch_size: int,
    *,
    num_workers: int = 0,
    collate_fn: Callable[[list], Any] | None = None,
) -> DataLoader:
    """In-order, unpadded shard ``rank::world_size`` of ``dataset`` for evaluation (sum results over ranks)."""
    indices = list(range(get_rank(), len(dataset), get_world_size()))
    return DataLoader(
        cast(Dataset, dataset),  # torch annotates its nominal Dataset; any map-style dataset works
        batch_size=batch_size,
        sampler=indices,
        num_workers=num_workers,
        collate_fn=collate_fn,
    )


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """``DistributedDataParallel(model)`` in a distributed run, the model itself otherwise."""
    if not is_distributed():
        return model
    device_ids = (
        [device.index if device.index is not None else torch.cuda.current_device()]
        if device.type == "cuda"
        else None
    )
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
