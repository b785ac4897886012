"""Unanswerable training questions built from the training data itself (``data.negatives``).

A model trained only on answerable questions never learns to prefer the null ([CLS]) answer, so it always
answers. These builders pair real training questions with contexts that cannot answer them:

* ``other_paragraph``: the question over another paragraph of the same source file that contains none of
  its answers (exact substring check, and again with all whitespace removed from both sides);
* ``similar_paragraph``: the question over the paragraph of the same source file that shares the most
  question character bigrams with it (each bigram weighted by its inverse paragraph frequency), among
  those that are not its own and contain none of its answers: a hard negative on the question's topic,
  as a search engine would return it;
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

import numpy as np
from scipy import sparse

from mrc.data.squad import Example

KINDS = ("other_paragraph", "similar_paragraph", "answer_removed")
DEFAULT_KINDS = ("other_paragraph", "answer_removed")  # data.negatives.kinds when a config names none
SUFFIX = {"other_paragraph": "#neg-para", "similar_paragraph": "#neg-sim", "answer_removed": "#neg-cut"}
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


def bigrams(text: str) -> set[str]:
    """The character bigrams of ``text`` without whitespace (a single character counts as its own bigram)."""
    t = squeeze(text).lower()
    return {t[i:i + 2] for i in range(len(t) - 1)} or ({t} if t else set())


class ParagraphIndex:
    """Binary bigram-by-paragraph matrix of one file's paragraphs with inverse paragraph frequencies: the
    ranking behind ``similar_paragraph``. A paragraph's score is the idf sum of the question bigrams it
    holds over ``1 - b + b * n / mean n`` (n: its distinct bigrams), so that a long paragraph does not win
    every question on common bigrams alone (BM25's length normalisation with binary term counts)."""

    B = 0.75

    def __init__(self, paragraphs: Sequence[tuple[str, str]]):
        vocab: dict[str, int] = {}
        rows, cols = [], []
        for j, (text, _) in enumerate(paragraphs):
            for b in bigrams(text):
                rows.append(vocab.setdefault(b, len(vocab)))
                cols.append(j)
        self.vocab = vocab
        self.matrix = sparse.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)),
                                        shape=(len(vocab), len(paragraphs)))
        df = np.asarray(self.matrix.sum(axis=1)).ravel()
        self.idf = np.log((1 + len(paragraphs)) / (1 + df)).astype(np.float32)
        n = np.asarray(self.matrix.sum(axis=0)).ravel()
        self.norm = (1 - self.B + self.B * n / max(n.mean(), 1.0)).astype(np.float32)

    def ranking(self, question: str) -> np.ndarray:
        """Paragraph indices, most similar to ``question`` first (ties: lower index first)."""
        ids = [self.vocab[b] for b in bigrams(question) if b in self.vocab]
        if not ids:
            return np.arange(self.matrix.shape[1])
        scores = np.asarray(self.matrix[ids].T @ self.idf[ids]).ravel() / self.norm
        return np.lexsort((np.arange(len(scores)), -scores))


def similar_paragraph(ex: Example, paragraphs: Sequence[tuple[str, str]], index: ParagraphIndex,
                      limit: int = 50) -> str | None:
    """The paragraph most similar to ``ex.question`` (among the ``limit`` best) that is not ``ex``'s own and
    holds none of its answers, or None."""
    answers, own = answer_texts(ex), squeeze(ex.context)
    for i in index.ranking(ex.question)[:limit]:
        text, squeezed = paragraphs[i]
        if squeezed != own and not contains_answer(text, answers, squeezed):
            return text
    return None


def quotas(n: int, kinds: Sequence[str]) -> dict[str, int]:
    """``n`` negatives split evenly between ``kinds`` (the first kinds take the remainder)."""
    return {k: n // len(kinds) + (i < n % len(kinds)) for i, k in enumerate(kinds)}


def _negatives_of_file(examples: Sequence[Example], share: float, kinds: Sequence[str],
                       rng: random.Random) -> tuple[list[Example], dict]:
    answerable = [e for e in examples if not e.is_impossible and e.answers]
    wanted = round(share * len(answerable))
    paragraphs = [(c, squeeze(c)) for c in dict.fromkeys(e.context for e in examples)]
    taken = {e.id for e in examples}
    index = ParagraphIndex(paragraphs) if "similar_paragraph" in kinds and paragraphs else None
    made: Counter = Counter()
    unusable: set[str] = set()
    out: list[Example] = []
    for kind, quota in quotas(wanted, kinds).items():
        # A fresh permutation per kind: one question may give one negative of each kind, never two of one.
        for i in rng.sample(range(len(answerable)), len(answerable)):
            if made[kind] == quota:
                break
            ex = answerable[i]
            if kind == "other_paragraph":
                context = other_paragraph(ex, paragraphs, rng)
            elif kind == "similar_paragraph":
                context = similar_paragraph(ex, paragraphs, index) if index is not None else None
            else:
                context = cut_answers(ex)
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


def build_negatives(groups: Sequence[Sequence[Example]], share: float, kinds: Sequence[str] = DEFAULT_KINDS,
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
