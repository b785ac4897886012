"""GlobalPointer (Su, 2021) and Efficient GlobalPointer (Su, 2022) span heads.

- GlobalPointer: https://kexue.fm/archives/8373 — score(i, j) = <RoPE(q_i), RoPE(k_j)> / sqrt(d).
- Efficient GlobalPointer: https://kexue.fm/archives/8877 — one shared projection p; q/k are its
  even/odd halves, plus start/end biases from a small dense layer on p.

Scale across windows depends on ``loss``:
- ``softmax`` (single gold): the grid is trained as one softmax over the window's valid cells, so the
  reported score is that log-probability — comparable across windows like the softmax head's.
- ``multilabel`` (several golds, Su's multi-label cross-entropy): every cell is trained against the
  fixed threshold 0, so raw scores are already on one scale in every window.

``span_target``: ``hard`` (one-hot on the gold cell) or ``f1_soft`` (softmax loss only: ``span_smoothing``
of the target mass moves from the gold to the cells of near-miss spans, in proportion to their F1 with the
gold, ``heads.targets``).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .base import NEG, SpanHead, band_of, band_width, masked_pair_scores, primary_target, span_band
from .targets import check_span_target, f1_soft_grid, soft_cross_entropy


def rotary(x: torch.Tensor) -> torch.Tensor:
    """Apply rotary position embedding to (B, L, d) with interleaved (even, odd) pairs."""
    B, L, d = x.shape
    inv_freq = 10000.0 ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)
    angle = torch.arange(L, device=x.device, dtype=torch.float32)[:, None] * inv_freq[None]  # (L, d/2)
    # each angle twice, (L, d): the values of repeat_interleave(2, -1), which ONNX export mistranslates
    cos = torch.stack([angle.cos()] * 2, dim=2).reshape(L, d)
    sin = torch.stack([angle.sin()] * 2, dim=2).reshape(L, d)
    rotated = torch.stack([-x[..., 1::2], x[..., ::2]], dim=-1).reshape(B, L, d)
    return x * cos + rotated * sin


def multilabel_ce(grid: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """Su's multi-label CE: log(1 + sum_neg e^s) + log(1 + sum_pos e^-s), averaged over the batch.

    grid (B, N) float32 with invalid cells at ``NEG``; gold (B, N) bool.
    """
    zeros = grid.new_zeros(grid.shape[0], 1)
    neg = torch.cat([grid.masked_fill(gold, NEG), zeros], dim=1)
    pos = torch.cat([(-grid).masked_fill(~gold, NEG), zeros], dim=1)
    return (neg.logsumexp(1) + pos.logsumexp(1)).mean()


def log_normaliser(flat: torch.Tensor, at: torch.Tensor | None = None) -> torch.Tensor:
    """``logsumexp`` over dim 1 of (B, N), read off ``log_softmax`` at one cell per row
    (``x_c - log_softmax(x)_c``): exact, and about 3x faster than ``torch.logsumexp`` on CPU
    (measured 35 vs 98 ms for 64 x 384 x 384 cells, experiments/perf/README.md). ``at`` (B,) picks the
    cell; it should score near the row's maximum, where ``log_softmax`` is most precise. Default: the
    row's argmax (one more pass over ``flat``)."""
    top = (flat.argmax(1) if at is None else at)[:, None]
    return (flat.gather(1, top) - flat.log_softmax(1).gather(1, top))[:, 0]


