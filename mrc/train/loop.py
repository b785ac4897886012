"""Training loop: AdamW with encoder/head learning rates, warmup + linear decay, accumulation, clipping;
resumable mid-epoch and shardable over DDP ranks."""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from mrc.train import distributed
from mrc.train.cpu_memory import release_freed_memory
from mrc.data.batching import batches, collate
from mrc.train.distributed import Dist
from mrc.data.features import Window

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 30.0  # without a progress bar: a progress line every log_every steps, at most one per 30 s
# biases, LayerNorm scales and the layer-mix neck's mixing weights and scale get no weight decay
NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight", "neck.weights", "neck.gamma")


def build_optimizer(model, optim, total_steps: int):
    """AdamW with four groups (encoder / everything else x decay / no-decay) and warmup + linear decay.
    New weights inside the encoder (LoRA's ``lora_A`` / ``lora_B``) train with the head's rate."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = []
    for part, lr in (("encoder", optim.encoder_lr), ("head", optim.head_lr)):
        params = [(n, p) for n, p in named if (n.startswith("encoder.") and "lora_" not in n) == (part == "encoder")]
        for decay in (True, False):
            chosen = [p for n, p in params if (not any(k in n for k in NO_DECAY)) == decay]
            if chosen:
                groups.append({"params": chosen, "lr": lr, "weight_decay": optim.weight_decay if decay else 0.0,
                               "name": f"{part}{'' if decay else '_no_decay'}"})
    opt = torch.optim.AdamW(groups, betas=tuple(optim.betas), eps=optim.eps, fused=bool(optim.get("fused", False)))
    warmup = int(optim.warmup_ratio * total_steps)
    return opt, get_linear_schedule_with_warmup(opt, warmup, total_steps)


def n_epochs(trainer) -> int:
    """Epochs started: ``ceil(trainer.epochs)`` (``epochs`` may be fractional, e.g. 0.5 or 2.5)."""
    if not float(trainer.epochs) > 0:
        raise ValueError(f"trainer.epochs must be > 0, got {trainer.epochs}")
    return math.ceil(float(trainer.epochs))


def epoch_fraction(trainer, epoch: int) -> float:
    """Share of epoch ``epoch``'s batches that are trained: 1 except in a fractional last epoch (and
    when ``trainer`` sets no ``epochs``, as in single-epoch callers)."""
    epochs = trainer.get("epochs")
    return 1.0 if epochs is None else min(1.0, float(epochs) - (epoch - 1))


def limit_batches(n_batches: int, fraction: float) -> int:
    """Batches trained of an epoch's ``n_batches`` (per rank) when only ``fraction`` of it runs."""
    return n_batches if fraction >= 1.0 else max(1, min(n_batches, round(n_batches * fraction)))


def steps_per_epoch(windows: list[Window], trainer, world_size: int = 1, fraction: float = 1.0) -> int:
    """Expected optimizer steps in one epoch (a last partial accumulation still steps); with
    ``world_size`` DDP ranks each runs ceil(batches / world_size) batches; ``fraction`` < 1: the
    steps of a fractional last epoch."""
    keep, neg_keep = window_keeps(trainer)
    n_neg = sum(w.unanswerable for w in windows)
    n_null = sum(w.labels[0] == (0, 0) for w in windows) - n_neg
    n = len(windows) - n_null - n_neg + round(n_null * keep) + round(n_neg * neg_keep)
    per_rank = limit_batches(math.ceil(math.ceil(n / trainer.batch_size) / world_size), fraction)
    return math.ceil(per_rank / trainer.grad_accum)


def total_steps(windows: list[Window], trainer, world_size: int = 1) -> int:
    """Optimizer steps of the whole run (the LR schedule's horizon), fractional last epoch included."""
    return sum(steps_per_epoch(windows, trainer, world_size, epoch_fraction(trainer, e))
               for e in range(1, n_epochs(trainer) + 1))


def window_keeps(trainer) -> tuple[float, float]:
    """(share of no-answer windows of answerable questions, share of windows of unanswerable questions)
    trained each epoch: ``trainer.null_window_keep`` and ``trainer.negative_window_keep`` (null: the same)."""
    shares = {}
    for key in ("null_window_keep", "negative_window_keep"):
        v = trainer.get(key)
        if key == "negative_window_keep" and v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
            raise ValueError(f"trainer.{key}={v!r}: must be a number in [0, 1]")
        shares[key] = float(v)
    keep = shares["null_window_keep"]
    return keep, shares.get("negative_window_keep", keep)


