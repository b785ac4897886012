"""Abstention and calibration metrics over N questions (pure numpy/scikit-learn; no model, no I/O).

Each question i has a confidence ``conf[i]`` in [0, 1] that the *returned* answer is right (the returned
answer may be "" = abstaining, which is right on an unanswerable question) and that answer's official F1
``f1[i]`` in [0, 1] (:func:`mrc.eval.metric.score_question`). Every metric takes F1 as the target:
"correctness" is fractional, as in selective QA scored with F1 (Kamath et al. 2020, "Selective Question
Answering under Domain Shift"). The pipeline should pass the per-question F1 as ``correct`` everywhere;
only :func:`macro_ce` binarises it (F1 >= ``threshold``), as its definition needs right/wrong classes.

All values returned are fractions in [0, 1] (not percent), as plain Python floats.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from sklearn.metrics import mean_squared_error

COVERAGE_TARGETS = (0.8, 0.9)  # selective F1 targets reported by abstention_summary (coverage_at_80, _90)


def as_unit_vector(values, name: str) -> np.ndarray:
    """``values`` as a 1-D float array (N,) of finite numbers in [0, 1], or a ValueError naming ``name``."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D sequence, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    if arr.min() < 0.0 or arr.max() > 1.0:
        raise ValueError(f"{name}: values must lie in [0, 1] (got {arr.min():g} .. {arr.max():g})")
    return arr


def _pair(conf, correct) -> tuple[np.ndarray, np.ndarray]:
    """Validated (conf, correct), both (N,), same length."""
    c, y = as_unit_vector(conf, "conf"), as_unit_vector(correct, "correct")
    if c.shape != y.shape:
        raise ValueError(f"conf and correct differ in length ({c.size} vs {y.size})")
    return c, y


