"""Multi-process (DDP) training under ``torchrun``: process group, batch sharding and small collectives.

A run is distributed when ``WORLD_SIZE`` > 1 in the environment (set by ``torchrun``). Every rank then
builds the same data, windows and model (same seeds), trains on a disjoint share of each epoch's batches
through :class:`~torch.nn.parallel.DistributedDataParallel`, and only rank 0 evaluates and writes
outputs. Without ``WORLD_SIZE`` (or with 1) every helper here is a no-op, so single-process runs are
unchanged.
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Iterator, TypeVar

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)
T = TypeVar("T")
# Rank 0 evaluates alone while the other ranks wait in a collective; allow long evaluations.
TIMEOUT = datetime.timedelta(minutes=60)


@dataclass(frozen=True)
class Dist:
    """This process's place in the job: ``rank`` of ``world_size``, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True when several processes train together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that evaluates, logs to W&B and writes outputs."""
        return self.rank == 0


def from_env(env: dict[str, str] | None = None) -> Dist:
    """Rank, world size and local rank from torchrun's environment variables (defaults: one process)."""
    env = os.environ if env is None else env
    return Dist(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def setup(device: str) -> tuple[Dist, str]:
    """Join the process group when launched by torchrun; return (Dist, the device this rank uses).

    On CUDA the backend is NCCL and each rank is pinned to ``cuda:LOCAL_RANK``; on CPU it is Gloo.
    Non-zero ranks log warnings only, so the shared run log reads like a single-process one.
    """
    d = from_env()
    if not d.enabled:
        return d, device
    cuda = device.startswith("cuda")
    if cuda:
        device = f"cuda:{d.local_rank}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", rank=d.rank, world_size=d.world_size, timeout=TIMEOUT)
    if not d.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    log.info("distributed training: %d processes (%s), rank %d on %s", d.world_size,
             dist.get_backend(), d.rank, device)
    return d, device


def teardown(d: Dist) -> None:
    """Leave the process group (call in a ``finally``)."""
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def shard_batches(order: list[T], d: Dist) -> tuple[list[T], int]:
    """This rank's share of an epoch's batch order, and how many of them are real (not padding).

    Every rank sees the same global ``order``; rank r takes batches r, r+W, r+2W, ... The order is
    first padded by repeating its first batches up to a multiple of W, so every rank runs the same
    number of batches (and collectives never wait on a rank that has finished). Padding batches
    are the last ones of a rank's share.
    """
    if not d.enabled:
        return order, len(order)
    if not order:
        return [], 0
    padded_len = math.ceil(len(order) / d.world_size) * d.world_size
    padded = [order[i % len(order)] for i in range(padded_len)]
    mine = padded[d.rank::d.world_size]
    n_real = len(range(d.rank, len(order), d.world_size))
    return mine, n_real


class LossForward(nn.Module):
    """``forward(batch) -> model.loss(batch)``: gives the loss a ``forward`` for DDP to wrap."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The head loss of one collated batch."""
        return self.model.loss(batch)


def wrap(model: nn.Module, d: Dist, device: str) -> nn.Module:
    """The module the training loop calls: ``LossForward(model)``, inside DDP when distributed.

    Evaluation, checkpoints and resumable states always use the unwrapped ``model``. Every parameter
    takes part in the loss (the encoders drop their pooler), so unused-parameter search stays off.
    """
    net = LossForward(model)
    if not d.enabled:
        return net
    ids = [torch.device(device).index] if device.startswith("cuda") else None
    return nn.parallel.DistributedDataParallel(net, device_ids=ids)


def no_sync(net: nn.Module, skip: bool) -> contextlib.AbstractContextManager:
    """Skip DDP's gradient all-reduce for a backward inside a gradient-accumulation cycle."""
    if skip and isinstance(net, nn.parallel.DistributedDataParallel):
        return net.no_sync()
    return contextlib.nullcontext()


def broadcast(obj: Any, d: Dist, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (picklable objects); the others wait for it."""
    if not d.enabled:
        return obj
    box = [obj if d.rank == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather(obj: Any, d: Dist) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not d.enabled:
        return [obj]
    out: list[Any] = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


def all_sum(values: list[float], d: Dist) -> list[float]:
    """Element-wise sum of ``values`` over ranks (float64)."""
    if not d.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return t.cpu().tolist()


def barrier(d: Dist) -> None:
    """Wait for every rank."""
    if d.enabled:
        dist.barrier()


@contextlib.contextmanager
def main_first(d: Dist) -> Iterator[None]:
    """Run the block on rank 0 first, then on the others (e.g. data preparation that writes files)."""
    if not d.is_main:
        barrier(d)
    yield
    if d.is_main:
        barrier(d)


def check_same(value: str, what: str, d: Dist) -> None:
    """Fail fast if ranks disagree on ``value`` (e.g. a fingerprint of the training windows)."""
    values = gather(value, d)
    if len(set(values)) > 1:
        raise RuntimeError(f"ranks disagree on {what}: {values}")
