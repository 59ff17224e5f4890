"""Multi-process training with the engine PyTorch ships: `torchrun --nproc_per_node=N -m detect.train`.

torchrun starts N copies of the command and tells each its place through environment variables
(RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT). Every process builds the same model and data;
the batch sampler gives each its share of the batches, DistributedDataParallel averages the
gradients, evaluation predicts on each process's share and gathers the results on rank 0. Only
rank 0 writes the run directory (checkpoints, metrics, summary, train.log, W&B).

The process group is made before Hydra starts (`init_from_env`), because all processes must agree
on the run directory's time stamp: rank 0's is broadcast and used by everyone (`DETECT_RUN_STAMP`,
read by the run-dir resolver in detect/config/__init__.py).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

STAMP_FORMAT = "%Y-%m-%d_%H-%M-%S"  # the run folder's name, as in conf/train.yaml


@dataclass(frozen=True)
class Dist:
    """This process's place: rank (0..world_size-1 over all machines), local_rank (GPU index on
    this machine), world_size (number of processes)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE_PROCESS = Dist()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def current() -> Dist:
    """This process's place, from the environment torchrun sets (single process: rank 0 of 1)."""
    if not launched_by_torchrun():
        return SINGLE_PROCESS
    return Dist(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), int(os.environ["WORLD_SIZE"]))


def init_from_env(argv: list[str]) -> list[str]:
    """Join the process group torchrun prepared and agree on the run folder's time stamp; return
    the Hydra overrides this process adds to its command line (`argv`, without the program).

    Backend: gloo for CPU tensors and, where CUDA and NCCL exist, nccl for CUDA tensors (one group
    serves both: the stamp and gathered predictions travel over gloo, gradients over nccl).
    Ranks other than 0 write no .hydra/ folder and no train.log (rank 0 writes them)."""
    place = current()
    if not place.enabled or dist.is_initialized():
        return []
    if any(arg in ("-m", "--multirun") for arg in argv):
        raise SystemExit("torchrun starts one training with several processes; a sweep (-m) starts many trainings. "
                         "Run the sweep without torchrun (e.g. with hydra/launcher=slurm), or train one config.")
    cuda = torch.cuda.is_available() and dist.is_nccl_available()
    if cuda:
        torch.cuda.set_device(place.local_rank)
    dist.init_process_group(backend="cpu:gloo,cuda:nccl" if cuda else "gloo")
    stamp = [time.strftime(STAMP_FORMAT) if place.is_main else None]
    dist.broadcast_object_list(stamp, src=0)
    os.environ["DETECT_RUN_STAMP"] = stamp[0]
    return [] if place.is_main else ["hydra.output_subdir=null", "hydra/job_logging=stdout"]


def device_for(place: Dist, device: torch.device) -> torch.device:
    """Each process on its own GPU (cuda:LOCAL_RANK) when training on CUDA with torchrun."""
    if place.enabled and device.type == "cuda":
        return torch.device("cuda", place.local_rank)
    return device


def from_main(obj, place: Dist):
    """Rank 0's `obj` on every process (the run folder rank 0 claimed); `obj` itself without torchrun."""
    if not place.enabled:
        return obj
    box = [obj if place.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_lists(items: list, place: Dist) -> list | None:
    """Concatenate every process's list on rank 0 (rank order); None on the other ranks."""
    if not place.enabled:
        return items
    gathered = [None] * place.world_size if place.is_main else None
    dist.gather_object(items, gathered, dst=0)
    return [x for part in gathered for x in part] if place.is_main else None


def any_rank(flags: list[bool], place: Dist) -> list[bool]:
    """Element-wise OR of `flags` over all processes, so every process takes the same decision
    (stop now, skip this step) and none waits forever for the others."""
    if not place.enabled:
        return flags
    tensor = torch.tensor([float(f) for f in flags])
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return [bool(v) for v in tensor.tolist()]


def mean_over_ranks(values: dict[str, float], place: Dist) -> dict[str, float]:
    """The mean of each value over all processes (for logging losses of the whole batch)."""
    if not place.enabled:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return {k: v / place.world_size for k, v in zip(keys, tensor.tolist())}


def broadcast_value(value, place: Dist):
    """Rank 0's `value` on every process."""
    if not place.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sync_buffers(model: torch.nn.Module, place: Dist) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every process before evaluating.
    DDP broadcasts them at the start of each training forward, but the last forward updated each
    process's copy with its own batch: without this, ranks would evaluate slightly different models
    and the scores would not be those of the checkpoint rank 0 saves."""
    if place.enabled:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def shutdown(place: Dist) -> None:
    if place.enabled and dist.is_initialized():
        dist.destroy_process_group()
