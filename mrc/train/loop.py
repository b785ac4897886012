"""Training loop: AdamW with encoder/head learning rates, warmup + linear decay, accumulation, clipping;
resumable mid-epoch and shardable over DDP ranks."""
from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from mrc.train import distributed
from mrc.train.cpu_memory import release_freed_memory
from mrc.data.batching import batches, collate
from mrc.train.distributed import Dist
from mrc.train.loggers import NullLogger
from mrc.train.recipes import Recipes, encoder_depth, layer_decay, layer_scales
from mrc.data.features import Window

log = logging.getLogger(__name__)
GROUP_BATCHES = 50  # trainer.group_by_length: windows are sorted by length within shuffled pools of this many batches
PROGRESS_EVERY_S = 30.0  # without a progress bar: a progress line every log_every steps, at most one per 30 s
# biases, LayerNorm scales and the layer-mix neck's mixing weights and scale get no weight decay
NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight", "neck.weights", "neck.gamma")


def build_optimizer(model, optim, total_steps: int):
    """AdamW with four groups (encoder / everything else x decay / no-decay) and warmup + linear decay.
    New weights inside the encoder (LoRA's ``lora_A`` / ``lora_B``) train with the head's rate. With
    ``optim.layer_decay`` < 1 each encoder group is split by layer, e.g. ``encoder.layer3`` or
    ``encoder_no_decay.embeddings``, at ``encoder_lr`` times :func:`mrc.train.recipes.layer_scales`' factor."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    rate, groups = layer_decay(optim), []
    for part, lr in (("encoder", optim.encoder_lr), ("head", optim.head_lr)):
        params = [(n, p) for n, p in named if (n.startswith("encoder.") and "lora_" not in n) == (part == "encoder")]
        scales = (layer_scales([n for n, _ in params], rate, encoder_depth(model))
                  if part == "encoder" and rate < 1.0 else {})
        for decay in (True, False):
            chosen = [(n, p) for n, p in params if (not any(k in n for k in NO_DECAY)) == decay]
            for (tag, scale), members in _by_scale(chosen, scales).items():
                groups.append({"params": members, "lr": lr * scale,
                               "weight_decay": optim.weight_decay if decay else 0.0,
                               "name": f"{part}{'' if decay else '_no_decay'}{tag}"})
    opt = torch.optim.AdamW(groups, betas=tuple(optim.betas), eps=optim.eps, fused=bool(optim.get("fused", False)))
    warmup = int(optim.warmup_ratio * total_steps)
    return opt, get_linear_schedule_with_warmup(opt, warmup, total_steps)


def _by_scale(named: list, scales: dict) -> dict[tuple[str, float], list]:
    """``named`` parameters grouped by their (tag, lr factor) in ``scales`` (absent: ("", 1.0)), in order."""
    out: dict[tuple[str, float], list] = {}
    for n, p in named:
        out.setdefault(scales.get(n, ("", 1.0)), []).append(p)
    return out


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
    ``epoch`` (so a resumed run recomputes them instead of storing them). ``trainer.group_by_length``
    (default true): batches of similar lengths, sorted within shuffled pools of :data:`GROUP_BATCHES` batches;
    false: batches of windows drawn at random (a pool of one batch)."""
    seed = trainer.seed * 1000 + epoch
    keep, negative_keep = window_keeps(trainer)
    windows = epoch_windows(windows, keep, seed, negative_keep)
    group = GROUP_BATCHES if trainer.get("group_by_length", True) else 1
    return windows, batches([len(w.input_ids) for w in windows], trainer.batch_size, shuffle=True, seed=seed,
                            group_factor=group)


def padding_counts(windows: list[Window], order: list[list[int]]) -> tuple[int, int]:
    """(real tokens, padded positions) of the batches ``order`` once each is padded to its longest window."""
    real = padded = 0
    for idx in order:
        lengths = [len(windows[j].input_ids) for j in idx]
        real += sum(lengths)
        padded += max(lengths) * len(lengths) - sum(lengths)
    return real, padded


