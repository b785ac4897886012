"""Encoder + span head: the only model class; the head comes from Hydra ``_target_``."""
from __future__ import annotations

import torch
from torch import nn


class SpanModel(nn.Module):
    """Runs the encoder once and hands its last hidden states to the head."""

    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder, self.head = encoder, head
        # Encoders without segment embeddings (e.g. RoBERTa-style type_vocab_size=1) get no token types.
        self.use_token_types = getattr(encoder.config, "type_vocab_size", 0) > 1

    def forward(self, input_ids, attention_mask, token_type_ids, span_mask, **_):
        """(B, L) inputs -> the head's scores."""
        kwargs = {"token_type_ids": token_type_ids} if self.use_token_types else {}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        return self.head(hidden, span_mask)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Head loss on one collated batch."""
        scores = self(**batch)
        return self.head.loss(scores, batch["span_mask"], batch["labels"])
