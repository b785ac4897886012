"""Answers and score views for one context: what the API returns, the page and the PNGs draw.

Everything is computed by the project's prediction path: the steps of :func:`mrc.eval.predict.predict`
(``make_windows``, ``score_windows``, ``postprocess``; scored a batch at a time here so that a request's
deadline is checked between batches) for the answers and n-best lists, :class:`mrc.eval.confidence.AnswerConfidence`
for each answer's confidence (as ``mrc predict`` gives it, answers below ``min_confidence`` withheld), and
:func:`mrc.eval.inference.window_scores` for the scores of the one window a picture shows.
"""
from __future__ import annotations

import math
import threading
import time
from contextlib import contextmanager

import numpy as np

from heads.base import NEG
from mrc.data.features import Geometry
from mrc.data.squad import Example
from mrc.eval.confidence import AnswerConfidence, withhold
from mrc.eval.inference import postprocess, score_windows, window_scores
from mrc.eval.predict import make_windows

# One forward pass at a time (the web server runs requests in threads; torch is not re-entrant per model).
MODEL_LOCK = threading.Lock()
# Windows per forward pass: a request's deadline is checked between these batches.
BATCH = 16


class TooManyWindows(ValueError):
    """The request's context and questions make more windows than one request may run."""

    def __init__(self, count: int, limit: int):
        super().__init__(f"the context and questions make {count} windows; the limit is {limit} per request")
        self.count, self.limit = count, limit


class DeadlineExceeded(TimeoutError):
    """The request's deadline passed while it waited for the model or between its window batches."""


@contextmanager
def model_turn(deadline: float | None):
    """Hold :data:`MODEL_LOCK`, waiting no later than ``deadline`` (``time.monotonic()``; None: no deadline)."""
    wait = -1 if deadline is None else max(0.0, deadline - time.monotonic())
    if not MODEL_LOCK.acquire(timeout=wait):
        raise DeadlineExceeded("the model stayed busy with other requests")
    try:
        yield
    finally:
        MODEL_LOCK.release()


def check_deadline(deadline: float | None) -> None:
    """Raise :class:`DeadlineExceeded` once ``deadline`` has passed."""
    if deadline is not None and time.monotonic() > deadline:
        raise DeadlineExceeded("answering took longer than the time allowed per request")


def count_windows(tokenizer, cfg, context: str, questions: list[str]) -> int:
    """How many windows :func:`mrc.eval.predict.make_windows` cuts for ``questions`` over ``context``, from the
    token counts alone: refusing a request over the limit costs a tokenization, not thousands of windows."""
    q_ids = tokenizer(questions, add_special_tokens=False, verbose=False)["input_ids"]
    n = len(tokenizer(context, add_special_tokens=False, verbose=False)["input_ids"])
    geometry = Geometry.of(cfg.data)
    return sum(geometry.count(n, len(q)) for q in q_ids)


def score_in_batches(model, tokenizer, cfg, windows, *, device: str, batch_size: int, deadline: float | None):
    """:func:`mrc.eval.inference.score_windows` run ``batch_size`` windows at a time, checking ``deadline``
    before each batch; the same arrays as one call."""
    parts = []
    for i in range(0, max(len(windows), 1), batch_size):
        check_deadline(deadline)
        parts.append(score_windows(model, windows[i:i + batch_size], batch_size=batch_size,
                                   max_answer_len=cfg.decode.max_answer_len, n_best=cfg.decode.n_best,
                                   device=device, pad_id=tokenizer.pad_token_id))
    return [np.concatenate(arrays) for arrays in zip(*parts)]


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


def _record(question: str, answer: str, entry: dict, windows, *, confidence: float, abstained: bool,
            probabilities: list[float]) -> dict:
    cands = [{"text": c["text"], "start": int(c["start"]), "end": int(c["end"]), "score": _num(c["score"]),
              "window": int(c["window"]), "probability": round(p, 5)}
             for c, p in zip(entry["candidates"], probabilities)]
    best = cands[0] if cands else None
    answered = answer != ""
    return {"question": question, "answer": answer,
            "start": best["start"] if answered else None, "end": best["end"] if answered else None,
            "score": best["score"] if best else None, "null_score": _num(entry["null_score"]),
            "window": best["window"] if best else None, "confidence": round(confidence, 5), "abstained": abstained,
            "nbest": cands, "windows": describe_windows(windows)}


