"""Evaluation text kept out of pretraining corpora (:func:`drop_eval_text`).

**Evaluation text is never trained on.** A corpus line *overlaps* the evaluation SQuAD files when, after
deleting all whitespace from both sides,

1. it contains an evaluation question verbatim (questions with their trailing ``？?。.!！`` removed, at
   least ``min_chars`` characters long), or equals one (any length); or
2. it shares any ``ngram``-character substring with an evaluation context; or
3. it is shorter than ``ngram`` characters, at least ``min_chars`` long, and occurs inside a context.

In rules 2 and 3 the shared text must hold at least half as many distinct characters as its length:
runs like ``！！！！…`` or ``~~~~…`` occur in contexts and reviews alike and are not evaluation text
(without this, most of the lines such rules drop from a review corpus are false positives).

Rule 2 keeps a set of hashed ``ngram``-grams of every context and looks up each ``ngram``-gram of a
line: O(characters) work and memory. Rules 1 and 3 index ``min_chars``-grams (question prefixes, context
grams) so that only candidate lines are checked with an exact substring test.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from mrc.data.squad import load_squad

log = logging.getLogger(__name__)
QUESTION_END = "？?。.!！ "


def _squash(text: str) -> str:
    return "".join(text.split())


def _grams(text: str, n: int) -> Iterator[str]:
    return (text[i:i + n] for i in range(len(text) - n + 1))


def _informative(text: str) -> bool:
    # Not a run of a few repeated characters (see the module docstring).
    return 2 * len(set(text)) >= len(text)


@dataclass
class EvalTextFilter:
    """Decides whether a corpus line overlaps evaluation questions or contexts (module docstring)."""

    questions: list[str]
    contexts: list[str]
    ngram: int = 20
    min_chars: int = 8
    _context_grams: set[int] = field(init=False, repr=False)
    _short_grams: set[int] = field(init=False, repr=False)
    _by_prefix: dict[int, list[str]] = field(init=False, repr=False)
    _whole: set[str] = field(init=False, repr=False)
    _joined: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 1 <= self.min_chars <= self.ngram:
            raise ValueError("need 1 <= min_chars <= ngram")
        contexts = sorted({_squash(c) for c in self.contexts if c.strip()})
        questions = sorted({_squash(q).rstrip(QUESTION_END) for q in self.questions if q.strip()})
        self._context_grams = {hash(g) for c in contexts for g in _grams(c, self.ngram)}
        self._short_grams = {hash(g) for c in contexts for g in _grams(c, self.min_chars)}
        self._by_prefix = {}
        for q in questions:
            if len(q) >= self.min_chars:
                self._by_prefix.setdefault(hash(q[:self.min_chars]), []).append(q)
        self._whole = set(questions)
        self._joined = "\n".join(contexts)

    @classmethod
    def from_squad(cls, paths: Sequence[str | Path], **kw) -> "EvalTextFilter":
        """Questions and contexts of SQuAD-format files (loaded as evaluation files: nothing dropped)."""
        questions, contexts = [], set()
        for p in paths:
            examples, _ = load_squad(p, training=False)
            questions += [e.question for e in examples]
            contexts.update(e.context for e in examples)
        return cls(questions, sorted(contexts), **kw)

    def reason(self, line: str) -> str | None:
        """Why ``line`` overlaps evaluation text (``question`` / ``context``), or None when it does not."""
        text = _squash(line)
        if text.rstrip(QUESTION_END) in self._whole or self._has_question(text):
            return "question"
        if len(text) >= self.ngram:
            hits = (g for g in _grams(text, self.ngram) if hash(g) in self._context_grams)
            return "context" if any(_informative(g) for g in hits) else None
        if len(text) >= self.min_chars and _informative(text) and all(
                hash(g) in self._short_grams for g in _grams(text, self.min_chars)):
            return "context" if text in self._joined else None
        return None

    def _has_question(self, text: str) -> bool:
        for i, gram in enumerate(_grams(text, self.min_chars)):
            for q in self._by_prefix.get(hash(gram), ()):
                if text.startswith(q, i):
                    return True
        return False


def drop_eval_text(lines: list[str], filt: EvalTextFilter | None) -> tuple[list[str], dict]:
    """``lines`` without those overlapping evaluation text, and counts by reason."""
    if filt is None:
        return lines, {"lines": len(lines), "dropped": 0, "by_reason": {}}
    kept, by_reason = [], {}
    for line in lines:
        why = filt.reason(line)
        if why is None:
            kept.append(line)
        else:
            by_reason[why] = by_reason.get(why, 0) + 1
    dropped = len(lines) - len(kept)
    log.info("evaluation text: dropped %d of %d corpus lines %s", dropped, len(lines), by_reason)
    return kept, {"lines": len(lines), "dropped": dropped, "by_reason": by_reason}
