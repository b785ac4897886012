"""Dynamic masked-LM masking (BERT's 15 % with 80/10/10) and whole-word grouping by a Chinese segmenter.

Masking works on *words*: every content token carries the index of the word it belongs to within its
sequence (``word_ids``, -1 for tokens that are never masked: [CLS], [SEP], [PAD] and every other special
token). Each word is selected with probability ``mask_prob``, so the expected share of selected tokens is
exactly ``mask_prob`` whatever the word lengths; a selected word is replaced as a whole: all its tokens
become [MASK] (80 %), random tokens (10 %) or stay as they are (10 %). With one word per token this is
ordinary token-level masking; with words from a segmenter it is whole-word masking (Cui et al., 2021).

Masks are drawn from a ``torch.Generator`` the caller seeds per batch draw, so they are new every time a
sequence is drawn (dynamic masking, Liu et al., 2019) yet a pure function of (seed, draw), which makes a
resumed run draw exactly the masks an uninterrupted run draws.
"""
from __future__ import annotations

import logging
import re
from typing import Iterable

import torch

IGNORE_INDEX = -100  # label of positions that carry no MLM loss (torch cross-entropy's default)
_BRACKETED = re.compile(r"^\[[^\]]+\]$")  # [unused1], [CLS], ... : never a random replacement


class ChineseWordSegmenter:
    """Word spans of a line from ``jieba`` (precise mode, HMM for unseen words).

    Why jieba: it is pure Python (no compiler, no model download: its dictionary ships in the package),
    deterministic, and fast enough for a corpus of this size (about 15 s per million characters on one
    shared CPU core, tokenization included; done once, the result is cached for resumed runs). The WWM
    BERTs of Cui et al. used LTP, which needs a neural model download and is much slower on CPU; jieba's
    precise mode gives word boundaries of the same kind.
    Latin words and numbers come out as single words, so their WordPiece pieces are masked together too.
    """

    def __init__(self, hmm: bool = True):
        import jieba

        jieba.setLogLevel(logging.WARNING)
        self._jieba = jieba
        self.hmm = hmm

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Half-open character spans ``[start, end)`` of the words of ``text``, in order, covering it."""
        return [(start, end) for _, start, end in self._jieba.tokenize(text, HMM=self.hmm)]


def replacement_ids(vocab: dict[str, int], special_ids: Iterable[int]) -> torch.Tensor:
    """Token ids a "random" replacement may take: the vocabulary minus special and ``[bracketed]`` tokens."""
    special = set(special_ids)
    ids = sorted(i for tok, i in vocab.items() if i not in special and not _BRACKETED.match(tok))
    if not ids:
        raise ValueError("the vocabulary has no ordinary tokens to use as random replacements")
    return torch.tensor(ids, dtype=torch.long)


def _ensure_one(selected: torch.Tensor, draw: torch.Tensor, words: torch.Tensor,
                eligible: torch.Tensor) -> torch.Tensor:
    # A sequence with no selected word still gets one (its lowest draw), so no row is loss-free.
    empty = ~selected.any(1) & eligible.any(1)  # (B,)
    if not empty.any():
        return selected
    first = draw.masked_fill(~eligible, 2.0).argmin(1)  # (B,) a token of the lowest-draw word
    word = words.gather(1, first[:, None])  # (B, 1)
    return selected | (empty[:, None] & eligible & (words == word))


def mask_tokens(input_ids: torch.Tensor, word_ids: torch.Tensor, *, mask_id: int, replacements: torch.Tensor,
                generator: torch.Generator, mask_prob: float = 0.15, mask_share: float = 0.8,
                random_share: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask whole words of ``input_ids`` (B, T); returns (masked inputs, labels with -100 where unmasked).

    ``word_ids`` (B, T): the word index of each token within its row, in ``[0, T)``; -1 where the token
    must never be masked. ``replacements``: candidate ids for random replacement. The remaining
    ``1 - mask_share - random_share`` of the selected words keep their tokens.
    """
    if not 0.0 <= mask_share + random_share <= 1.0:
        raise ValueError("mask_share + random_share must lie in [0, 1]")
    shape = input_ids.shape
    eligible = word_ids >= 0  # (B, T)
    words = word_ids.clamp(min=0)  # (B, T) index into the per-word draws below
    # One uniform per possible word of a row (a row has at most T words), read back per token.
    select_draw = torch.rand(shape, generator=generator).gather(1, words)  # (B, T)
    kind_draw = torch.rand(shape, generator=generator).gather(1, words)  # (B, T)
    random_tokens = replacements[torch.randint(len(replacements), shape, generator=generator)]  # (B, T)
    selected = _ensure_one(eligible & (select_draw < mask_prob), select_draw, words, eligible)
    to_mask = selected & (kind_draw < mask_share)
    to_random = selected & (kind_draw >= mask_share) & (kind_draw < mask_share + random_share)
    labels = input_ids.masked_fill(~selected, IGNORE_INDEX)
    masked = input_ids.masked_fill(to_mask, mask_id)
    masked = torch.where(to_random, random_tokens.to(input_ids.dtype), masked)
    return masked, labels


def mask_generator(seed: int, draw: int) -> torch.Generator:
    """The CPU generator for batch draw ``draw`` of a run seeded ``seed`` (independent of global RNG)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + draw) % (2**63))
