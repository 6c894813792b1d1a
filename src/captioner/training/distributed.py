"""Many processes, one run: ``torchrun`` DistributedDataParallel setup and the few collectives
the training loop needs.

Launch: ``torchrun --nproc-per-node 4 -m captioner train ...`` (any ``captioner train`` flags).
torchrun sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; without them training is one process and
nothing here does anything. Backend: NCCL on CUDA, gloo on CPU (which is how the tests run it).

Each optimiser step consumes one *global* batch (``optim.batch_size`` examples), split across
ranks and then across ``optim.accumulation_steps`` micro-batches; losses are normalised by the
global batch's word count, so the update equals single-process training on the same batch.
Rank 0 alone writes checkpoints, history and TensorBoard logs; every rank validates (the search
is deterministic), so all ranks take the same early-stopping decision without messages.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, value: float) -> float:
        if not self.enabled:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=_collective_device())
        dist.all_reduce(tensor)
        return float(tensor.item())

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def _collective_device() -> torch.device:
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def init_distributed(device_name: str) -> DistributedContext:
    """Join the process group torchrun describes in the environment (no-op without torchrun)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistributedContext(rank, world_size, local_rank)


def shutdown_distributed(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()
