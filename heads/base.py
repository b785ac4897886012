"""The one head contract, plus the span helpers every head shares.

A head maps encoder states to scores and knows three things about them:

- ``forward(hidden, span_mask) -> scores``   hidden (B, L, H), span_mask (B, L) bool -> head-specific
- ``loss(scores, span_mask, labels, token_chars=None) -> ()``  labels (B, K, 2) long, inclusive (start, end),
                                             -1 padded; (0, 0) = the [CLS] "no answer in this window" slot;
                                             token_chars (B, L): characters per context token (for
                                             ``span_target=f1_soft``, ``heads.targets``; None: one each)
- ``span_scores(scores, span_mask, max_answer_len) -> (B, L, A)`` float32 *band* of span scores:
  cell ``[s, o]`` scores the span ``(s, s + o)``, ``A = min(max_answer_len, L)`` (``L`` for None).
  Scores are on a scale comparable ACROSS windows (each head documents its scale); invalid cells hold
  ``NEG`` and cell ``[0, 0]`` is the window's ``null_score``.
- ``token_scores(scores, span_mask) -> (B, L, 2) | None``  per-token start / end scores where the head has
  them (softmax: log p(start), log p(end)), for pictures (``mrc.serve``); None for span-grid heads.

Decoding only ever needs spans of at most ``max_answer_len`` tokens, so the band holds ``L * A`` cells
instead of the full ``L * L`` grid (A = 30 of L = 384: 13x fewer). ``top_spans`` then takes the n best
non-null cells of any head's band.
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

    def loss(self, scores, span_mask: torch.Tensor, labels: torch.Tensor,
             token_chars: torch.Tensor | None = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def span_scores(self, scores, span_mask: torch.Tensor, max_answer_len: int | None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def token_scores(self, scores, span_mask: torch.Tensor) -> torch.Tensor | None:
        """Per-token (start, end) scores, (B, L, 2); None when the head scores whole spans only."""
        return None


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


def primary_target(labels: torch.Tensor, L: int) -> torch.Tensor:
    """(B,) flattened grid index of the first gold span of each window."""
    return labels[:, 0, 0] * L + labels[:, 0, 1]


def band_width(L: int, max_answer_len: int | None) -> int:
    """Cells per start in the band: ``min(max_answer_len, L)``."""
    return L if max_answer_len is None else max(1, min(int(max_answer_len), L))


def band_index(L: int, A: int, device=None) -> torch.Tensor:
    """(L, A) end positions ``s + o``, clamped into range (clamped cells are masked by ``span_band``)."""
    pos = torch.arange(L, device=device)
    return (pos[:, None] + torch.arange(A, device=device)[None]).clamp_(max=L - 1)


def span_band(span_mask: torch.Tensor, A: int) -> torch.Tensor:
    """(B, L, A) bool validity of the band: both ends in ``span_mask``, ``s + o < L``, [CLS] only as [0, 0]."""
    L = span_mask.shape[1]
    pos = torch.arange(L, device=span_mask.device)
    inside = (pos[:, None] + torch.arange(A, device=span_mask.device)[None]) < L  # (L, A)
    inside[0, 1:] = False  # [CLS] may only pair with itself
    return span_mask[:, :, None] & span_mask[:, band_index(L, A, span_mask.device)] & inside[None]


def band_of(grid: torch.Tensor, A: int) -> torch.Tensor:
    """The (B, L, A) band ``grid[b, s, s + o]`` of a full (B, L, L) grid (invalid cells not yet masked)."""
    B, L, _ = grid.shape
    return grid.gather(2, band_index(L, A, grid.device).expand(B, L, A))


def masked_pair_scores(q: torch.Tensor, k: torch.Tensor, span_mask: torch.Tensor,
                       start_bias: torch.Tensor | None = None, end_bias: torch.Tensor | None = None) -> torch.Tensor:
    """(B, L, L) float32 ``q_i . k_j (+ start_bias_i + end_bias_j)`` with invalid cells at or below ``NEG``,
    from ONE batched matmul plus one in-place fill of the lower triangle.

    The span mask and the biases ride in extra columns: ``q' = [q, NEG * ~m, 1 (, b_s, 1)]`` and
    ``k' = [k, 1, NEG * ~m (, 1, b_e)]``, so ``q'_i . k'_j`` adds ``NEG`` for each end outside
    ``span_mask`` and exactly 0 otherwise (the extra products are 0 * 1). That replaces the separate
    scale, bias and mask passes over the (B, L, L) grid, which dominate a GlobalPointer head's cost on
    CPU (experiments/perf/README.md). Cells with an invalid end hold about ``NEG`` (or ``2 * NEG``):
    callers test ``<= NEG / 2``. Same valid cells as :func:`valid_spans` with no length limit.
    """
    L = q.shape[1]
    q, k = q.float(), k.float()
    off = (~span_mask).to(q.dtype).mul_(NEG)[..., None]
    one = torch.ones_like(off)
    qs, ks = [q, off, one], [k, one, off]
    if start_bias is not None:
        qs += [start_bias.float()[..., None], one]
        ks += [one, end_bias.float()[..., None]]
    grid = torch.cat(qs, -1) @ torch.cat(ks, -1).transpose(1, 2)
    lower = torch.ones(L, L, dtype=torch.bool, device=q.device).tril_(-1)  # end < start
    lower[0, 1:] = True  # [CLS] may only pair with itself
    return grid.float().masked_fill_(lower, NEG)


def top_spans(band: torch.Tensor, n_best: int):
    """Best non-null spans of a (B, L, A) band: (starts, ends, scores), each (B, k), plus null (B,).

    Cells with score ``NEG`` are invalid; callers drop candidates whose score is <= NEG / 2.
    """
    B, L, A = band.shape
    flat = band.reshape(B, L * A)
    null = flat[:, 0].clone()
    flat = flat.clone()
    flat[:, 0] = NEG
    k = min(n_best, L * A)
    scores, idx = flat.topk(k, dim=1)
    starts = idx // A
    return starts, starts + idx % A, scores, null
