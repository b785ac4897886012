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


def tune_threshold(nbest: dict, gold: list[GoldQuestion]) -> tuple[float, float]:
    """Threshold maximising mean F1 on ``gold``; returns (threshold, F1 in percent).

    Sweeps every per-question difference ``null - best`` (plus "never empty") in one sorted pass.
    """
    rows = []
    for g in gold:
        entry = nbest.get(g.id)
        if entry is None:
            continue
        best = entry["candidates"][0] if entry["candidates"] else None
        diff = entry["null_score"] - best["score"] if best else float("-inf")
        f1_empty = score_question("", g)[0]
        f1_answer = score_question(best["text"], g)[0] if best else f1_empty  # no candidate: "" either way
        rows.append((diff, f1_answer, f1_empty))
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
