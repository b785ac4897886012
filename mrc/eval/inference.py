"""Batched inference over windows and post-processing to answers (shared by every head)."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from tqdm.auto import tqdm

from heads.base import NEG, top_spans

from mrc.data.batching import batches, collate
from mrc.data.squad import Example
from mrc.data.features import Window


def forward_batches(model, windows: list[Window], order, *, device, pad_id: int, amp_dtype=None):
    """``(idx, batch, model output)`` for each index batch of ``order``: collated, moved to ``device`` and run
    in eval mode, under ``amp_dtype`` autocast when given (callers hold ``torch.inference_mode``)."""
    model.eval()
    for idx in order:
        batch = {k: v.to(device) for k, v in collate([windows[i] for i in idx], pad_id).items()}
        with torch.autocast(device_type=torch.device(device).type, dtype=amp_dtype or torch.bfloat16,
                            enabled=amp_dtype is not None):
            out = model(**batch)
        yield idx, batch, out  # outside autocast: what the caller does with it runs as before


@torch.inference_mode()
def score_windows(model, windows: list[Window], *, batch_size: int, max_answer_len: int | None,
                  n_best: int, device, pad_id: int, amp_dtype=None, progress: bool = False):
    """Top ``n_best`` spans per window: arrays starts/ends/scores (W, k) and null scores (W,)."""
    W = len(windows)
    starts = np.zeros((W, n_best), np.int64)
    ends = np.zeros((W, n_best), np.int64)
    scores = np.full((W, n_best), NEG, np.float32)
    null = np.zeros(W, np.float32)
    order = batches([len(w.input_ids) for w in windows], batch_size, shuffle=False)
    bar = tqdm(order, desc="eval", unit="batch", disable=None if progress else True, leave=False)
    for idx, batch, out in forward_batches(model, windows, bar, device=device, pad_id=pad_id, amp_dtype=amp_dtype):
        grid = model.head.span_scores(out, batch["span_mask"], max_answer_len)
        s, e, sc, nl = (t.cpu().numpy() for t in top_spans(grid, n_best))
        k = s.shape[1]
        starts[idx, :k], ends[idx, :k], scores[idx, :k], null[idx] = s, e, sc, nl
    return starts, ends, scores, null


def postprocess(examples: list[Example], windows: list[Window], starts, ends, scores, null, *,
                n_best: int, null_threshold: float | None = None):
    """Best answer per example across its windows, plus an n-best list and null scores.

    Each candidate: ``text``, character offsets ``start`` / ``end`` (exclusive) into the context, ``score``,
    and ``window``: which of the question's windows (0-based, in context order) scored it best.
    A question's ``null_score`` is the smallest [CLS] score over its windows (the window most sure an
    answer is present). With ``null_threshold`` set, the empty answer is predicted when
    ``null_score - best_span_score > null_threshold``; with ``None`` the best span is always returned.
    """
    by_example = defaultdict(list)
    for w, win in enumerate(windows):
        by_example[win.example_index].append(w)
    predictions, nbest = {}, {}
    for i, ex in enumerate(examples):
        cands, q_null = {}, float("inf")
        for k, w in enumerate(by_example.get(i, [])):
            q_null = min(q_null, float(null[w]))
            offs = windows[w].offsets
            ok = scores[w] > NEG / 2
            cs, ce = offs[starts[w][ok], 0], offs[ends[w][ok], 1]
            for a, b, sc in zip(cs.tolist(), ce.tolist(), scores[w][ok].tolist()):
                if a >= 0 and b > a and sc > cands.get((a, b), (-np.inf,))[0]:
                    cands[(a, b)] = (sc, k)  # the same text span seen from overlapping windows: keep the best
        ranked = sorted(cands.items(), key=lambda kv: -kv[1][0])[:n_best]
        best_text = ex.context[ranked[0][0][0]:ranked[0][0][1]] if ranked else ""
        best_score = ranked[0][1][0] if ranked else -np.inf
        if null_threshold is not None and q_null - best_score > null_threshold:
            best_text = ""
        predictions[ex.id] = best_text
        nbest[ex.id] = {"null_score": q_null, "candidates": [
            {"text": ex.context[a:b], "start": a, "end": b, "score": sc, "window": k}
            for (a, b), (sc, k) in ranked]}
    return predictions, nbest


@torch.inference_mode()
def window_scores(model, window: Window, *, max_answer_len: int | None, device, pad_id: int):
    """What :func:`score_windows` ranks, for one window, to draw: the head's band (L, A) (cell ``[s, o]`` =
    span ``(s, s + o)``, ``NEG`` where invalid) and its per-token (start, end) scores (L, 2), or None for
    heads that score whole spans only (``SpanHead.token_scores``)."""
    model.eval()
    batch = {k: v.to(device) for k, v in collate([window], pad_id).items()}
    out = model(**batch)
    band = model.head.span_scores(out, batch["span_mask"], max_answer_len)[0]
    tokens = model.head.token_scores(out, batch["span_mask"])
    return band.float().cpu().numpy(), None if tokens is None else tokens[0].float().cpu().numpy()
