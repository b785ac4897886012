"""Statistics for ``mrc.report``: seed aggregates, paired bootstrap, Wilcoxon and Holm–Bonferroni.

Everything here is pure: plain numbers and ``{question id: score}`` maps in, numbers out.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

# Bootstrap resamples are drawn in chunks so that memory stays below ~32 MB of indices.
_MAX_CHUNK_ELEMENTS = 4_000_000


@dataclass(frozen=True)
class BootstrapResult:
    """Paired-bootstrap summary of the mean of paired differences."""

    ci_low: float
    ci_high: float
    p_value: float


@dataclass(frozen=True)
class Comparison:
    """A − B on per-question F1 (scores in [0, 1]; ``delta`` and the CI are in points, ×100), paired over
    the ``n_questions`` ids both have; ``unpaired_a`` / ``unpaired_b``: ids only A / only B has (left out)."""

    n_questions: int
    delta: float
    ci_low: float
    ci_high: float
    p_bootstrap: float
    p_wilcoxon: float
    a_better: float
    b_better: float
    unpaired_a: int = 0
    unpaired_b: int = 0


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1) of ``values``; NaN where undefined."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return math.nan, math.nan
    std = float(np.std(arr, ddof=1)) if arr.size > 1 else math.nan
    return float(np.mean(arr)), std


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the input order.

    Sorted ascending, the i-th smallest (0-based) of m p-values is multiplied by (m − i);
    a running maximum keeps the adjusted values monotone, and they are capped at 1.
    NaN entries are left as NaN and do not count towards m.
    """
    valid = [i for i, p in enumerate(pvalues) if not math.isnan(p)]
    order = sorted(valid, key=lambda i: pvalues[i])
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for rank, idx in enumerate(order):
        running = max(running, (len(order) - rank) * pvalues[idx])
        adjusted[idx] = min(1.0, running)
    return adjusted


def _bootstrap_means(diffs: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``n_resamples`` resamples (with replacement) of ``diffs``."""
    chunk = max(1, _MAX_CHUNK_ELEMENTS // diffs.size)
    means = []
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        idx = rng.integers(0, diffs.size, size=(size, diffs.size))
        means.append(diffs[idx].mean(axis=1))
    return np.concatenate(means)


def paired_bootstrap(diffs: Sequence[float], n_resamples: int = 2000, seed: int = 0) -> BootstrapResult:
    """95% percentile CI and two-sided p-value of the mean paired difference.

    Questions are resampled with replacement (``numpy.random.default_rng(seed)``). The p-value
    tests mean = 0 with the bootstrap distribution shifted to the null:
    p = (1 + #{|m* − m| ≥ |m|}) / (N + 1), so it lies in (0, 1] and is 1 when all differences are 0.
    """
    arr = np.asarray(diffs, dtype=float)
    if arr.size == 0:
        return BootstrapResult(math.nan, math.nan, math.nan)
    observed = float(arr.mean())
    means = _bootstrap_means(arr, n_resamples, np.random.default_rng(seed))
    low, high = np.percentile(means, [2.5, 97.5])
    extreme = int(np.count_nonzero(np.abs(means - observed) >= abs(observed)))
    p_value = min(1.0, (1 + extreme) / (n_resamples + 1))
    return BootstrapResult(float(low), float(high), p_value)


def wilcoxon_p(diffs: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value (scipy defaults); 1.0 if all differences are 0."""
    arr = np.asarray(diffs, dtype=float)
    if arr.size == 0:
        return math.nan
    if not np.any(arr != 0):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-sample / ties notes are expected on tiny splits
        return float(stats.wilcoxon(arr).pvalue)


def seed_averaged(per_seed: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Per-question mean over the seeds that scored the question."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for scores in per_seed:
        for qid, value in scores.items():
            sums[qid] = sums.get(qid, 0.0) + float(value)
            counts[qid] = counts.get(qid, 0) + 1
    return {qid: sums[qid] / counts[qid] for qid in sums}


def paired_differences(a: Mapping[str, float], b: Mapping[str, float]) -> np.ndarray:
    """A − B over the question ids both maps have (sorted by id, so the order is reproducible)."""
    common = sorted(set(a) & set(b))
    return np.array([a[qid] - b[qid] for qid in common], dtype=float)


def compare(a: Mapping[str, float], b: Mapping[str, float], n_resamples: int = 2000,
            seed: int = 0) -> Comparison:
    """Paired comparison of two seed-averaged per-question F1 maps (values in [0, 1])."""
    diffs = paired_differences(a, b)
    boot = paired_bootstrap(diffs, n_resamples, seed)
    n = int(diffs.size)
    return Comparison(
        n_questions=n,
        delta=100.0 * float(diffs.mean()) if n else math.nan,
        ci_low=100.0 * boot.ci_low, ci_high=100.0 * boot.ci_high,
        p_bootstrap=boot.p_value, p_wilcoxon=wilcoxon_p(diffs),
        a_better=float(np.mean(diffs > 0)) if n else math.nan,
        b_better=float(np.mean(diffs < 0)) if n else math.nan,
        unpaired_a=len(a.keys() - b.keys()), unpaired_b=len(b.keys() - a.keys()),
    )
