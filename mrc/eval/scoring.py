"""Scoring a split: predict its windows, decode answers, score them with the official metric, and tune the null
threshold on one split for all of them. Used by the training run after an epoch and by re-scoring scripts."""
from __future__ import annotations

import logging
import time

from mrc.eval.inference import postprocess, score_windows
from mrc.eval.metric import breakdown, evaluate
from mrc.eval.nulls import apply_threshold, tune_threshold, tune_threshold_for_loss
from mrc.eval.split import Split

log = logging.getLogger(__name__)


def score(split: Split, predictions: dict[str, str]) -> tuple[dict, dict]:
    """Official F1/EM of ``predictions`` on ``split`` with per-type / HasAns / NoAns groups, and per question."""
    summary, per_question = evaluate(split.gold, predictions)
    summary.update(breakdown(split.gold, per_question))
    return summary, per_question


def evaluate_split(model, split: Split, decode, *, batch_size: int, device, pad_id: int, amp_dtype=None,
                   progress: bool = False) -> dict:
    """Predict one split (windows already cut) and score it with the official metric. ``decode``: the config's
    ``decode`` section (``max_answer_len``, ``n_best``, ``null_threshold``; ``tune`` decodes without one, for
    :func:`retune_nulls`)."""
    t0 = time.perf_counter()
    arrays = score_windows(model, split.windows, batch_size=batch_size, max_answer_len=decode.max_answer_len,
                           n_best=decode.n_best, device=device, pad_id=pad_id, amp_dtype=amp_dtype, progress=progress)
    threshold = None if decode.null_threshold == "tune" else decode.null_threshold
    preds, nbest = postprocess(split.examples, split.windows, *arrays, n_best=decode.n_best, null_threshold=threshold)
    seconds = time.perf_counter() - t0
    summary, per_q = score(split, preds)
    summary.update(seconds=round(seconds, 3), examples_per_s=round(len(split.examples) / seconds, 2))
    log.info("scored split %s: %d questions, %d windows in %.0f s", split.name, len(split.examples),
             len(split.windows), seconds)  # a progress line per split: five splits take minutes on a CPU
    return {"summary": summary, "per_question": per_q, "predictions": preds, "nbest": nbest}


def retune_nulls(results: dict, splits: dict, tune_on: str, tune_for: str = "f1",
                 answerable_loss: float = 1.0) -> None:
    """Tune the null threshold on split ``tune_on``, then re-derive and re-score every split with it.
    ``tune_for``: ``f1`` maximises the split's F1; ``answerable_loss`` abstains as much as costs its answerable
    questions at most ``answerable_loss`` F1 points."""
    if tune_on not in results:
        raise ValueError(f"decode.tune_on={tune_on!r} is not an evaluated split ({sorted(results)})")
    nbest, gold = results[tune_on]["nbest"], splits[tune_on].gold
    if tune_for == "answerable_loss":
        threshold, lost = tune_threshold_for_loss(nbest, gold, answerable_loss)
        log.info("null threshold %s tuned on %s: its answerable questions lose %.2f F1 points (budget %g)",
                 threshold, tune_on, lost, answerable_loss)
    else:
        threshold, _ = tune_threshold(nbest, gold)
    for name, r in results.items():
        r["predictions"] = apply_threshold(r["nbest"], threshold)
        summary, r["per_question"] = score(splits[name], r["predictions"])
        r["summary"] = {**r["summary"], **summary, "null_threshold": threshold, "null_threshold_tuned_on": tune_on,
                        "null_threshold_tuned_for": tune_for}
