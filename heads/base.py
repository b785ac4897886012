"""The one head contract, plus the span-grid helpers every head shares.

A head maps encoder states to scores and knows three things about them:

- ``forward(hidden, span_mask) -> scores``   hidden (B, L, H), span_mask (B, L) bool -> head-specific
- ``loss(scores, span_mask, labels) -> ()``  labels (B, K, 2) long, inclusive (start, end), -1 padded;
                                             (0, 0) = the [CLS] "no answer in this window" slot
- ``span_scores(scores, span_mask, max_answer_len) -> (B, L, L)`` float32 grid of span scores on a
  scale that is comparable ACROSS windows (each head documents its scale); invalid cells hold ``NEG``
  and cell (0, 0) is the window's ``null_score``.

Decoding is then shared: ``top_spans`` takes the n best non-null cells of any head's grid.
"""
from __future__ import annotations

import torch
from torch import nn

# Large finite negative rather than -inf: keeps logsumexp / softmax finite under any dtype.
NEG = -1e12


class SpanHead(nn.Module):
    """Base class documenting the contract; subclasses implement the three methods."""

    def forward(self, hidden: torch.Tensor, span_mask: torch.Tensor):  # pragma: no cover - abstract
        raise NotImplementedError

    def loss(self, scores, span_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def span_scores(self, scores, span_mask: torch.Tensor, max_answer_len: int | None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


def valid_spans(span_mask: torch.Tensor, max_answer_len: int | None = None) -> torch.Tensor:
    """(B, L, L) bool: start <= end, both in ``span_mask``, length < ``max_answer_len``; [CLS] only as (0, 0)."""
    L = span_mask.shape[1]
    pos = torch.arange(L, device=span_mask.device)
    ok = pos[None, :] >= pos[:, None]  # end >= start
    if max_answer_len is not None:
        ok = ok & (pos[None, :] - pos[:, None] < max_answer_len)
    ok = ok.clone()
    ok[0, 1:] = False  # [CLS] may only pair with itself
    return ok[None] & span_mask[:, :, None] & span_mask[:, None, :]


def masked(grid: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Set invalid cells of a float32 grid to ``NEG``."""
    return grid.float().masked_fill(~valid, NEG)


def primary_target(labels: torch.Tensor, L: int) -> torch.Tensor:
    """(B,) flattened grid index of the first gold span of each window."""
    return labels[:, 0, 0] * L + labels[:, 0, 1]


def top_spans(grid: torch.Tensor, n_best: int):
    """Best non-null spans of a (B, L, L) grid: (starts, ends, scores), each (B, k), plus null (B,).

    Cells with score ``NEG`` are invalid; callers drop candidates whose score is <= NEG / 2.
    """
    B, L, _ = grid.shape
    null = grid[:, 0, 0].clone()
    flat = grid.reshape(B, L * L).clone()
    flat[:, 0] = NEG
    k = min(n_best, L * L)
    scores, idx = flat.topk(k, dim=1)
    return idx // L, idx % L, scores, null
