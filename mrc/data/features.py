"""Windows over long contexts: ``[CLS] question [SEP] context-slice [SEP]`` with a ``span_mask``.

Conventions used by the whole project:
- token spans are INCLUSIVE ``(start, end)`` positions inside a window;
- ``(0, 0)`` (the [CLS] slot) means "no answer in this window";
- ``offsets[i] = (char_start, char_end)`` half-open into the original context for context tokens,
  ``(-1, -1)`` for every other position, so only context tokens can be mapped back to text.

``doc_stride`` is the number of context tokens two consecutive windows share (the overlap), as in
the HuggingFace tokenizers' ``stride`` argument.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import numpy as np

from mrc.data.squad import Example

log = logging.getLogger(__name__)


@dataclass
class Window:
    """One model input. ``labels`` holds every gold span inside the window ([(0, 0)] if none)."""

    example_index: int
    input_ids: np.ndarray       # (L,) int64
    token_type_ids: np.ndarray  # (L,) int64
    span_mask: np.ndarray       # (L,) bool: [CLS] + context tokens
    offsets: np.ndarray         # (L, 2) int64, -1 outside the context
    labels: list[tuple[int, int]] = field(default_factory=lambda: [(0, 0)])
    question_match: np.ndarray | None = None  # (L,) bool: context token whose id occurs in the question
    teacher: tuple | None = None  # distill.cache: (rows, cols, logp, log_rest), mrc.model.distill.teacher_top_k
    unanswerable: bool = False    # a window of an unanswerable question (trainer.negative_window_keep)


@dataclass
class FeatureStats:
    """Counts reported alongside the windows (logged and written to metrics.json)."""

    examples: int = 0
    windows: int = 0
    questions_truncated: int = 0
    answers_misaligned: int = 0  # gold text not on token boundaries: the label covers whole tokens

    def as_dict(self) -> dict:
        """Plain-dict form for ``metrics.json``."""
        return dict(self.__dict__)


def window_starts(n_tokens: int, budget: int, doc_stride: int) -> list[int]:
    """Start positions of windows of ``budget`` context tokens sharing ``doc_stride`` tokens."""
    step = budget - doc_stride
    starts = [0]
    while starts[-1] + budget < n_tokens:
        starts.append(starts[-1] + step)
    return starts


@dataclass(frozen=True)
class Geometry:
    """How questions and contexts are cut into windows, the one description every reader of the ``data``
    section shares (the training run, a checkpoint, prediction, serving, the benchmarks): ``max_len`` tokens per
    window, the question cut to ``max_query_len`` tokens, two consecutive windows sharing ``doc_stride``
    context tokens. Built with :meth:`of` and checked once (:meth:`check`)."""

    max_len: int
    max_query_len: int
    doc_stride: int

    @classmethod
    def of(cls, data) -> Geometry:
        """The geometry a config's ``data`` section (a DictConfig or dict) or an argparse namespace names."""
        get = data.get if hasattr(data, "get") else lambda key: getattr(data, key)
        return cls(get("max_len"), get("max_query_len"), get("doc_stride"))

    @property
    def budget(self) -> int:
        """Context tokens every window holds at least (a question of ``max_query_len`` tokens)."""
        return self.max_len - self.max_query_len - 3

    def budget_for(self, question_tokens: int) -> int:
        """Context tokens of a window whose question has ``question_tokens`` tokens (cut to ``max_query_len``),
        beside [CLS] and two [SEP]."""
        return self.max_len - min(question_tokens, self.max_query_len) - 3

    def check(self) -> int:
        """Refuse a geometry that cannot cut windows (ValueError naming the value); returns :attr:`budget`."""
        if self.budget <= 0:
            raise ValueError(f"max_len={self.max_len} leaves no room for context after "
                             f"max_query_len={self.max_query_len} and 3 special tokens")
        if not 0 <= self.doc_stride < self.budget:
            raise ValueError(f"doc_stride={self.doc_stride} must be in [0, {self.budget}): it is the overlap between "
                             f"windows of at least {self.budget} context tokens (max_len - max_query_len - 3)")
        return self.budget

    def count(self, context_tokens: int, question_tokens: int) -> int:
        """How many windows a question of ``question_tokens`` tokens gets over ``context_tokens`` tokens."""
        return len(window_starts(context_tokens, self.budget_for(question_tokens), self.doc_stride))


def token_span(offsets: np.ndarray, char_start: int, char_end: int) -> tuple[int, int]:
    """Inclusive token span (into ``offsets`` rows) covering ``[char_start, char_end)``, or (-1, -1).

    Zero-width tokens (SentencePiece markers, see :func:`clean_offsets`) never bound a span: they are
    outside every ``span_mask``, so a label on one would be a cell no head can score."""
    real = offsets[:, 1] > offsets[:, 0]
    ends_after = np.nonzero(real & (offsets[:, 1] > char_start))[0]
    starts_before = np.nonzero(real & (offsets[:, 0] < char_end))[0]
    if len(ends_after) == 0 or len(starts_before) == 0 or ends_after[0] > starts_before[-1]:
        return -1, -1
    return int(ends_after[0]), int(starts_before[-1])


