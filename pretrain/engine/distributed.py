"""Process-group setup from the torchrun environment and small collective helpers."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from fractaldb.core.errors import FractalDBError


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job: rank, world size, local rank and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that logs and writes files."""
        return self.rank == 0


def _pick_device(requested: str, local_rank: int) -> torch.device:
    """Resolve `auto|cpu|cuda|cuda:N` to a device, one GPU per local rank under torchrun."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise FractalDBError(
                f"--device {requested} asked for but no CUDA GPU is visible; fix: --device cpu"
            )
        if requested == "cuda":
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device(requested)
    if requested != "cpu":
        raise FractalDBError(f"unknown --device {requested!r}; fix: use auto, cpu, cuda or cuda:N")
    return torch.device("cpu")


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group described by torchrun's env:// variables (a no-op when absent).

    NCCL is used when the ranks run on GPUs, gloo on CPU.
    """
    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _pick_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(backend=backend, init_method="env://", **kwargs)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def is_dist() -> bool:
    """True when a process group with more than one rank is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """This process's global rank (0 outside torchrun)."""
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    """Number of ranks (1 outside torchrun)."""
    return dist.get_world_size() if is_dist() else 1


def is_main_process() -> bool:
    """True on rank 0."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if is_dist():
        dist.barrier()


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Average a tensor over ranks, returning a new tensor."""
    t = t.detach().clone()
    if is_dist():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= dist.get_world_size()
    return t


def reduce_sums(values: dict[str, Any], device: torch.device) -> dict[str, float]:
    """Sum a dict of per-rank totals (numbers or device scalars: counts, loss sums) over all
    ranks in one collective; the one host read happens here, not per batch."""
    keys = sorted(values)
    t = torch.stack(
        [torch.as_tensor(values[k], dtype=torch.float64, device=device).reshape(()) for k in keys]
    )
    if is_dist():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return dict(zip(keys, t.tolist(), strict=True))


def cleanup() -> None:
    """Leave the process group if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
