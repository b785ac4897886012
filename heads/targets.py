"""Span-F1-aware soft targets (``head.span_target=f1_soft``).

The official metric gives a prediction that misses the gold by one token most of its F1, yet the usual
one-hot target treats it like any wrong span. ``f1_soft`` keeps ``1 - span_smoothing`` of each window's
target on the gold span ``g`` and spreads the rest over the *near misses*: every other candidate span ``c``
that overlaps the gold and is no longer than ``span_max_len`` tokens (the decoder's ``max_answer_len``:
longer spans are never predicted), in proportion to its overlap F1 with the gold:

    q(g) = 1 - span_smoothing
    q(c) = span_smoothing * F1(c, g) ** (1 / span_temperature) / Z,   F1 = 2 * overlap / (len(c) + len(g))

(F1 in characters; ``Z`` sums the weights of the near misses). This is label smoothing whose smoothed mass
goes only to spans the official F1 counts as partly right. Mixing with the one-hot target matters: in a
300-token context, 2,336 spans of at most 64 tokens overlap a 5-token gold, so a target proportional to F1
alone would leave the gold 0.19 % of the mass (and without the length limit, most of the mass would sit on
spans the decoder never considers). ``span_smoothing`` = 0 is the hard target; ``span_temperature``
shapes the smoothed part (1: linear in F1; toward 0: only the best near misses; larger: flatter). A window
with no near miss (a one-token context, or ``span_max_len`` 1) keeps the one-hot target.

Lengths and overlaps are counted in characters of the context (``token_chars``: each token's character
count from its offsets, ``mrc.data.batching.collate``), like the official metric's one segment per CJK
character; without ``token_chars`` every token counts as one. Windows whose label is the null slot (0, 0)
keep the one-hot target. The softmax head's analogue smooths start ``i`` by the F1 of ``(i, gold end)``
and end ``j`` by that of ``(gold start, j)`` (each within ``span_max_len`` tokens of the other end).

The loss is then the cross-entropy against ``q``: ``-sum_c q(c) log p(c)``.
"""
from __future__ import annotations

import torch

SPAN_TARGETS = ("hard", "f1_soft")


def check_span_target(span_target: str, span_temperature: float, span_smoothing: float = 0.0,
                      span_max_len: int | None = None) -> None:
    """Refuse an unknown target, a non-positive temperature, a smoothing outside [0, 1) or a bad length."""
    if span_target not in SPAN_TARGETS:
        raise ValueError(f"span_target must be one of {SPAN_TARGETS}, got {span_target!r}")
    if not span_temperature > 0:
        raise ValueError(f"span_temperature must be > 0, got {span_temperature}")
    if not 0 <= span_smoothing < 1:
        raise ValueError(f"span_smoothing must be in [0, 1), got {span_smoothing}")
    if span_max_len is not None and (isinstance(span_max_len, bool) or not isinstance(span_max_len, int)
                                     or span_max_len < 1):
        raise ValueError(f"span_max_len must be a positive integer or null, got {span_max_len!r}")


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


def _mix(f1: torch.Tensor, gold: torch.Tensor, null: torch.Tensor, smoothing: float,
         temperature: float) -> torch.Tensor:
    """Rows of ``(1 - smoothing)`` on index ``gold`` plus ``smoothing`` spread over the other indices in
    proportion to ``f1 ** (1 / temperature)`` (``f1`` (B, N): 0 for non-candidates); one-hot on ``gold``
    for null rows and for rows without a near miss."""
    near = (f1.clamp(min=0) ** (1.0 / temperature)).scatter(1, gold[:, None], 0.0)
    near = near.masked_fill(null[:, None], 0.0)
    total = near.sum(-1, keepdim=True)
    share = torch.where(total > 0, smoothing, 0.0)
    target = near / total.clamp(min=1e-12) * share
    return target.scatter_add(1, gold[:, None], 1.0 - share)


def _is_null(labels: torch.Tensor) -> torch.Tensor:
    return (labels[:, 0, 0] == 0) & (labels[:, 0, 1] == 0)


def f1_soft_grid(labels: torch.Tensor, valid: torch.Tensor, smoothing: float, temperature: float = 1.0,
                 max_len: int | None = None, token_chars: torch.Tensor | None = None) -> torch.Tensor:
    """(B, L, L) target distribution over the valid cells of each window's span grid (first gold span);
    near misses are spans of at most ``max_len`` tokens (None: any length)."""
    B, L, _ = valid.shape
    pos = torch.arange(L, device=labels.device)
    gs, ge = labels[:, 0, 0][:, None, None], labels[:, 0, 1][:, None, None]
    cum = cumulative_chars(token_chars, valid[:, :, 0])
    if max_len is not None:
        valid = valid & (pos[None, None, :] - pos[None, :, None] < max_len)
    f1 = span_f1(cum, pos[None, :, None].expand(B, L, L), pos[None, None, :].expand(B, L, L), gs, ge) * valid
    gold = labels[:, 0, 0] * L + labels[:, 0, 1]
    return _mix(f1.reshape(B, L * L), gold, _is_null(labels), smoothing, temperature).reshape(B, L, L)


def f1_soft_positions(labels: torch.Tensor, span_mask: torch.Tensor, smoothing: float,
                      temperature: float = 1.0, max_len: int | None = None,
                      token_chars: torch.Tensor | None = None):
    """(B, L) start and end target distributions: start ``i`` smoothed by the F1 of ``(i, gold end)``, end
    ``j`` by that of ``(gold start, j)``, both over ``span_mask`` ([CLS] excluded unless the label is null)
    and within ``max_len`` tokens of the other gold end (None: any distance)."""
    L = span_mask.shape[1]
    pos = torch.arange(L, device=labels.device)[None]
    gs, ge = labels[:, 0, 0][:, None], labels[:, 0, 1][:, None]
    allowed = span_mask & (pos > 0)
    start_ok, end_ok = allowed, allowed
    if max_len is not None:
        start_ok, end_ok = allowed & (ge - pos < max_len), allowed & (pos - gs < max_len)
    null = _is_null(labels)
    cum = cumulative_chars(token_chars, span_mask)
    B = span_mask.shape[0]
    start = _mix(span_f1(cum, pos.expand(B, L), ge, gs, ge) * start_ok, gs[:, 0], null, smoothing, temperature)
    end = _mix(span_f1(cum, gs, pos.expand(B, L), gs, ge) * end_ok, ge[:, 0], null, smoothing, temperature)
    return start, end


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``-sum q log softmax(logits)`` over the last dim, averaged over rows (cells with q = 0 add nothing)."""
    logp = logits.float().log_softmax(-1)
    return -(target * logp).sum(-1).mean()
