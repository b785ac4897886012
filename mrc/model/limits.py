"""The allowed range of every number that a checkpoint's ``mrc.yaml`` (:mod:`mrc.model.checkpoint`) or a
resumable state (:mod:`mrc.train.resume`) holds, in one table. A type check alone lets ``decode.n_best: 0``
answer "" to every question and ``n_best: 1e12`` allocate terabytes, and ``epoch: -5`` in a state train
seven epochs; each caller refuses a value outside its range with one line naming the file and the key.
"""
from __future__ import annotations

import math

# key -> (min, max), inclusive; None: unbounded. An int bound asks for an integer, a float bound for a number.
RANGES: dict[str, tuple[int | float | None, int | float | None]] = {
    # 16 tokens hold [CLS] q [SEP] c [SEP] with a few of each; no encoder here has more than 8192 positions
    "data.max_len": (16, 8192),
    # at least one context token must remain: at most max_len - 4 (mrc.data.features.Geometry.budget)
    "data.max_query_len": (1, 8192),
    # the overlap of two windows (mrc.data.features.Geometry): 0 (none) up to its budget - 1
    "data.doc_stride": (0, 8192),
    # 0 answers "" to everything; the decoder holds (windows x n_best) candidates
    "decode.n_best": (1, 1000),
    # or null (no limit); a span never outgrows a window
    "decode.max_answer_len": (1, 8192),
    # a resumable state: the epoch to run next, 1 .. trainer epochs + 1 (every epoch done)
    "state.epoch": (1, None),
    # its counters: optimizer steps, batches of the epoch consumed, windows seen, seconds spent
    "state.step": (0, None),
    "state.batch": (0, None),
    "state.n_loss": (0, None),
    "state.windows": (0, None),
    "state.windows_trained": (0, None),
    "state.seconds": (0.0, None),
    "state.train_seconds": (0.0, None),
    "state.eval_seconds": (0.0, None),
    "state.total_loss": (None, None),  # any finite number
}


def out_of_range(key: str, value, lo=None, hi=None) -> str | None:
    """Why ``value`` is not allowed for ``key`` (e.g. "must be an integer in 1..1000"), or None when it is;
    ``lo`` / ``hi`` tighten the table's bounds where they depend on other values."""
    t_lo, t_hi = RANGES[key]
    lo = t_lo if lo is None else lo if t_lo is None else max(lo, t_lo)
    hi = t_hi if hi is None else hi if t_hi is None else min(hi, t_hi)
    integer = isinstance(t_lo, int) or isinstance(t_hi, int)
    kind = "an integer" if integer else "a finite number"
    span = f"{'' if lo is None else lo}..{'' if hi is None else hi}"
    allowed = f"must be {kind}" + (f" in {span}" if lo is not None or hi is not None else "")
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        return allowed
    if not integer and not math.isfinite(value):
        return allowed
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        return allowed
    return None


def unreadable_version(value, current: int) -> str | None:
    """Why a file's format ``value`` cannot be read by code that reads versions 1 to ``current`` (None: it can);
    checkpoints (``format``) and resume states (``version``) share this."""
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= current:
        return None
    newer = isinstance(value, int) and not isinstance(value, bool) and value > current
    why = "a newer version of this project wrote it" if newer else "not a format of this project"
    return f"{why}; this code reads versions 1 to {current}"