def _answer(model, tokenizer, cfg, context: str, questions: list[str], *, device: str, batch_size: int,
            max_windows: int | None, deadline: float | None, confidence: AnswerConfidence | None,
            min_confidence: float):
    """(records as :func:`answer` returns them, each question's windows): tokenized once, the windows counted
    before the model runs (:class:`TooManyWindows`), scored as :func:`mrc.eval.predict.predict` does, each
    answer's confidence as :func:`mrc.eval.predict.predict_confident` gives it."""
    if max_windows is not None and (count := count_windows(tokenizer, cfg, context, questions)) > max_windows:
        raise TooManyWindows(count, max_windows)
    examples = [Example(f"q{i}", q, context, [], []) for i, q in enumerate(questions)]
    windows = make_windows(examples, tokenizer, cfg)
    with model_turn(deadline):
        arrays = score_in_batches(model, tokenizer, cfg, windows, device=device, batch_size=batch_size,
                                  deadline=deadline)
    preds, nbest = postprocess(examples, windows, *arrays, n_best=cfg.decode.n_best,
                               null_threshold=cfg.decode.get("null_threshold"))
    confidence = confidence or AnswerConfidence()
    conf = confidence.of(nbest, examples, windows, preds)
    given, abstained = withhold(preds, conf, min_confidence)
    per_question = [[w for w in windows if w.example_index == i] for i in range(len(examples))]
    records = [_record(q, given[ex.id], nbest[ex.id], wins, confidence=conf[ex.id], abstained=ex.id in abstained,
                       probabilities=confidence.probabilities(nbest[ex.id])[0])
               for q, ex, wins in zip(questions, examples, per_question)]
    return records, per_question


def answer(model, tokenizer, cfg, context: str, questions: list[str], *, device: str = "cpu",
           batch_size: int = BATCH, max_windows: int | None = None, deadline: float | None = None,
           confidence: AnswerConfidence | None = None, min_confidence: float = 0.0) -> list[dict]:
    """Per question: answer, character offsets (``end`` exclusive; None when the answer is empty), score,
    null score, ``confidence`` (``confidence``'s method; raw without one) and ``abstained`` (the answer was
    withheld: confidence below ``min_confidence``), n-best list (with each candidate's window and probability)
    and the windows the context was cut into.
    ``max_windows`` / ``deadline`` (``time.monotonic()``): see :class:`TooManyWindows`, :class:`DeadlineExceeded`."""
    return _answer(model, tokenizer, cfg, context, questions, device=device, batch_size=batch_size,
                   max_windows=max_windows, deadline=deadline, confidence=confidence,
                   min_confidence=min_confidence)[0]


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
            device: str = "cpu", max_windows: int | None = None, deadline: float | None = None,
            confidence: AnswerConfidence | None = None, min_confidence: float = 0.0) -> dict:
    """The answer (as :func:`answer`) plus the scores of one window (default: the answer's): its context
    tokens, and either per-token start/end scores (``view="tokens"``: softmax head, log-probabilities) or
    the span band (``view="grid"``: GlobalPointer heads; ``band[i][o]`` scores the span from context
    token ``i`` to ``i + o``, None where invalid), with the answer's cell."""
    (result,), (windows,) = _answer(model, tokenizer, cfg, context, [question], device=device, batch_size=BATCH,
                                    max_windows=max_windows, deadline=deadline, confidence=confidence,
                                    min_confidence=min_confidence)
    k = (result["window"] or 0) if window is None else window
    if not 0 <= k < len(windows):
        raise IndexError(f"window {k}: this context has {len(windows)} window(s) for this question (0..{len(windows) - 1})")
    win = windows[k]
    with model_turn(deadline):
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
