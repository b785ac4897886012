"""Measuring tools of the bench: peak resident memory sampled in a thread, best-of-N timing, and the device
helpers of the training-speed bench (synchronise, peak memory, release between runs)."""
from __future__ import annotations

import contextlib
import gc
import os
import threading
import time

import torch


class PeakRSS:
    """Samples this process's resident memory in a thread; ``peak_mb`` is the maximum seen in the block."""

    def __init__(self, every_s: float = 0.005):
        self.every_s, self.peak, self._stop = every_s, 0, threading.Event()

    @staticmethod
    def current() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            time.sleep(self.every_s)

    def __enter__(self):
        self.peak = self.current()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.current())

    @property
    def peak_mb(self) -> float:
        return round(self.peak / 2**20, 1)


def best_of(n: int, run):
    """Run ``run()`` n times; keep the result with the smallest ``seconds`` (timing noise only adds time)."""
    results = [run() for _ in range(max(n, 1))]
    return min(results, key=lambda r: r[-1]["seconds"] if isinstance(r, tuple) else r["seconds"])




def sync(device: str) -> None:
    """Wait for the GPU's queued work (a no-op on the CPU): timings must include it."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    """Start counting CUDA's peak allocated memory from now (a no-op on the CPU)."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def memory_probe(device: str):
    """A :class:`PeakRSS` sampler on the CPU; nothing on CUDA (the allocator counts its own peak)."""
    return contextlib.nullcontext() if device.startswith("cuda") else PeakRSS()


def peak_memory(device: str, rss: PeakRSS | None) -> tuple[float, str]:
    """(peak MiB, what it counts): CUDA's ``max_memory_allocated`` since :func:`reset_peak`, or ``rss``'s peak."""
    if device.startswith("cuda"):
        return round(torch.cuda.max_memory_allocated() / 2**20, 1), "cuda max_memory_allocated"
    return rss.peak_mb, "process RSS"


def release(device: str, compiled: bool) -> None:
    """Free the last run's memory before the next one's peak is measured (compiled graphs keep their module)."""
    if compiled:
        torch._dynamo.reset()
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