def clean_offsets(context: str, offsets: np.ndarray) -> np.ndarray:
    """Character offsets that cover only what a token stands for (in place; returned).

    SentencePiece tokenizers (XLM-R, e5) attach the word-boundary marker ``▁`` to a token, so its offsets
    may start on the space before the word (trimmed here), and a marker inserted before the text overlaps
    the next token (made zero-width here). Zero-width tokens stay in the window but never enter the
    ``span_mask``. WordPiece offsets pass unchanged."""
    a, b = offsets[:, 0], offsets[:, 1]
    next_start = offsets[1:, 0].copy()
    marker = np.flatnonzero(next_start < b[:-1])  # overlaps its successor: an inserted marker
    space = np.zeros(len(context) + 1, bool)
    space[[m.start() for m in re.finditer(r"\s", context)]] = True
    for k in np.flatnonzero((a < b) & space[np.minimum(a, len(context))]):  # rare: SentencePiece's "▁word"
        while a[k] < b[k] and space[a[k]]:
            a[k] += 1
    a[marker] = b[marker] = np.minimum(a[marker], next_start[marker])
    return offsets


def build_windows(examples: list[Example], tokenizer, geometry: Geometry, *,
                  training: bool) -> tuple[list[Window], FeatureStats]:
    """Tokenize each question and each distinct context once, then cut contexts into windows of ``geometry``."""
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError("a fast (Rust) tokenizer is required for offset mapping; got "
                        f"{type(tokenizer).__name__}")
    geometry.check()
    max_query_len = geometry.max_query_len
    stats = FeatureStats(examples=len(examples))
    if not examples:
        return [], stats
    # Whole questions and contexts, longer than the model's maximum on purpose (cut below): verbose=False
    # keeps transformers from warning of "indexing errors" that windowing prevents.
    q_ids = tokenizer([e.question for e in examples], add_special_tokens=False, verbose=False)["input_ids"]
    contexts = list(dict.fromkeys(e.context for e in examples))
    enc = tokenizer(contexts, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    ctx_tok = {c: (np.asarray(i, np.int64), clean_offsets(c, np.asarray(o, np.int64).reshape(-1, 2)))
               for c, i, o in zip(contexts, enc["input_ids"], enc["offset_mapping"])}
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    windows: list[Window] = []
    for idx, (ex, q) in enumerate(zip(examples, q_ids)):
        if len(q) > max_query_len:
            stats.questions_truncated += 1
            q = q[:max_query_len]
        ids, offs = ctx_tok[ex.context]
        gold = [(s, s + len(a)) for a, s in zip(ex.answers, ex.starts)] if training else []
        gold_tok = []
        for cs, ce in gold:
            ts, te = token_span(offs, cs, ce)
            if ts < 0:
                continue
            stats.answers_misaligned += int(offs[ts, 0] != cs or offs[te, 1] != ce)
            gold_tok.append((ts, te))
        budget = geometry.budget_for(len(q))
        head = np.asarray([cls, *q, sep], np.int64)
        for w0 in window_starts(len(ids), budget, geometry.doc_stride):
            w1 = min(w0 + budget, len(ids))
            windows.append(_make_window(idx, head, ids[w0:w1], offs[w0:w1], sep, w0, w1, gold_tok))
            windows[-1].unanswerable = bool(ex.is_impossible)
    stats.windows = len(windows)
    if stats.questions_truncated:
        log.info("%d questions truncated to max_query_len=%d", stats.questions_truncated, max_query_len)
    if stats.answers_misaligned:
        log.info("%d gold answers do not fall on token boundaries (label covers whole tokens)",
                 stats.answers_misaligned)
    return windows, stats


def _make_window(idx, head, ctx_ids, ctx_offs, sep, w0, w1, gold_tok) -> Window:
    n_head, n_ctx = len(head), len(ctx_ids)
    length = n_head + n_ctx + 1
    input_ids = np.concatenate([head, ctx_ids, [sep]]).astype(np.int64)
    token_type_ids = np.zeros(length, np.int64)
    token_type_ids[n_head:] = 1
    span_mask = np.zeros(length, bool)
    span_mask[0] = True
    span_mask[n_head:n_head + n_ctx] = ctx_offs[:, 1] > ctx_offs[:, 0]  # zero-width markers are never chosen
    offsets = np.full((length, 2), -1, np.int64)
    offsets[n_head:n_head + n_ctx] = ctx_offs
    labels = [(ts - w0 + n_head, te - w0 + n_head) for ts, te in gold_tok if ts >= w0 and te < w1]
    question_match = np.zeros(length, bool)
    question_match[n_head:n_head + n_ctx] = np.isin(ctx_ids, head[1:-1])
    return Window(idx, input_ids, token_type_ids, span_mask, offsets, list(dict.fromkeys(labels)) or [(0, 0)],
                  question_match)
