"""Training loop: AdamW with encoder/head learning rates, warmup + linear decay, accumulation, clipping."""
from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from .batching import batches, collate
from .features import Window

log = logging.getLogger(__name__)
NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")


def build_optimizer(model, optim, total_steps: int):
    """AdamW with four groups (encoder / everything else x decay / no-decay) and warmup + linear decay."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = []
    for part, lr in (("encoder", optim.encoder_lr), ("head", optim.head_lr)):
        params = [(n, p) for n, p in named if n.startswith("encoder.") == (part == "encoder")]
        for decay in (True, False):
            chosen = [p for n, p in params if (not any(k in n for k in NO_DECAY)) == decay]
            if chosen:
                groups.append({"params": chosen, "lr": lr, "weight_decay": optim.weight_decay if decay else 0.0,
                               "name": f"{part}{'' if decay else '_no_decay'}"})
    opt = torch.optim.AdamW(groups, betas=tuple(optim.betas), eps=optim.eps)
    warmup = int(optim.warmup_ratio * total_steps)
    return opt, get_linear_schedule_with_warmup(opt, warmup, total_steps)


def steps_per_epoch(windows: list[Window], trainer) -> int:
    """Expected optimizer steps in one epoch (a last partial accumulation still steps)."""
    n_null = sum(w.labels[0] == (0, 0) for w in windows)
    n = len(windows) - n_null + round(n_null * min(trainer.null_window_keep, 1.0))
    return math.ceil(math.ceil(n / trainer.batch_size) / trainer.grad_accum)


def epoch_windows(windows: list[Window], keep: float, seed: int) -> list[Window]:
    """All answer-bearing windows plus a fresh random ``keep`` share of the no-answer ones."""
    if keep >= 1.0:
        return windows
    rng = np.random.default_rng(seed)
    return [w for w in windows if w.labels[0] != (0, 0) or rng.random() < keep]


def train_epoch(model, windows: list[Window], opt, sched, *, epoch: int, trainer, pad_id: int, device,
                amp_dtype, logger, step: int) -> tuple[dict, int]:
    """One pass over ``windows``; returns (epoch stats, global optimizer step)."""
    model.train()
    windows = epoch_windows(windows, trainer.null_window_keep, trainer.seed * 1000 + epoch)
    order = batches([len(w.input_ids) for w in windows], trainer.batch_size, shuffle=True,
                    seed=trainer.seed * 1000 + epoch)
    total_loss, n_loss, seen, t0 = 0.0, 0, 0, time.perf_counter()
    bar = tqdm(order, desc=f"epoch {epoch}", unit="batch", disable=not trainer.progress)
    for i, idx in enumerate(bar):
        batch = {k: v.to(device) for k, v in collate([windows[j] for j in idx], pad_id).items()}
        with torch.autocast(device_type=torch.device(device).type, dtype=amp_dtype or torch.bfloat16,
                            enabled=amp_dtype is not None):
            loss = model.loss(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} at epoch {epoch} batch {i}")
        (loss / trainer.grad_accum).backward()
        total_loss, n_loss, seen = total_loss + loss.item(), n_loss + 1, seen + len(idx)
        if (i + 1) % trainer.grad_accum == 0 or i + 1 == len(order):
            if trainer.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), trainer.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            if step % trainer.log_every == 0:
                rate = seen / (time.perf_counter() - t0)
                logger.log({"train/loss": total_loss / n_loss, "train/lr": sched.get_last_lr()[0],
                            "train/windows_per_s": rate, "epoch": epoch}, step=step)
                bar.set_postfix(loss=f"{total_loss / n_loss:.3f}", win_s=f"{rate:.0f}")
    seconds = time.perf_counter() - t0
    return {"loss": total_loss / max(n_loss, 1), "seconds": seconds, "windows": seen}, step
