"""Measuring tools of the bench: peak resident memory sampled in a thread, and best-of-N timing."""
from __future__ import annotations

import os
import threading
import time


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


