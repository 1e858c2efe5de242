"""Process-group setup and the two collectives the loop needs (gloo on CPU, nccl on CUDA)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from lpdvae.errors import LpdvaeError


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    owns_group: bool

    @property
    def main(self) -> bool:
        return self.rank == 0


def under_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def resolve_device(want: str, local_rank: int) -> torch.device:
    if want == "cuda" and not torch.cuda.is_available():
        raise LpdvaeError("train.device is cuda but no CUDA device is available")
    if want == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def init_distributed(device_choice: str) -> DistEnv:
    """Read torchrun's environment (or none: one process) and join the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_choice, local_rank)
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.cuda.set_device(device)
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        owns = True
    if rank != 0:
        logging.getLogger("lpdvae").setLevel(logging.WARNING)
    return DistEnv(rank, world, local_rank, device, owns)


def shutdown(env: DistEnv) -> None:
    if env.owns_group:
        dist.destroy_process_group()


def all_reduce_sum(t: Tensor, env: DistEnv) -> Tensor:
    if env.world > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def gather_objects(obj: Any, env: DistEnv) -> list[Any]:
    if env.world == 1:
        return [obj]
    out: list[Any] = [None] * env.world
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, env: DistEnv) -> Any:
    """Rank 0's `obj` on every rank."""
    if env.world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