def _tie_means(sorted_conf: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``values`` (N,) with each run of equal ``sorted_conf`` replaced by its mean, and the runs' starts
    (G,) and sizes (G,). Confidence cannot tell tied questions apart, so none of them is placed before
    another: every prefix (or bin) holding part of a tie group gets the group's mean. Every prefix sum is
    then its expectation over random orders of the ties, and no result depends on the input order."""
    starts = np.flatnonzero(np.r_[True, sorted_conf[1:] != sorted_conf[:-1]])  # (G,)
    sizes = np.diff(np.r_[starts, sorted_conf.size])  # (G,)
    return np.repeat(np.add.reduceat(values, starts) / sizes, sizes), starts, sizes


def ece(conf, correct, n_bins: int = 15) -> float:
    """Expected calibration error over ``n_bins`` equal-mass bins of the confidence-sorted questions.

    Sorted by confidence and split into ``n_bins`` bins whose sizes differ by at most one
    (``np.array_split``; fewer than ``n_bins`` questions: one per bin), ECE = sum over bins of
    |bin|/N * |mean conf - mean correct|. Tied confidences share their mean correctness (``_tie_means``),
    so a tie group cut by a bin edge counts the same whatever the input order. ``correct``: the F1 (or 0/1).
    """
    if not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    c, y = _pair(conf, correct)
    order = np.lexsort((y, c))  # conf ascending; ties by correctness so that float sums are reproducible
    c = c[order]
    y, _, _ = _tie_means(c, y[order])
    total = 0.0
    for idx in np.array_split(np.arange(c.size), n_bins):
        if idx.size:
            total += idx.size * abs(c[idx].mean() - y[idx].mean())
    return float(total / c.size)


def macro_ce(conf, correct, threshold: float = 0.5) -> float:
    """MacroCE (Si et al. 2022, "Re-Examining Calibration: The Case of Question Answering").

    Instances are right when ``correct >= threshold`` (F1 >= 0.5 by default; the paper uses exact match).
    ICE_pos = mean of (1 - conf) over right instances, ICE_neg = mean of conf over wrong ones, and
    MacroCE = (ICE_pos + ICE_neg) / 2. When one class is absent its term is undefined and MacroCE is the
    other term alone.
    """
    c, y = _pair(conf, correct)
    right = y >= threshold
    terms = []
    if right.any():
        terms.append(float(np.mean(1.0 - c[right])))  # ICE_pos
    if (~right).any():
        terms.append(float(np.mean(c[~right])))  # ICE_neg
    return float(np.mean(terms))


def brier(conf, correct) -> float:
    """Brier score: mean of (conf - correct)^2; ``correct`` may be fractional (F1) or 0/1.

    (sklearn's ``brier_score_loss`` accepts binary targets only; for F1 targets the same quantity is the
    mean squared error, so that is what is computed.)
    """
    c, y = _pair(conf, correct)
    return float(mean_squared_error(y, c))


def _ranked(conf, f1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """F1 (N,) of the questions by confidence, highest first, tie groups averaged (``_tie_means``), with
    the groups' starts (G,) and sizes (G,)."""
    c, f = _pair(conf, f1)
    order = np.lexsort((f, -c))  # conf descending; ties by F1 so that float sums are reproducible too
    return _tie_means(c[order], f[order])


def risk_coverage(conf, f1) -> tuple[np.ndarray, np.ndarray]:
    """(coverage, risk), both (N,): answering the k most confident questions, coverage = k/N and
    risk = 1 - mean F1 of those k, for k = 1..N. Tied confidences share their mean F1 (``_tie_means``)."""
    f, _, _ = _ranked(conf, f1)
    k = np.arange(1, f.size + 1)
    return k / f.size, 1.0 - np.cumsum(f) / k


def aurc(conf, f1) -> float:
    """Area under the risk-coverage curve: the mean risk over k = 1..N (discrete AURC; lower is better)."""
    _, risk = risk_coverage(conf, f1)
    return float(risk.mean())


def coverage_at(conf, f1, target: float) -> float:
    """Largest coverage whose selective F1 (mean F1 of the answered top-k) is >= ``target``; 0.0 if none.

    Only cuts a confidence threshold can make are considered: a group of tied confidences is answered
    whole or not at all.
    """
    f, starts, sizes = _ranked(conf, f1)
    ends = starts + sizes  # (G,) k after each whole tie group
    selective = np.cumsum(f)[ends - 1] / ends
    ok = np.flatnonzero(selective >= target - 1e-12)  # tolerance: sums of floats
    return float(ends[ok[-1]] / f.size) if ok.size else 0.0


def paired_bootstrap(metric_fn: Callable[..., float], a_args: Sequence, b_args: Sequence, n: int = 1000,
                     seed: int = 0) -> dict[str, float]:
    """Paired bootstrap of metric_fn(*a_args) - metric_fn(*b_args) over the same N questions.

    ``a_args`` / ``b_args`` are tuples of per-question arrays, each (N,) in the same question order (e.g.
    ``(calibrated_conf, f1)`` vs ``(raw_conf, f1)``); each resample draws N question indices with replacement
    (``numpy.random.default_rng(seed)``) and applies them to every array of both sides. Returns ``delta``
    (observed difference), the 95 % percentile CI ``ci_low`` / ``ci_high`` and a two-sided ``p_value``
    for delta = 0 from the bootstrap distribution shifted to the null, p = (1 + #{|d* - d| >= |d|}) / (n + 1)
    (the convention of ``mrc.report.stats.paired_bootstrap``, which this layer may not import).
    """
    arrays_a = [np.asarray(x) for x in a_args]
    arrays_b = [np.asarray(x) for x in b_args]
    lengths = {len(x) for x in arrays_a + arrays_b}
    if len(lengths) != 1 or 0 in lengths:
        raise ValueError(f"paired_bootstrap: every array must hold the same N > 0 questions (lengths {sorted(lengths)})")
    if n < 1:
        raise ValueError(f"paired_bootstrap: n must be >= 1, got {n}")
    size = lengths.pop()
    observed = float(metric_fn(*arrays_a) - metric_fn(*arrays_b))
    rng = np.random.default_rng(seed)
    deltas = np.empty(n)  # (n,)
    for r in range(n):
        idx = rng.integers(0, size, size)
        deltas[r] = metric_fn(*(x[idx] for x in arrays_a)) - metric_fn(*(x[idx] for x in arrays_b))
    low, high = np.percentile(deltas, [2.5, 97.5])
    extreme = int(np.count_nonzero(np.abs(deltas - observed) >= abs(observed)))
    return {"delta": observed, "ci_low": float(low), "ci_high": float(high),
            "p_value": min(1.0, (1 + extreme) / (n + 1)), "n_resamples": n, "n": size}


def _mean_or_none(values: np.ndarray) -> float | None:
    """Mean of ``values``, or None (JSON null) when empty."""
    return float(values.mean()) if values.size else None


def abstention_summary(conf, f1, has_answer=None, n_bins: int = 15, macro_threshold: float = 0.5) -> dict:
    """Every abstention metric of one split (or a pool of splits) as one JSON-ready dict of fractions.

    Keys: n, f1 (mean F1 of the returned answers), ece, macro_ce, brier, aurc, coverage_at_80,
    coverage_at_90; with ``has_answer`` (N,) bool also n_has_ans / n_no_ans and has_ans_f1 / no_ans_f1 (None
    when a group is empty).
    """
    c, f = _pair(conf, f1)
    out = {"n": int(c.size), "f1": float(f.mean()), "ece": ece(c, f, n_bins), "macro_ce": macro_ce(c, f, macro_threshold),
           "brier": brier(c, f), "aurc": aurc(c, f)}
    for target in COVERAGE_TARGETS:
        out[f"coverage_at_{round(100 * target)}"] = coverage_at(c, f, target)
    if has_answer is not None:
        has = np.asarray(has_answer)
        if has.shape != c.shape or not np.isin(has, (0, 1)).all():
            raise ValueError(f"has_answer: expected {c.size} bools, got {has.dtype} {has.shape}")
        has = has.astype(bool)
        out.update(n_has_ans=int(has.sum()), n_no_ans=int((~has).sum()),
                   has_ans_f1=_mean_or_none(f[has]), no_ans_f1=_mean_or_none(f[~has]))
    return out