def epoch_windows(windows: list[Window], keep: float, seed: int, negative_keep: float | None = None) -> list[Window]:
    """All answer-bearing windows plus a fresh random ``keep`` share of the no-answer ones (``negative_keep``
    of those of unanswerable questions; None: ``keep``). One draw per no-answer window either way, so the
    sample of the others does not depend on ``negative_keep``."""
    negative_keep = keep if negative_keep is None else negative_keep
    if keep >= 1.0 and negative_keep >= 1.0:
        return windows
    rng = np.random.default_rng(seed)
    return [w for w in windows
            if w.labels[0] != (0, 0) or rng.random() < (negative_keep if w.unanswerable else keep)]


def epoch_batches(windows: list[Window], trainer, epoch: int) -> tuple[list[Window], list[list[int]]]:
    """The epoch's window sample and its global batch order: pure functions of ``trainer.seed`` and
    ``epoch`` (so a resumed run recomputes them instead of storing them)."""
    seed = trainer.seed * 1000 + epoch
    keep, negative_keep = window_keeps(trainer)
    windows = epoch_windows(windows, keep, seed, negative_keep)
    return windows, batches([len(w.input_ids) for w in windows], trainer.batch_size, shuffle=True, seed=seed)


@dataclass
class EpochProgress:
    """Where an epoch stands: ``batch`` batches of this rank's share consumed, the loss accumulators
    (sum of batch losses, number of batches), windows trained on and seconds spent so far."""

    batch: int = 0
    total_loss: float = 0.0
    n_loss: int = 0
    windows: int = 0
    seconds: float = 0.0


StepCallback = Callable[[int, EpochProgress], None]


def _summed(p: EpochProgress, d: Dist) -> EpochProgress:
    """``p`` with its loss and window counters summed over DDP ranks (``p`` itself when not distributed)."""
    if not d.enabled:
        return p
    total_loss, n_loss, windows = distributed.all_sum([p.total_loss, p.n_loss, p.windows], d)
    return replace(p, total_loss=total_loss, n_loss=int(n_loss), windows=int(windows))


