"""glibc allocator settings for CPU training.

By default glibc serves every allocation above a (dynamic, at most 32 MB) threshold with its own
``mmap`` and returns it to the kernel on ``free``; a CPU training step allocates and frees tensors of
tens to hundreds of MB (attention probabilities, FFN activations), so every step page-faults them in
again: on the project's 2-core machine half of the CPU time of a transplant pretraining step
(batch 64 x 256, 6 x 384) was kernel time. Raising the mmap threshold and the trim threshold keeps freed
memory in the heap for reuse (measured there with attention dropout 0: 1,226 -> 1,466 tokens/s, peak RSS
4.1 -> 4.5 GB; table in experiments/pretrain/README.md, "Speed on 2 CPU cores").

The other way round, for memory-bound runs: with dynamic padding every batch has other tensor sizes,
the freed blocks fragment the heap, and RSS climbs through a run although the live memory does not
(an e5_small cpu_small run: 3.1 -> 3.9 GB over its first 100 optimizer steps; ``malloc_trim`` then gave
1.6 GB back at once). :func:`release_freed_memory` returns the free pages after each optimizer step
(``trainer.trim_freed_memory``).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import sys

log = logging.getLogger(__name__)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # mallopt parameter numbers (malloc.h)
KEEP_BYTES = 1 << 30


@functools.lru_cache(maxsize=1)
def _libc():
    """glibc, or None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def release_freed_memory() -> bool:
    """Give the heap's free pages back to the kernel (glibc ``malloc_trim(0)``); False where unavailable."""
    trim = getattr(_libc(), "malloc_trim", None)
    return bool(trim(0)) if trim is not None else False


def retain_freed_memory() -> bool:
    """Ask glibc to keep freed blocks up to 1 GB in the heap instead of unmapping them. Returns whether
    the settings took effect (False off Linux/glibc, e.g. macOS or musl; nothing changes then)."""
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        return False
    ok = all(mallopt(param, value) == 1 for param, value in
             ((M_MMAP_THRESHOLD, KEEP_BYTES), (M_TRIM_THRESHOLD, 2 * KEEP_BYTES - 1), (M_TOP_PAD, KEEP_BYTES)))
    log.info("glibc mallopt: freed memory kept for reuse (mmap/trim thresholds 1 GB): %s", ok)
    return ok
