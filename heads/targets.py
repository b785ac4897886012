"""Span-F1-aware soft targets (``head.span_target=f1_soft``).

The official metric gives a prediction that misses the gold by one token most of its F1, yet the usual
one-hot target treats it like any wrong span. ``f1_soft`` spreads each window's target over every
valid candidate span ``c`` in proportion to its overlap F1 with the gold span ``g``:

    q(c) ∝ F1(c, g) ** (1 / span_temperature),   F1 = 2 * overlap / (len(c) + len(g))   (in characters)

so the gold keeps the largest share, a span one token off gets a partial share and a span that does not
overlap the gold gets none. ``span_temperature`` → 0 approaches the one-hot target; 1 is linear in F1;
larger values flatten it. Lengths and overlaps are counted in characters of the context (``token_chars``:
each token's character count from its offsets, ``mrc.data.batching.collate``), like the official metric's
one segment per CJK character; without ``token_chars`` every token counts as one. Windows whose label is the
null slot (0, 0) keep the one-hot target. The softmax head's analogue scores start ``i`` by the F1 of
``(i, gold end)`` and end ``j`` by that of ``(gold start, j)``.

The loss is then the cross-entropy against ``q``: ``-sum_c q(c) log p(c)``.
"""
from __future__ import annotations

import torch

SPAN_TARGETS = ("hard", "f1_soft")


def check_span_target(span_target: str, span_temperature: float) -> None:
    """Refuse an unknown target or a non-positive temperature."""
    if span_target not in SPAN_TARGETS:
        raise ValueError(f"span_target must be one of {SPAN_TARGETS}, got {span_target!r}")
    if not span_temperature > 0:
        raise ValueError(f"span_temperature must be > 0, got {span_temperature}")


def cumulative_chars(token_chars: torch.Tensor | None, span_mask: torch.Tensor) -> torch.Tensor:
    """(B, L + 1) characters before each token (``token_chars`` (B, L); None: one per token)."""
    chars = torch.ones_like(span_mask, dtype=torch.float32) if token_chars is None else token_chars.float()
    return torch.cat([chars.new_zeros(chars.shape[0], 1), chars.cumsum(1)], 1)


def _chars(cum: torch.Tensor, first: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """Characters in tokens ``first..last`` (inclusive; 0 where last < first); index tensors (B, ...)."""
    shape = torch.broadcast_shapes(first.shape, last.shape)
    B, n = cum.shape[0], cum.shape[1] - 1
    lo = cum.gather(1, first.expand(shape).clamp(0, n).reshape(B, -1)).reshape(shape)
    hi = cum.gather(1, (last.expand(shape) + 1).clamp(0, n).reshape(B, -1)).reshape(shape)
    return torch.where(last.expand(shape) >= first.expand(shape), hi - lo, 0.0)


def span_f1(cum, start, end, gold_start, gold_end) -> torch.Tensor:
    """Character-overlap F1 of spans ``(start, end)`` against ``(gold_start, gold_end)`` (inclusive token
    indices, (B, ...) broadcast; ``cum`` from :func:`cumulative_chars`); 0 for an empty span or no overlap."""
    overlap = _chars(cum, torch.maximum(start, gold_start), torch.minimum(end, gold_end))
    length, gold = _chars(cum, start, end), _chars(cum, gold_start, gold_end)
    return torch.where(length > 0, 2 * overlap / (length + gold).clamp(min=1e-6), 0.0)


def _normalise(weight: torch.Tensor, null: torch.Tensor, temperature: float) -> torch.Tensor:
    """Rows of ``F1 ** (1 / T)``, normalised; rows of null windows one-hot on index 0."""
    weight = weight.clamp(min=0) ** (1.0 / temperature)
    weight = weight / weight.sum(-1, keepdim=True).clamp(min=1e-12)
    onehot = torch.zeros_like(weight)
    onehot[..., 0] = 1.0
    return torch.where(null.reshape(-1, *[1] * (weight.dim() - 1)), onehot, weight)


def f1_soft_grid(labels: torch.Tensor, valid: torch.Tensor, temperature: float,
                 token_chars: torch.Tensor | None = None) -> torch.Tensor:
    """(B, L, L) target distribution over the valid cells of each window's span grid (first gold span)."""
    B, L, _ = valid.shape
    pos = torch.arange(L, device=labels.device)
    gs, ge = labels[:, 0, 0][:, None, None], labels[:, 0, 1][:, None, None]
    cum = cumulative_chars(token_chars, valid[:, :, 0])
    f1 = span_f1(cum, pos[None, :, None].expand(B, L, L), pos[None, None, :].expand(B, L, L), gs, ge) * valid
    null = (labels[:, 0, 0] == 0) & (labels[:, 0, 1] == 0)
    return _normalise(f1.reshape(B, L * L), null, temperature).reshape(B, L, L)


def f1_soft_positions(labels: torch.Tensor, span_mask: torch.Tensor, temperature: float,
                      token_chars: torch.Tensor | None = None):
    """(B, L) start and end target distributions: start ``i`` weighted by F1 of ``(i, gold end)``, end
    ``j`` by F1 of ``(gold start, j)``, both over ``span_mask`` ([CLS] excluded unless the label is null)."""
    L = span_mask.shape[1]
    pos = torch.arange(L, device=labels.device)[None]
    gs, ge = labels[:, 0, 0][:, None], labels[:, 0, 1][:, None]
    allowed = span_mask & (pos > 0)
    null = (labels[:, 0, 0] == 0) & (labels[:, 0, 1] == 0)
    cum = cumulative_chars(token_chars, span_mask)
    B = span_mask.shape[0]
    start = _normalise(span_f1(cum, pos.expand(B, L), ge, gs, ge) * allowed, null, temperature)
    end = _normalise(span_f1(cum, gs, pos.expand(B, L), gs, ge) * allowed, null, temperature)
    return start, end


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``-sum q log softmax(logits)`` over the last dim, averaged over rows (cells with q = 0 add nothing)."""
    logp = logits.float().log_softmax(-1)
    return -(target * logp).sum(-1).mean()
