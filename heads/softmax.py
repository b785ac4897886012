"""Softmax start/end head: the BERT-SQuAD head (Devlin et al., 2019).

Scale across windows: ``log p(start) + log p(end)``, each a softmax over the window's ``span_mask``
positions ([CLS] included), so every window's span scores are log-probabilities of the same kind.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .base import NEG, SpanHead, band_index, band_width, span_band
from .targets import check_span_target, f1_soft_positions, soft_cross_entropy


class SoftmaxHead(SpanHead):
    """Independent start and end distributions over the allowed positions; cross-entropy on each."""

    def __init__(self, hidden_size: int, dropout: float = 0.0, span_target: str = "hard",
                 span_temperature: float = 1.0, span_smoothing: float = 0.1, span_max_len: int | None = None):
        super().__init__()
        check_span_target(span_target, span_temperature, span_smoothing, span_max_len)
        self.span_target, self.span_temperature = span_target, span_temperature
        self.span_smoothing, self.span_max_len = span_smoothing, span_max_len
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(hidden_size, 2)

    def forward(self, hidden, span_mask):
        """(B, L, H) -> (B, L, 2) float32 start/end logits, ``NEG`` outside ``span_mask``."""
        logits = self.proj(self.dropout(hidden)).float()
        return logits.masked_fill(~span_mask[:, :, None], NEG)

    def loss(self, scores, span_mask, labels, token_chars=None):
        """Mean of start and end cross-entropy against the first gold span of each window (one-hot, or
        F1-soft start/end targets: ``heads.targets``)."""
        if self.span_target == "f1_soft":
            q_start, q_end = f1_soft_positions(labels, span_mask, self.span_smoothing, self.span_temperature,
                                               self.span_max_len, token_chars)
            return (soft_cross_entropy(scores[..., 0], q_start) + soft_cross_entropy(scores[..., 1], q_end)) / 2
        start, end = labels[:, 0, 0], labels[:, 0, 1]
        return (F.cross_entropy(scores[..., 0], start) + F.cross_entropy(scores[..., 1], end)) / 2

    def span_scores(self, scores, span_mask, max_answer_len):
        """Band of ``log p(start) + log p(end)`` over valid spans."""
        logp = scores.log_softmax(dim=1)  # (B, L, 2)
        L = logp.shape[1]
        A = band_width(L, max_answer_len)
        band = logp[:, :, None, 0] + logp[:, band_index(L, A, logp.device), 1]  # (B, L, A)
        return band.masked_fill_(~span_band(span_mask, A), NEG)

    def token_scores(self, scores, span_mask):
        """(B, L, 2) ``log p(start)``, ``log p(end)`` per token (``NEG``-level outside ``span_mask``)."""
        return scores.log_softmax(dim=1)
