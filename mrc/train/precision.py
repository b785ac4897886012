"""Precision on CUDA (``trainer.precision``), TF32, fp16 on the CPU for tests, and ``trainer.compile``.

A run's choice is :func:`choose_precision`: :func:`cuda_precision` on CUDA devices; on the CPU
:func:`cpu_override` first, then ``trainer.cpu_bf16``.
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Iterator

import torch
from omegaconf import DictConfig

from mrc.model.cpu import (BF16_MIN_SPEEDUP, VIAS, bf16_math_mode_unavailable, bf16_matmul_speedup, bf16_units,
                           cpu_name)
from mrc.model.quantize import cpu_has_bf16
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


def cpu_bf16_mode(value) -> str:
    """Normalise ``trainer.cpu_bf16``: ``auto`` (bf16 where the CPU has native units), ``true`` or ``false``."""
    mode = str(value).strip().lower()
    if mode not in ("auto", "true", "false"):
        raise ConfigError(f"trainer.cpu_bf16={value!r}: must be auto, true or false")
    return mode


def choose_precision(trainer: DictConfig, device: str) -> Precision:
    """The run's :class:`~mrc.train.precision.Precision`: name (``fp32``, ``bf16``, ``fp16``, ``bf16-matmul``,
    ``bf16-autocast``), autocast dtype (None: no autocast) and whether a GradScaler is needed. On CUDA
    ``trainer.precision`` decides (:func:`~mrc.train.precision.cuda_precision`; ``auto`` + an old
    ``trainer.bf16: false`` = fp32); on the CPU ``trainer.cpu_bf16`` (unless ``trainer.precision`` forces fp32 /
    fp16: :func:`~mrc.train.precision.cpu_override`), where auto = bf16 where the CPU has native bf16 units and
    one product of e5_small's FFN shape, run the way ``trainer.cpu_bf16_via`` says, measures at least
    ``BF16_MIN_SPEEDUP`` times the fp32 speed. Master weights, optimizer state, the heads' scores and losses and
    decoding stay fp32 either way."""
    if str(device).startswith("cuda"):
        chosen = cuda_precision(trainer, device)
        log.info("precision %s on %s (trainer.precision=%s, trainer.bf16=%s)", chosen.name,
                 torch.cuda.get_device_name(device), trainer.get("precision", "auto"), trainer.get("bf16", True))
        return chosen
    forced = cpu_override(trainer)
    if forced is not None:
        return forced
    mode, native = cpu_bf16_mode(trainer.get("cpu_bf16", "auto")), cpu_has_bf16()
    via = str(trainer.get("cpu_bf16_via", "matmul"))
    if via not in VIAS:
        raise ConfigError(f"trainer.cpu_bf16_via={via!r}: must be one of {', '.join(VIAS)}")
    why = bf16_math_mode_unavailable() if via == "matmul" and mode != "false" else None
    if why:
        log.warning("trainer.cpu_bf16_via=matmul: %s; bf16 runs via autocast instead", why)
        via = "autocast"
    units = ", ".join(bf16_units()) or "no AVX512-BF16 / AMX units"
    if mode == "auto" and native:
        speedup = bf16_matmul_speedup(via)
        units += f"; a bf16 product via {via} measured {speedup:.2f}x the fp32 speed here"
        native = speedup >= BF16_MIN_SPEEDUP
    if mode == "false" or (mode == "auto" and not native):
        log.info("precision fp32 on the CPU (%s; %s; trainer.cpu_bf16=%s)", cpu_name(), units, mode)
        return Precision("fp32")
    if not native:
        log.warning("trainer.cpu_bf16=true: this CPU (%s) has no AVX512-BF16 / AMX units; bf16 runs emulated, "
                    "slower than fp32 (set trainer.cpu_bf16=auto)", cpu_name())
    log.info("precision bf16 via %s on the CPU (%s; %s; trainer.cpu_bf16=%s)", via, cpu_name(), units, mode)
    return Precision(f"bf16-{via}", torch.bfloat16 if via == "autocast" else None)
