"""Answers and score views for one context: what the API returns, the page and the PNGs draw.

Everything is computed by the project's prediction path: :func:`mrc.eval.predict.predict` (windows,
``score_windows``, ``postprocess``) for the answers and n-best lists, and
:func:`mrc.eval.inference.window_scores` for the scores of the one window a picture shows.
"""
from __future__ import annotations

import math
import threading

import numpy as np

from heads.base import NEG
from mrc.data.squad import Example
from mrc.eval.inference import window_scores
from mrc.eval.predict import make_windows, predict

# One forward pass at a time (the web server runs requests in threads; torch is not re-entrant per model).
MODEL_LOCK = threading.Lock()


def _num(x) -> float | None:
    """A JSON-safe score: None for invalid cells (``NEG``), infinities and NaN."""
    x = float(x)
    return None if not math.isfinite(x) or x <= NEG / 2 else round(x, 5)


def context_positions(window) -> np.ndarray:
    """Positions of the window's context tokens (contiguous, in context order)."""
    return np.flatnonzero(np.asarray(window.offsets)[:, 0] >= 0)


def describe_windows(windows) -> list[dict]:
    """Each window of one question: its index, the characters it covers ``[start, end)`` and its context tokens."""
    out = []
    for k, w in enumerate(windows):
        offs = np.asarray(w.offsets)[context_positions(w)]
        out.append({"index": k, "start": int(offs[:, 0].min()) if len(offs) else 0,
                    "end": int(offs[:, 1].max()) if len(offs) else 0, "tokens": int(len(offs))})
    return out


def _record(question: str, answer: str, entry: dict, windows) -> dict:
    cands = [{"text": c["text"], "start": int(c["start"]), "end": int(c["end"]), "score": _num(c["score"]),
              "window": int(c["window"])} for c in entry["candidates"]]
    best = cands[0] if cands else None
    answered = answer != ""
    return {"question": question, "answer": answer,
            "start": best["start"] if answered else None, "end": best["end"] if answered else None,
            "score": best["score"] if best else None, "null_score": _num(entry["null_score"]),
            "window": best["window"] if best else None, "nbest": cands, "windows": describe_windows(windows)}


def _answer(model, tokenizer, cfg, context: str, questions: list[str], *, device: str, batch_size: int):
    """(records as :func:`answer` returns them, each question's windows): tokenized once."""
    examples = [Example(f"q{i}", q, context, [], []) for i, q in enumerate(questions)]
    windows = make_windows(examples, tokenizer, cfg)
    with MODEL_LOCK:
        preds, nbest = predict(model, tokenizer, cfg, examples, batch_size=batch_size, device=device,
                               windows=windows)
    per_question = [[w for w in windows if w.example_index == i] for i in range(len(examples))]
    records = [_record(q, preds[ex.id], nbest[ex.id], wins)
               for q, ex, wins in zip(questions, examples, per_question)]
    return records, per_question


def answer(model, tokenizer, cfg, context: str, questions: list[str], *, device: str = "cpu",
           batch_size: int = 64) -> list[dict]:
    """Per question: answer, character offsets (``end`` exclusive; None when the answer is empty), score,
    null score, n-best list (with each candidate's window) and the windows the context was cut into."""
    return _answer(model, tokenizer, cfg, context, questions, device=device, batch_size=batch_size)[0]


def answer_cell(window, start: int | None, end: int | None):
    """(s, e): indices among the window's context tokens of the span with character offsets
    ``[start, end)``; None when the answer is empty or not inside this window."""
    if start is None:
        return None
    offs = np.asarray(window.offsets)[context_positions(window)]
    s = np.flatnonzero(offs[:, 0] == start)
    e = np.flatnonzero(offs[:, 1] == end)
    if not len(s) or not len(e) or e[-1] < s[0]:
        return None
    return int(s[0]), int(e[e >= s[0]][0])


def explain(model, tokenizer, cfg, context: str, question: str, *, window: int | None = None,
            device: str = "cpu") -> dict:
    """The answer (as :func:`answer`) plus the scores of one window (default: the answer's): its context
    tokens, and either per-token start/end scores (``view="tokens"``: softmax head, log-probabilities) or
    the span band (``view="grid"``: GlobalPointer heads; ``band[i][o]`` scores the span from context
    token ``i`` to ``i + o``, None where invalid), with the answer's cell."""
    (result,), (windows,) = _answer(model, tokenizer, cfg, context, [question], device=device, batch_size=64)
    k = (result["window"] or 0) if window is None else window
    if not 0 <= k < len(windows):
        raise IndexError(f"window {k}: this context has {len(windows)} window(s) for this question (0..{len(windows) - 1})")
    win = windows[k]
    with MODEL_LOCK:
        band, tokens = window_scores(model, win, max_answer_len=cfg.decode.max_answer_len, device=device,
                                     pad_id=tokenizer.pad_token_id)
    pos = context_positions(win)
    offs = np.asarray(win.offsets)
    n, A = len(pos), band.shape[1]
    in_window = result["answer"] and result["window"] == k
    cell = answer_cell(win, result["start"], result["end"]) if in_window else None
    out = {"result": result, "window": k, "head": getattr(model.head, "name", type(model.head).__name__),
           "tokens": [{"text": context[a:b], "start": int(a), "end": int(b)} for a, b in offs[pos].tolist()],
           "null_score": _num(band[0, 0]), "max_answer_len": int(A),
           "answer_tokens": list(cell) if cell else None}
    if tokens is not None:
        out["view"] = "tokens"
        out["start_scores"] = [_num(x) for x in tokens[pos, 0]]
        out["end_scores"] = [_num(x) for x in tokens[pos, 1]]
        out["null_start_end"] = [_num(tokens[0, 0]), _num(tokens[0, 1])]
    else:
        out["view"] = "grid"
        # rows: context tokens; column o: the span ending o tokens later (cells past the window are invalid)
        rows = band[pos] if n else np.zeros((0, A), np.float32)
        out["band"] = [[_num(x) for x in row] for row in rows.tolist()]
    return out
