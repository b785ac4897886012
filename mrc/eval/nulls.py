"""Unanswerable questions: apply a null threshold to n-best output, or tune it on a split.

A question is answered "" when ``null_score - best_span_score > threshold`` (see mrc.eval.inference).
"""
from __future__ import annotations

from mrc.eval.metric import GoldQuestion, score_question


def apply_threshold(nbest: dict, threshold: float | None) -> dict[str, str]:
    """Predictions from n-best lists: the best span, or "" where the null score wins by > threshold."""
    out = {}
    for qid, entry in nbest.items():
        cands = entry["candidates"]
        if not cands or (threshold is not None and entry["null_score"] - cands[0]["score"] > threshold):
            out[qid] = ""
        else:
            out[qid] = cands[0]["text"]
    return out


TUNE_FOR = ("f1", "answerable_loss")  # decode.tune_for


def _rows(nbest: dict, gold: list[GoldQuestion]) -> list[tuple[float, float, float, bool]]:
    """(null - best, F1 answering, F1 abstaining, answerable) per question of ``gold`` that has n-best output."""
    rows = []
    for g in gold:
        entry = nbest.get(g.id)
        if entry is None:
            continue
        best = entry["candidates"][0] if entry["candidates"] else None
        diff = entry["null_score"] - best["score"] if best else float("-inf")
        f1_empty = score_question("", g)[0]
        f1_answer = score_question(best["text"], g)[0] if best else f1_empty  # no candidate: "" either way
        rows.append((diff, f1_answer, f1_empty, not g.is_impossible and any(a.strip() for a in g.answers)))
    return rows


def tune_threshold_for_loss(nbest: dict, gold: list[GoldQuestion], max_loss: float) -> tuple[float | None, float]:
    """The lowest threshold (the most abstention) at which the answerable questions of ``gold`` lose at most
    ``max_loss`` F1 points (mean over them, in percent) against always answering; returns (threshold, the
    loss in points). None (always answer) when ``gold`` has no answerable question with n-best output.

    Abstaining on an answerable question costs the F1 its best span would have scored, so questions are
    given up in decreasing ``null - best`` order while the summed cost stays within the budget; questions
    with the same difference go together (a threshold cannot split them)."""
    rows = sorted((r for r in _rows(nbest, gold) if r[3]), key=lambda r: r[0], reverse=True)
    if not rows:
        return None, 0.0
    budget = max_loss / 100.0 * len(rows)
    lost, k = 0.0, 0
    while k < len(rows):
        j = k
        group = 0.0
        while j < len(rows) and rows[j][0] == rows[k][0]:
            group += rows[j][1] - rows[j][2]
            j += 1
        if lost + group > budget + 1e-12:
            break
        lost, k = lost + group, j
    # Answer iff null - best <= threshold: the first question kept sets it; all given up: below the smallest.
    threshold = rows[k][0] if k < len(rows) else rows[-1][0] - 1.0
    if threshold == float("-inf"):  # only questions without a candidate are kept: they answer "" anyway
        threshold = -1e9
    return float(threshold), round(100.0 * lost / len(rows), 3)


def tune_threshold(nbest: dict, gold: list[GoldQuestion]) -> tuple[float, float]:
    """Threshold maximising mean F1 on ``gold``; returns (threshold, F1 in percent).

    Sweeps every per-question difference ``null - best`` (plus "never empty") in one sorted pass.
    """
    rows = [r[:3] for r in _rows(nbest, gold)]
    if not rows:
        return 0.0, 0.0
    rows.sort(key=lambda r: r[0])
    # Threshold just below the smallest diff: everything empty; raising it past each diff answers that question.
    total = sum(r[2] for r in rows)
    best_t, best_total = rows[0][0] - 1.0, total
    for k, (diff, f1_answer, f1_empty) in enumerate(rows):
        total += f1_answer - f1_empty
        tie_continues = k + 1 < len(rows) and rows[k + 1][0] == diff  # a threshold answers all ties at once
        if not tie_continues and total > best_total:
            best_t, best_total = diff, total
    return float(best_t), round(100.0 * best_total / len(gold), 3)