class GlobalPointer(SpanHead):
    """Span grid from rotary q/k dot products; ``loss`` = ``softmax`` or ``multilabel``."""

    def __init__(self, hidden_size: int, head_size: int = 64, rope: bool = True, loss: str = "softmax",
                 dropout: float = 0.0, span_target: str = "hard", span_temperature: float = 1.0,
                 span_smoothing: float = 0.1, span_max_len: int | None = None):
        super().__init__()
        if loss not in ("softmax", "multilabel"):
            raise ValueError(f"GlobalPointer loss must be 'softmax' or 'multilabel', got {loss!r}")
        check_span_target(span_target, span_temperature, span_smoothing, span_max_len)
        if span_target != "hard" and loss != "softmax":
            raise ValueError(f"span_target={span_target!r} needs loss='softmax' (multilabel trains each cell "
                             "against a threshold, not a distribution)")
        self.span_target, self.span_temperature = span_target, span_temperature
        self.span_smoothing, self.span_max_len = span_smoothing, span_max_len
        if head_size % 2:
            raise ValueError(f"head_size must be even for rotary embeddings, got {head_size}")
        self.head_size, self.rope, self.loss_type = head_size, rope, loss
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(hidden_size, 2 * head_size)

    def qk(self, hidden):
        """(B, L, H) -> q, k (B, L, d) float32 plus the projection (for subclasses)."""
        p = self.proj(self.dropout(hidden)).float()
        q, k = p[..., ::2], p[..., 1::2]
        if self.rope:
            q, k = rotary(q), rotary(k)
        return q, k, p

    def forward(self, hidden, span_mask):
        """(B, L, H) -> (B, L, L) float32 grid, ``<= NEG / 2`` on invalid cells (no length limit)."""
        q, k, _ = self.qk(hidden)
        return masked_pair_scores(q / math.sqrt(self.head_size), k, span_mask)

    def loss(self, scores, span_mask, labels, token_chars=None):
        """Softmax CE over the flattened grid (first gold; one-hot or F1-soft target) or multi-label CE
        over all golds."""
        B, L, _ = scores.shape
        flat = scores.reshape(B, L * L)
        if self.span_target == "f1_soft":
            target = f1_soft_grid(labels, scores > NEG / 2, self.span_smoothing, self.span_temperature,
                                  self.span_max_len, token_chars)
            return soft_cross_entropy(flat, target.reshape(B, L * L))
        if self.loss_type == "softmax":
            return nn.functional.cross_entropy(flat, primary_target(labels, L))
        gold = torch.zeros_like(flat, dtype=torch.bool)
        ok = labels[..., 0] >= 0
        rows = torch.arange(B, device=labels.device)[:, None].expand_as(ok)
        gold[rows[ok], (labels[..., 0] * L + labels[..., 1])[ok]] = True
        return multilabel_ce(flat, gold)

    def span_scores(self, scores, span_mask, max_answer_len):
        """Band of log-probabilities (softmax loss: normalised over every valid cell of the full grid)
        or of raw scores (multilabel), limited to ``max_answer_len``."""
        B, L, _ = scores.shape
        A = band_width(L, max_answer_len)
        invalid = ~span_band(span_mask, A)
        band = band_of(scores, A).masked_fill_(invalid, NEG)
        if self.loss_type == "softmax":
            # normalise at the band's best cell: valid, near the grid's max, and no pass over the grid to find it
            best = band.reshape(B, L * A).argmax(1)
            start = best // A
            norm = log_normaliser(scores.reshape(B, L * L), start * L + start + best % A)
            band = band.sub_(norm[:, None, None]).masked_fill_(invalid, NEG)
        return band


class EfficientGlobalPointer(GlobalPointer):
    """GlobalPointer with a shared q/k projection and per-position start/end biases (same contract)."""

    def __init__(self, hidden_size: int, head_size: int = 64, rope: bool = True, loss: str = "softmax",
                 dropout: float = 0.0, span_target: str = "hard", span_temperature: float = 1.0,
                 span_smoothing: float = 0.1, span_max_len: int | None = None):
        super().__init__(hidden_size, head_size, rope, loss, dropout, span_target, span_temperature,
                         span_smoothing, span_max_len)
        self.bias = nn.Linear(2 * head_size, 2)

    def forward(self, hidden, span_mask):
        """Grid = <q_i, k_j>/sqrt(d) + (b_start(i) + b_end(j)) / 2, ``<= NEG / 2`` on invalid cells."""
        q, k, p = self.qk(hidden)
        bias = self.bias(p) / 2  # (B, L, 2)
        return masked_pair_scores(q / math.sqrt(self.head_size), k, span_mask, bias[..., 0], bias[..., 1])
