"""Unanswerable training questions built from the training data itself (``data.negatives``).

A model trained only on answerable questions never learns to prefer the null ([CLS]) answer, so it always
answers. These builders pair real training questions with contexts that cannot answer them:

* ``other_paragraph``: the question over another paragraph of the same source file that contains none of
  its answers (exact substring check, and again with all whitespace removed from both sides);
* ``answer_removed``: the question over its own paragraph with every sentence that holds an answer cut out
  (sentences end at 。！？!?；; or a newline; the rest keeps its order). Skipped when nothing is left or an
  answer still occurs.

A negative is marked as the SQuAD loader marks an impossible question (``is_impossible``, no answers) and
gets an id derived from its source question (``<id>#neg-para``, ``<id>#neg-cut``). The choice depends only
on the examples, the share, the kinds and the seed (a private ``random.Random``, never global state).
"""
from __future__ import annotations

import random
import re
from collections import Counter
from typing import Sequence

from mrc.data.squad import Example

KINDS = ("other_paragraph", "answer_removed")
SUFFIX = {"other_paragraph": "#neg-para", "answer_removed": "#neg-cut"}
# Split after each sentence end, keeping it with its sentence, so the kept sentences join back verbatim.
_SENTENCE_END = re.compile(r"(?<=[。！？!?；;\n])")
_SPACE = re.compile(r"\s+")
_RANDOM_TRIES = 8  # random picks of another paragraph before a full scan (most paragraphs qualify)


def check_options(share: float, kinds: Sequence[str]) -> tuple[str, ...]:
    """The kinds as a de-duplicated tuple; ValueError for a share outside [0, 1] or an unknown kind."""
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be a number in [0, 1], got {share!r}")
    kinds = tuple(dict.fromkeys(kinds or ()))
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"kinds must be a non-empty list of {list(KINDS)}, got {list(kinds)}")
    return kinds


def squeeze(text: str) -> str:
    """``text`` without any whitespace (answers split or joined by spaces still match)."""
    return _SPACE.sub("", text)


def answer_texts(ex: Example) -> list[str]:
    """Every non-blank answer of ``ex``: located ones and the file's references."""
    return [a for a in dict.fromkeys([*ex.answers, *ex.references]) if a.strip()]


def contains_answer(context: str, answers: Sequence[str], squeezed: str | None = None) -> bool:
    """Whether any answer occurs in ``context``, as is or with whitespace removed from both."""
    squeezed = squeeze(context) if squeezed is None else squeezed
    return any(a in context or squeeze(a) in squeezed for a in answers)


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``, each with its end mark; ``"".join`` gives ``text`` back."""
    return [s for s in _SENTENCE_END.split(text) if s]


def cut_answers(ex: Example) -> str | None:
    """``ex.context`` without the sentences holding an answer; None when nothing is left or an answer is."""
    answers = answer_texts(ex)
    spans = [(s, s + len(a)) for a, s in zip(ex.answers, ex.starts)]
    kept, pos = [], 0
    for sentence in split_sentences(ex.context):
        lo, hi = pos, pos + len(sentence)
        pos = hi
        # A located span that crosses a sentence end removes both sentences.
        if any(s < hi and e > lo for s, e in spans) or contains_answer(sentence, answers):
            continue
        kept.append(sentence)
    context = "".join(kept).strip()
    if not context or contains_answer(context, answers):
        return None
    return context


def other_paragraph(ex: Example, paragraphs: Sequence[tuple[str, str]], rng: random.Random) -> str | None:
    """A paragraph of ``paragraphs`` ((text, squeezed) pairs) other than ``ex``'s that holds none of its
    answers, or None."""
    if not paragraphs:
        return None
    answers, own = answer_texts(ex), squeeze(ex.context)

    def usable(i: int) -> bool:
        text, squeezed = paragraphs[i]
        return squeezed != own and not contains_answer(text, answers, squeezed)

    n = len(paragraphs)
    for _ in range(_RANDOM_TRIES):
        i = rng.randrange(n)
        if usable(i):
            return paragraphs[i][0]
    start = rng.randrange(n)  # a scan from a random point: still finds the rare usable paragraph
    return next((paragraphs[(start + k) % n][0] for k in range(n) if usable((start + k) % n)), None)


def quotas(n: int, kinds: Sequence[str]) -> dict[str, int]:
    """``n`` negatives split evenly between ``kinds`` (the first kinds take the remainder)."""
    return {k: n // len(kinds) + (i < n % len(kinds)) for i, k in enumerate(kinds)}


def _negatives_of_file(examples: Sequence[Example], share: float, kinds: Sequence[str],
                       rng: random.Random) -> tuple[list[Example], dict]:
    answerable = [e for e in examples if not e.is_impossible and e.answers]
    wanted = round(share * len(answerable))
    paragraphs = [(c, squeeze(c)) for c in dict.fromkeys(e.context for e in examples)]
    taken = {e.id for e in examples}
    made: Counter = Counter()
    unusable: set[str] = set()
    out: list[Example] = []
    for kind, quota in quotas(wanted, kinds).items():
        # A fresh permutation per kind: one question may give one negative of each kind, never two of one.
        for i in rng.sample(range(len(answerable)), len(answerable)):
            if made[kind] == quota:
                break
            ex = answerable[i]
            context = other_paragraph(ex, paragraphs, rng) if kind == "other_paragraph" else cut_answers(ex)
            qid = ex.id + SUFFIX[kind]
            if context is None or qid in taken:
                unusable.add(ex.id)
                continue
            taken.add(qid)
            out.append(Example(qid, ex.question, context, [], [], is_impossible=True, qtype=kind, references=[]))
            made[kind] += 1
    counts = {"questions": len(answerable), "wanted": wanted, "added": len(out),
              **{k: made[k] for k in KINDS}, "no_paragraph": len(unusable)}
    return out, counts


def build_negatives(groups: Sequence[Sequence[Example]], share: float, kinds: Sequence[str] = KINDS,
                    seed: int = 0) -> tuple[list[list[Example]], list[dict]]:
    """Unanswerable examples for each group (the examples of one source file): ``round(share * answerable)``
    per group, split evenly between ``kinds``; returns (negatives per group, counts per group).

    Counts: ``questions`` (answerable questions offered), ``wanted``, ``added``, one entry per kind, and
    ``no_paragraph`` (questions drawn for which a kind found no usable context)."""
    kinds = check_options(share, kinds)
    rng = random.Random(seed)
    built = [_negatives_of_file(group, share, kinds, rng) for group in groups]
    return [b[0] for b in built], [b[1] for b in built]


def total_counts(counts: Sequence[dict]) -> dict:
    """Per-file counts of :func:`build_negatives` summed."""
    keys = ("questions", "wanted", "added", *KINDS, "no_paragraph")
    return {k: sum(c.get(k, 0) for c in counts) for k in keys}
