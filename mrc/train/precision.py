"""Precision on CUDA (``trainer.precision``), TF32, fp16 on the CPU for tests, and ``trainer.compile``.

The CPU's own choice (``trainer.cpu_bf16``) lives in :func:`mrc.train.pipeline.choose_precision`, which
calls :func:`cuda_precision` for CUDA devices and :func:`cpu_override` first on the CPU.
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Iterator

import torch

from mrc.train.inputs import ConfigError

log = logging.getLogger(__name__)
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
CPU_FP16_ENV = "MRC_CPU_FP16"  # =1: allow trainer.precision=fp16 on the CPU (tests, check.sh --dry-run)


@dataclass(frozen=True)
class Precision:
    """A run's precision: its name (``fp32``, ``bf16``, ``fp16``, ``bf16-matmul``, ``bf16-autocast``), the
    autocast dtype around the forward pass (None: no autocast) and whether a GradScaler scales the loss
    (fp16 only: its 5-bit exponent underflows small gradients)."""

    name: str
    autocast_dtype: torch.dtype | None = None
    scaler: bool = False


FP32 = Precision("fp32")
BF16 = Precision("bf16", torch.bfloat16)
FP16 = Precision("fp16", torch.float16, scaler=True)
BY_NAME = {"fp32": FP32, "bf16": BF16, "fp16": FP16}


def precision_mode(trainer) -> str:
    """``trainer.precision`` checked: auto (the default), fp32, bf16 or fp16."""
    mode = str(trainer.get("precision", "auto")).strip().lower()
    if mode not in PRECISIONS:
        raise ConfigError(f"trainer.precision={trainer.get('precision')!r}: must be one of {', '.join(PRECISIONS)}")
    return mode


def cuda_precision(trainer, device: str, capability: tuple[int, int] | None = None,
                   bf16_supported: bool | None = None) -> Precision:
    """The precision on a CUDA ``device``. Precedence: an explicit ``trainer.precision`` (fp32 / bf16 / fp16)
    wins; ``auto`` with an old config's ``trainer.bf16: false`` means fp32; otherwise ``auto`` picks bf16 on
    compute capability >= 8.0 (Ampere, Hopper), fp16 + GradScaler on 7.x (Volta, Turing: tensor cores
    without bf16), fp32 below. ``capability`` / ``bf16_supported``: the GPU's, read from it when None."""
    mode = precision_mode(trainer)
    if mode == "auto" and not trainer.get("bf16", True):
        return FP32
    if capability is None:
        capability = torch.cuda.get_device_capability(device)
    if bf16_supported is None:  # native bf16 only: emulated bf16 on older cards is slower than fp16
        bf16_supported = capability >= (8, 0) and torch.cuda.is_bf16_supported(including_emulation=False)
    if mode == "auto":
        return BF16 if bf16_supported else FP16 if capability >= (7, 0) else FP32
    if mode == "bf16" and not bf16_supported:
        raise ConfigError(f"trainer.precision=bf16: this GPU (compute capability {capability[0]}.{capability[1]}) "
                          "has no native bf16; use trainer.precision=auto or fp16")
    return BY_NAME[mode]


def cpu_override(trainer) -> Precision | None:
    """What ``trainer.precision`` forces on the CPU, or None when ``trainer.cpu_bf16`` decides (``auto``).

    ``fp32`` forces fp32. ``bf16`` is refused (on the CPU that is ``trainer.cpu_bf16=true``, which also picks
    how). ``fp16`` is refused: CPU autocast runs fp16 far slower than fp32; with ``MRC_CPU_FP16=1`` it runs
    anyway (fp16 autocast + ``GradScaler("cpu")``), so that tests and ``check.sh --dry-run`` exercise the
    GPU's fp16 path on a CPU."""
    mode = precision_mode(trainer)
    if mode == "auto":
        return None
    if mode == "fp32":
        log.info("precision fp32 on the CPU (trainer.precision=fp32)")
        return FP32
    if mode == "fp16" and os.environ.get(CPU_FP16_ENV) == "1":
        log.warning("precision fp16 + GradScaler on the CPU (%s=1): a test of the CUDA path, slow", CPU_FP16_ENV)
        return FP16
    hint = "trainer.cpu_bf16=true" if mode == "bf16" else f"{CPU_FP16_ENV}=1 (tests only: slow)"
    raise ConfigError(f"trainer.precision={mode} is for CUDA; on the CPU use trainer.precision=auto (or set {hint})")


@contextlib.contextmanager
def tf32_scope(enabled: bool, device: str) -> Iterator[None]:
    """TF32 matrix products and cuDNN convolutions on CUDA while the run lasts (``trainer.tf32``); the previous
    settings come back on exit. TF32 keeps fp32's range with a 10-bit mantissa: only fp32 products change
    (the head, and the encoder under ``precision=fp32``)."""
    if not (enabled and str(device).startswith("cuda")):
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    log.info("TF32 on for CUDA matrix products and cuDNN (trainer.tf32=true)")
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def grad_scaler(precision: Precision, device: str) -> torch.amp.GradScaler | None:
    """A GradScaler for ``device`` when ``precision`` needs one (fp16), else None."""
    return torch.amp.GradScaler(torch.device(device).type) if precision.scaler else None


def maybe_compile(net: torch.nn.Module, trainer) -> str | None:
    """``torch.compile`` the training module in place when ``trainer.compile`` (mode ``trainer.compile_mode``);
    returns the mode, or None when off. In place (``Module.compile``) keeps parameter names, so checkpoints
    and resumable states are the same as without compiling; evaluation stays eager (no recompiles for the
    eval batch shapes)."""
    if not trainer.get("compile", False):
        return None
    mode = str(trainer.get("compile_mode", "default"))
    log.info("torch.compile of the training forward + loss (mode %s); the first steps compile", mode)
    net.compile(mode=mode)
    return mode