def duration(seconds: float) -> str:
    """``seconds`` as ``1 h 05 min``, ``12 min`` or ``40 s``."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 60} min" if seconds >= 60 else f"{seconds} s"


def _optimizer_step(model, opt, sched, trainer, scaler=None) -> None:
    if scaler is not None:
        scaler.unscale_(opt)  # clip the true gradients, not the scaled ones
    if trainer.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(model.parameters(), trainer.max_grad_norm)
    if scaler is not None:
        scaler.step(opt)  # skipped when a gradient overflowed fp16; the scale then shrinks
        scaler.update()
    else:
        opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    if trainer.get("trim_freed_memory", False):
        release_freed_memory()


def _to_device(batch: dict[str, torch.Tensor], device, cuda: bool) -> dict[str, torch.Tensor]:
    """The collated batch on ``device``; on CUDA through pinned memory, so the copy runs asynchronously."""
    if not cuda:
        return {k: v.to(device) for k, v in batch.items()}
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}


class _LossSum:
    """The epoch's running loss sum, kept as a float64 tensor on the loss's device: adding in float64 in
    batch order gives the same sum as adding ``loss.item()`` values in Python. ``check_now``: test each
    loss for NaN/inf at once (the CPU: no cost); else a device-side flag remembers the first bad batch
    and :meth:`read` raises for it."""

    def __init__(self, start: float, device, epoch: int):
        self.sum = torch.tensor(start, dtype=torch.float64, device=device)
        self.first_bad = torch.tensor(-1, dtype=torch.int64, device=device)
        self.epoch = epoch

    def add(self, loss: torch.Tensor, batch: int, *, real: bool, check_now: bool) -> None:
        """Count ``loss`` of ``batch`` (when ``real``: padding repeats are checked but not counted)."""
        if check_now:
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss {loss.item()} at epoch {self.epoch} batch {batch}")
        else:  # no host sync: the flag keeps the first bad batch index, -1 while all are finite
            bad = ~torch.isfinite(loss.detach()) & (self.first_bad < 0)
            self.first_bad = torch.where(bad, batch, self.first_bad)
        if real:
            self.sum += loss.detach().to(torch.float64)

    def read(self) -> float:
        """The sum so far (one host sync); raises FloatingPointError if a loss was not finite."""
        first_bad = int(self.first_bad.item())
        if first_bad >= 0:
            raise FloatingPointError(f"non-finite loss at epoch {self.epoch} batch {first_bad} "
                                     "(checked at log steps on CUDA)")
        return float(self.sum.item())


def train_epoch(model, windows: list[Window], opt, sched, *, epoch: int, trainer, pad_id: int, device,
                amp_dtype, logger, step: int, net: nn.Module | None = None, dist: Dist = Dist(),
                start: EpochProgress | None = None, on_resume_point: StepCallback | None = None,
                scaler: torch.amp.GradScaler | None = None) -> tuple[dict, int]:
    """One pass over ``windows``; returns (epoch stats, global optimizer step).

    ``net``: the module called as ``net(batch) -> loss`` (:func:`mrc.train.distributed.wrap`; default
    ``model.loss``). Under DDP (``dist``) this rank trains on its shard of the epoch's batch order;
    the returned loss and ``windows`` are global (every window of the epoch's sample counted once,
    padding repeats excluded). ``start`` resumes the epoch after ``start.batch`` batches (always an
    optimizer-step boundary). ``on_resume_point(step, progress)`` is called every
    ``trainer.resume_every`` optimizer steps with the progress summed over ranks. ``scaler``: a
    ``torch.amp.GradScaler`` (fp16) that scales the loss and skips steps whose gradients overflowed.

    On CUDA the loss sum stays on the device and is read (with the non-finite check) only at log steps,
    resume points and the epoch end: a ``.item()`` per batch would wait for the GPU every batch.
    """
    net = net if net is not None else distributed.LossForward(model)
    net.train()
    windows, order = epoch_batches(windows, trainer, epoch)
    mine, n_real = distributed.shard_batches(order, dist)
    keep = limit_batches(len(mine), epoch_fraction(trainer, epoch))  # the shuffled order's first share
    mine, n_real = mine[:keep], min(n_real, keep)
    p = replace(start) if start is not None else EpochProgress()
    every = int(trainer.get("resume_every", 0) or 0) if on_resume_point else 0
    resumed_windows, first_batch, t0 = p.windows, p.batch, time.perf_counter()
    said = t0  # when the last progress line was logged
    cuda = torch.device(device).type == "cuda"
    losses = _LossSum(p.total_loss, device, epoch)
    bar = tqdm(range(p.batch, len(mine)), initial=p.batch, total=len(mine), desc=f"epoch {epoch}", unit="batch",
               disable=None if trainer.progress else True)  # None: bars on a terminal only
    for i in bar:
        idx = mine[i]
        batch = _to_device(collate([windows[j] for j in idx], pad_id), device, cuda)
        boundary = (i + 1) % trainer.grad_accum == 0 or i + 1 == len(mine)
        with distributed.no_sync(net, skip=not boundary):
            with torch.autocast(device_type=torch.device(device).type, dtype=amp_dtype or torch.bfloat16,
                                enabled=amp_dtype is not None):
                loss = net(batch)
            losses.add(loss, i, real=i < n_real, check_now=not cuda)
            scaled = loss / trainer.grad_accum
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        p.batch = i + 1
        if i < n_real:
            p.n_loss, p.windows = p.n_loss + 1, p.windows + len(idx)
        if not boundary:
            continue
        _optimizer_step(model, opt, sched, trainer, scaler)
        step += 1
        if step % trainer.log_every == 0:
            p.total_loss = losses.read()
            rate = (p.windows - resumed_windows) * dist.world_size / (time.perf_counter() - t0)
            mean = p.total_loss / max(p.n_loss, 1)
            logger.log({"train/loss": mean, "train/lr": sched.get_last_lr()[0],
                        "train/windows_per_s": rate, "epoch": epoch}, step=step)
            bar.set_postfix(loss=f"{mean:.3f}", win_s=f"{rate:.0f}")
            now = time.perf_counter()
            if bar.disable and dist.is_main and now - said >= PROGRESS_EVERY_S:  # no bar shown: a log line
                elapsed, done, said = now - t0, i + 1 - first_batch, now
                log.info("epoch %d: batch %d/%d, optimizer step %d, loss %.4f, %.2f windows/s, epoch ends in ~%s",
                         epoch, i + 1, len(mine), step, mean, rate,
                         duration(elapsed / done * (len(mine) - i - 1)))
        if every and step % every == 0:
            p.total_loss = losses.read()
            elapsed = replace(p, seconds=p.seconds + time.perf_counter() - t0)
            on_resume_point(step, _summed(elapsed, dist))
    p.total_loss = losses.read()
    p = _summed(replace(p, seconds=p.seconds + time.perf_counter() - t0), dist)
    return {"loss": p.total_loss / max(p.n_loss, 1), "seconds": p.seconds, "windows": p.windows}, step
