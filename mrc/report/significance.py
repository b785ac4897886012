"""Pairwise significance for ``mrc.report``: per-question F1 averaged over seeds, which pairs to compare
(every pair, against a baseline, or across one override), the tests (:mod:`mrc.report.stats`) and Holm
adjustment over all of them."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from mrc.report import stats as report_stats
from mrc.report.jobs import Configuration, Job, ReportError, identity_label
from mrc.report.records import SCORES_SUFFIXES, read_scores
from mrc.report.stats import Comparison


@dataclass
class SignificanceRow:
    """One pairwise comparison on one split, with Holm-adjusted p-values filled in later."""

    split: str
    a: str
    b: str
    result: Comparison
    p_bootstrap_holm: float = math.nan
    p_wilcoxon_holm: float = math.nan


def load_scores(job: Job, split: str) -> tuple[dict[str, float] | None, str | None]:
    """Per-question F1 from ``scores/<split>.json`` (a run) or ``scores/<split>.tsv`` (a record,
    :mod:`mrc.report.records`) keyed by :func:`~mrc.report.records.question_key`, or None and a note why not."""
    file = next((f for f in (job.path / "scores" / f"{split}{ext}" for ext in SCORES_SUFFIXES) if f.is_file()), None)
    if file is None:
        return None, None
    try:
        return read_scores(file), None
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError, AttributeError) as exc:
        return None, f"{job.display}: unreadable scores/{file.name} ({type(exc).__name__}: {exc}); left out"


def config_scores(config: Configuration, split: str, notes: list[str]) -> dict[str, float] | None:
    """Per-question F1 averaged over the configuration's seeds, or None without any scores file."""
    per_seed = []
    for job in config.jobs:
        scores, note = load_scores(job, split)
        if note:
            notes.append(note)
        if scores is not None:
            per_seed.append(scores)
    return report_stats.seed_averaged(per_seed) if per_seed else None


def comparison_pairs(labels: Sequence[str], baseline: str | None, across: Sequence[str] = (),
                     identities: dict[str, dict[str, str]] | None = None) -> list[tuple[str, str]]:
    """(A, B) pairs to test. Neither ``baseline`` nor ``across``: every pair. Otherwise the union of every
    configuration vs ``baseline`` (A = the other one) and, for each key in ``across``, every pair whose
    identities differ in that key only (e.g. ``encoder``: each encoder against each other, head held fixed)."""
    if baseline is None and not across:
        return list(combinations(labels, 2))
    pairs = [(label, baseline) for label in labels if baseline is not None and label != baseline]
    identities = identities or {}
    for a, b in combinations(labels, 2):
        ia, ib = identities.get(a, {}), identities.get(b, {})
        differ = {k for k in ia.keys() | ib.keys() if ia.get(k) != ib.get(k)}
        if len(differ) == 1 and differ <= set(across) and (a, b) not in pairs and (b, a) not in pairs:
            pairs.append((a, b))
    return pairs


def significance(configs: Sequence[Configuration], splits: Sequence[str], baseline: str | None,
                 n_resamples: int, seed: int, notes: list[str], across: Sequence[str] = ()) -> list[SignificanceRow]:
    """Pairwise comparisons on each split, Holm-adjusted across all of them."""
    identities = {c.label: c.identity for c in configs}
    rows = []
    for split in splits:
        scores = {c.label: config_scores(c, split, notes) for c in configs}
        missing = [label for label, s in scores.items() if s is None]
        if missing:
            notes.append(f"no scores/{split}.json (or .tsv) for: {'; '.join(missing)} (left out of the {split} comparisons)")
        labels = [label for label, s in scores.items() if s is not None]
        base = baseline if baseline in labels else None
        if baseline is not None and base is None and not across:
            continue
        for a, b in comparison_pairs(labels, base, across, identities):
            rows.append(SignificanceRow(split, a, b, report_stats.compare(scores[a], scores[b], n_resamples, seed)))
    for attr, adjusted_attr in (("p_bootstrap", "p_bootstrap_holm"), ("p_wilcoxon", "p_wilcoxon_holm")):
        adjusted = report_stats.holm([getattr(r.result, attr) for r in rows])
        for row, p in zip(rows, adjusted):
            setattr(row, adjusted_attr, p)
    return rows


def resolve_baseline(baseline: str | None, configs: Sequence[Configuration], keys: Sequence[str]) -> str | None:
    """The full label of ``--baseline`` (given as a full label or as its varying ``key=value`` part)."""
    if baseline is None:
        return None
    for config in configs:
        short = identity_label({k: v for k, v in config.identity.items() if k in keys})
        if baseline in (config.label, short):
            return config.label
    labels = "; ".join(c.label for c in configs)
    raise ReportError(f"--baseline {baseline!r} matches no configuration; labels: {labels}")


def significance_rows(rows: Sequence[SignificanceRow]) -> list[dict[str, Any]]:
    """Plain dicts for ``significance.csv``."""
    return [{"split": r.split, "a": r.a, "b": r.b, "n_questions": r.result.n_questions,
             "delta_f1": r.result.delta, "ci_low": r.result.ci_low, "ci_high": r.result.ci_high,
             "p_bootstrap": r.result.p_bootstrap, "p_bootstrap_holm": r.p_bootstrap_holm,
             "p_wilcoxon": r.result.p_wilcoxon, "p_wilcoxon_holm": r.p_wilcoxon_holm,
             "share_a_better": r.result.a_better, "share_b_better": r.result.b_better,
             "unpaired_a": r.result.unpaired_a, "unpaired_b": r.result.unpaired_b} for r in rows]


SIGNIFICANCE_COLUMNS = ("split", "a", "b", "n_questions", "delta_f1", "ci_low", "ci_high", "p_bootstrap",
                        "p_bootstrap_holm", "p_wilcoxon", "p_wilcoxon_holm", "share_a_better", "share_b_better",
                        "unpaired_a", "unpaired_b")


def unpaired_notes(rows: Sequence[SignificanceRow], names: dict[str, str] | None = None) -> list[str]:
    """One line per comparison whose configurations scored different questions: the test pairs the shared
    ones only, so say how many each side lost (a partial overlap otherwise passes unnoticed)."""
    names = names or {}
    notes = []
    for r in rows:
        c = r.result
        if c.unpaired_a or c.unpaired_b:
            a, b = names.get(r.a, r.a), names.get(r.b, r.b)
            notes.append(f"{r.split}, {a} vs {b}: paired on {c.n_questions} shared questions; {c.unpaired_a} of "
                         f"{a}'s and {c.unpaired_b} of {b}'s had no partner")
    return notes
