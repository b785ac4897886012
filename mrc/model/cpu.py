"""What this CPU is and which bf16 units it has: read once from ``/proc/cpuinfo`` and logged with every run
and benchmark, since rates from different hosts are not comparable and bf16 only pays off with native units."""
from __future__ import annotations

import contextlib
import functools
import platform
from collections.abc import Iterator

# Flags (as /proc/cpuinfo spells them) of the instructions that multiply bf16 natively: AVX512-BF16
# (Cooper Lake, Sapphire Rapids, AMD Zen 4) and AMX (Sapphire Rapids on). Without either, oneDNN still
# runs bf16 on any AVX512 core, but by converting to fp32 around every product: slower than fp32.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    """The first processor's ``key: value`` lines of /proc/cpuinfo ({} where there is none)."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    break  # one processor is enough: the others are the same chip
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else the platform's processor or machine string."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU's feature flags (empty off Linux)."""
    return set(_cpuinfo().get("flags", "").split())


def bf16_units() -> list[str]:
    """The native bf16 instruction sets this CPU reports (e.g. ``["avx512_bf16", "amx_bf16"]``; [] for none)."""
    flags = cpu_flags()
    return [f for f in BF16_FLAGS if f in flags]


# Two ways to run bf16 on the CPU (``trainer.cpu_bf16_via``):
# - matmul: tensors stay fp32 and oneDNN computes fp32 matrix products with bf16 inputs and fp32 accumulation
#   (its bf16 "math mode", torch.backends.mkldnn.matmul.fp32_precision = "bf16"): no cast ops anywhere.
# - autocast: torch.autocast casts the encoder's activations and weights to bf16 around every product.
# Neither is faster than fp32 on every CPU with bf16 units: on the project's Intel Xeon (AVX512-BF16, no AMX) the
# 1024x384 @ 384x1536 product ran 0.86-0.91x (matmul) and 0.51-0.57x (autocast) the fp32 speed on an idle
# machine (experiments/perf/bf16_training.md), so auto measures before it chooses.
VIAS = ("matmul", "autocast")
# auto turns bf16 on only where the chosen way measured at least this much faster than fp32 on one product of
# e5_small's FFN shape: a CPU can have the units and still lose, and the margin keeps noise from flipping it.
BF16_MIN_SPEEDUP = 1.2


@contextlib.contextmanager
def matmul_precision_scope() -> Iterator[None]:
    """Restore oneDNN's fp32 matrix-product precision on exit (a run may switch it to bf16)."""
    import torch

    before = torch.backends.mkldnn.matmul.fp32_precision
    try:
        yield
    finally:
        torch.backends.mkldnn.matmul.fp32_precision = before


def set_bf16_matmuls(enabled: bool) -> None:
    """fp32 matrix products with bf16 inputs and fp32 accumulation (oneDNN's bf16 math mode) on or off."""
    import torch

    torch.backends.mkldnn.matmul.fp32_precision = "bf16" if enabled else "ieee"


@functools.lru_cache(maxsize=1)
def bf16_math_mode_works() -> bool:
    """Whether oneDNN's bf16 math mode changes a linear layer's result here. Some torch CPU builds run
    ``nn.functional.linear`` on MKL's sgemm, which ignores the mode: the product stays bit-identical to fp32, so
    ``trainer.cpu_bf16_via=matmul`` would train in fp32 while the run log says bf16 (measured on torch 2.13 on an
    Intel Xeon: experiments/perf/bf16_training.md)."""
    import torch
    from torch.nn.functional import linear

    g = torch.Generator().manual_seed(0)
    a, w = torch.randn(64, 384, generator=g), torch.randn(256, 384, generator=g)
    with matmul_precision_scope():
        set_bf16_matmuls(False)
        fp32 = linear(a, w)
        set_bf16_matmuls(True)
        return not torch.equal(fp32, linear(a, w))


def bf16_math_mode_unavailable() -> str | None:
    """Why oneDNN's bf16 math mode cannot be used on this machine, or None where it works: the one check that
    every user of the mode (``trainer.cpu_bf16_via=matmul``, ``mrc.bench --precision bf16-matmul``) makes before
    calling something bf16 that would be fp32 underneath."""
    if bf16_math_mode_works():
        return None
    import torch

    return (f"this torch build ({torch.__version__}) ignores oneDNN's bf16 math mode for linear layers "
            "(a product came out bit-identical to fp32)")


@functools.lru_cache(maxsize=4)
def bf16_matmul_speedup(via: str = "matmul", m: int = 1024, k: int = 384, n: int = 1536, repeats: int = 10) -> float:
    """fp32 time / bf16 time of an (m, k) x (k, n) linear layer on this CPU, bf16 run ``via`` oneDNN's math mode
    or bf16 tensors (the best of ``repeats`` interleaved pairs; about 0.2 s once per process)."""
    import time

    import torch
    from torch.nn.functional import linear

    a, w = torch.randn(m, k), torch.randn(n, k)
    ab, wb = a.bfloat16(), w.bfloat16()
    best = {"fp32": float("inf"), "bf16": float("inf")}
    with matmul_precision_scope():
        for i in range(repeats + 1):
            for name in ("fp32", "bf16"):
                set_bf16_matmuls(name == "bf16" and via == "matmul")
                x, y = (ab, wb) if name == "bf16" and via == "autocast" else (a, w)
                t0 = time.perf_counter()
                linear(x, y)
                if i:  # the first pair warms the kernels up
                    best[name] = min(best[name], time.perf_counter() - t0)
    return best["fp32"] / best["bf16"]