def trained_batches(order: list[list[int]], world_size: int, fraction: float) -> list[list[int]]:
    """The batches of the epoch's global ``order`` trained over every rank: each rank's kept share
    (:func:`limit_batches`) of its shard (:func:`mrc.train.distributed.shard_batches`), padding repeats excluded."""
    per_rank = limit_batches(math.ceil(len(order) / world_size), fraction)
    return [b for i, b in enumerate(order) if i // world_size < per_rank]


def epoch_padding(windows: list[Window], trainer, epoch: int, world_size: int = 1) -> tuple[int, int]:
    """(real tokens, padded positions) of the batches epoch ``epoch`` trains over every rank: a pure function of
    the options, like the batch order (so a resumed run reports what an uninterrupted one does)."""
    windows, order = epoch_batches(windows, trainer, epoch)
    return padding_counts(windows, trained_batches(order, world_size, epoch_fraction(trainer, epoch)))


def padded_share(real: int, padded: int) -> float:
    """Padded positions as a share of every position computed."""
    return padded / max(real + padded, 1)


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


def _forward(net: nn.Module, batch: dict, device, amp_dtype) -> Callable[[], torch.Tensor]:
    """``forward()``: the loss of ``batch`` (under autocast when ``amp_dtype`` is set)."""
    def forward() -> torch.Tensor:
        with torch.autocast(device_type=torch.device(device).type, dtype=amp_dtype or torch.bfloat16,
                            enabled=amp_dtype is not None):
            return net(batch)
    return forward


def _backward(trainer, scaler) -> Callable[[torch.Tensor], None]:
    """``backward(loss)``: accumulate the gradients of ``loss / grad_accum`` (scaled under fp16)."""
    def backward(loss: torch.Tensor) -> None:
        scaled = loss / trainer.grad_accum
        (scaler.scale(scaled) if scaler is not None else scaled).backward()
    return backward


def _to_device(batch: dict[str, torch.Tensor], device, cuda: bool) -> dict[str, torch.Tensor]:
    """The collated batch on ``device``; on CUDA through pinned memory, so the copy runs asynchronously."""
    if not cuda:
        return {k: v.to(device) for k, v in batch.items()}
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}


class CollatedBatches(Dataset):
    """Batch ``i`` of ``order`` collated (:func:`mrc.data.batching.collate`): what DataLoader workers run."""

    def __init__(self, windows: list[Window], order: list[list[int]], pad_id: int):
        self.windows, self.order, self.pad_id = windows, order, pad_id

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return collate([self.windows[j] for j in self.order[i]], self.pad_id)


def batch_stream(windows: list[Window], order: list[list[int]], pad_id: int, device, workers: int = 0):
    """The batches of ``order`` collated and on ``device``, in that order (``trainer.num_workers``).

    ``workers`` 0: each is collated on this thread when it is needed. > 0: a DataLoader with that many worker
    processes collates ahead of the training step (two batches each), into pinned memory on CUDA so that the
    copy to the GPU is asynchronous; the batches are the same either way. The loader has its own generator:
    creating it draws nothing from torch's global RNG, so dropout masks do not depend on ``workers``."""
    cuda = torch.device(device).type == "cuda"
    if workers <= 0:
        for idx in order:
            yield _to_device(collate([windows[j] for j in idx], pad_id), device, cuda)
        return
    loader = DataLoader(CollatedBatches(windows, order, pad_id), batch_size=None, shuffle=False,
                        num_workers=workers, pin_memory=cuda, generator=torch.Generator())
    for batch in loader:
        yield _to_device(batch, device, cuda)  # pinned already on CUDA: pin_memory() returns the tensor itself


def num_workers(trainer) -> int:
    """``trainer.num_workers`` checked: an integer >= 0 (0: collate on the training thread)."""
    n = trainer.get("num_workers", 0)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"trainer.num_workers={n!r}: must be an integer >= 0")
    return n


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


@dataclass
class TrainLoop:
    """What every epoch of one training shares: the model and its optimizer and schedule, how batches are
    built and run, and where the loss and progress go. :meth:`run_epoch` makes one pass.

    ``trainer``: the trainer options (batch size, accumulation, clipping, shuffling, logging). ``pad_id``,
    ``device``, ``amp_dtype``: how each batch is padded, placed and autocast (None: no autocast). ``net``:
    the module called as ``net(batch) -> loss`` (:func:`mrc.train.distributed.wrap`; None: ``model.loss``).
    ``dist``: the DDP ranks; each trains on its shard of the epoch's batch order. ``scaler``: a
    ``torch.amp.GradScaler`` (fp16) that scales the loss and skips steps whose gradients overflowed.
    ``recipes``: the adversarial passes after each batch's backward and the EMA update after each optimizer
    step (:class:`mrc.train.recipes.Recipes`; None: neither).
    """
    model: nn.Module
    opt: torch.optim.Optimizer
    sched: object
    trainer: object
    pad_id: int
    device: str | torch.device
    amp_dtype: torch.dtype | None = None
    logger: object = field(default_factory=NullLogger)
    net: nn.Module | None = None
    dist: Dist = Dist()
    scaler: torch.amp.GradScaler | None = None
    recipes: Recipes | None = None

    def run_epoch(self, windows: list[Window], *, epoch: int, step: int, start: EpochProgress | None = None,
                  on_resume_point: StepCallback | None = None) -> tuple[dict, int]:
        """One pass over ``windows`` from global optimizer step ``step``; returns (epoch stats, global step).

        The returned loss and ``windows`` are global under DDP (every window of the epoch's sample counted
        once, padding repeats excluded). ``start`` resumes the epoch after ``start.batch`` batches (always
        an optimizer-step boundary). ``on_resume_point(step, progress)`` is called every
        ``trainer.resume_every`` optimizer steps with the progress summed over ranks.
        """
        return _run_epoch(self, windows, epoch, step, start, on_resume_point)


