"""What this CPU is and which bf16 units it has: read once from ``/proc/cpuinfo`` and logged with every run
and benchmark, since rates from different hosts are not comparable and bf16 only pays off with native units."""
from __future__ import annotations

import functools
import platform

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


# auto turns bf16 on only where a bf16 matrix product measured at least this much faster than fp32: a CPU
# can have the units and still lose (an Intel Xeon with AVX512-BF16 but no AMX ran the 1024x384 @ 384x1536
# product of e5_small's FFN 1.3-1.6x *slower* in bf16 through oneDNN than fp32 through MKL), while an AMD
# EPYC with AVX512-BF16 ran it 2.3x faster. The margin keeps timing noise from flipping the choice.
BF16_MIN_SPEEDUP = 1.2


@functools.lru_cache(maxsize=1)
def bf16_matmul_speedup(m: int = 1024, k: int = 384, n: int = 1536, repeats: int = 5) -> float:
    """fp32 time / bf16 time of an (m, k) @ (k, n) product on this CPU (the best of ``repeats`` interleaved
    pairs; about 0.2 s once per process)."""
    import time

    import torch

    a, w = torch.randn(m, k), torch.randn(k, n)
    ab, wb = a.bfloat16(), w.bfloat16()
    best = {"fp32": float("inf"), "bf16": float("inf")}
    for i in range(repeats + 1):
        for name, (x, y) in (("fp32", (a, w)), ("bf16", (ab, wb))):
            t0 = time.perf_counter()
            x @ y
            if i:  # the first pair warms the kernels up
                best[name] = min(best[name], time.perf_counter() - t0)
    return best["fp32"] / best["bf16"]