def _run_epoch(loop: TrainLoop, windows: list[Window], epoch: int, step: int, start: EpochProgress | None,
               on_resume_point: StepCallback | None) -> tuple[dict, int]:
    """:meth:`TrainLoop.run_epoch`. On CUDA the loss sum stays on the device and is read (with the
    non-finite check) only at log steps, resume points and the epoch end: a ``.item()`` per batch would
    wait for the GPU every batch."""
    model, opt, sched, trainer, device = loop.model, loop.opt, loop.sched, loop.trainer, loop.device
    pad_id, amp_dtype, dist, scaler, recipes = loop.pad_id, loop.amp_dtype, loop.dist, loop.scaler, loop.recipes
    logger, net = loop.logger, loop.net
    net = net if net is not None else distributed.LossForward(model)
    net.train()
    windows, order = epoch_batches(windows, trainer, epoch)
    mine, n_real = distributed.shard_batches(order, dist)
    keep = limit_batches(len(mine), epoch_fraction(trainer, epoch))  # the shuffled order's first share
    mine, n_real = mine[:keep], min(n_real, keep)
    real, padded = padding_counts(windows, trained_batches(order, dist.world_size, epoch_fraction(trainer, epoch)))
    if dist.is_main:
        log.info("epoch %d: %d batches; padding is %.1f %% of the %d token positions (trainer.group_by_length=%s)",
                 epoch, len(order), 100 * padded_share(real, padded), real + padded,
                 trainer.get("group_by_length", True))
    p = replace(start) if start is not None else EpochProgress()
    every = int(trainer.get("resume_every", 0) or 0) if on_resume_point else 0
    resumed_windows, first_batch, t0 = p.windows, p.batch, time.perf_counter()
    said = t0  # when the last progress line was logged
    cuda = torch.device(device).type == "cuda"
    stream = batch_stream(windows, mine[p.batch:], pad_id, device, num_workers(trainer))
    losses = _LossSum(p.total_loss, device, epoch)
    bar = tqdm(range(p.batch, len(mine)), initial=p.batch, total=len(mine), desc=f"epoch {epoch}", unit="batch",
               disable=None if trainer.progress else True)  # None: bars on a terminal only
    for i in bar:
        idx = mine[i]
        batch = next(stream)
        boundary = (i + 1) % trainer.grad_accum == 0 or i + 1 == len(mine)
        forward, backward = _forward(net, batch, device, amp_dtype), _backward(trainer, scaler)
        adversary = recipes.adversary if recipes is not None else None
        with distributed.no_sync(net, skip=not boundary or adversary is not None), \
                (adversary.watching() if adversary is not None else contextlib.nullcontext()):
            loss = forward()
            losses.add(loss, i, real=i < n_real, check_now=not cuda)
            backward(loss)
        if adversary is not None:  # its last pass carries DDP's all-reduce at a step boundary
            adversary.attack(forward, backward, quiet=lambda: distributed.no_sync(net, skip=True),
                             last=lambda: distributed.no_sync(net, skip=not boundary))
        p.batch = i + 1
        if i < n_real:
            p.n_loss, p.windows = p.n_loss + 1, p.windows + len(idx)
        if not boundary:
            continue
        _optimizer_step(model, opt, sched, trainer, scaler)
        if recipes is not None and recipes.ema is not None:
            recipes.ema.update()
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
    return {"loss": p.total_loss / max(p.n_loss, 1), "seconds": p.seconds, "windows": p.windows,
            "tokens": real, "padded_share": padded_share(real, padded)}, step
