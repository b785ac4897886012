"""Necks: what sits between the encoder and the head (``conf/neck/``, Hydra ``_target_``).

One contract: ``neck(states, attention_mask) -> (B, L, out_size)``, where ``states`` is the tuple of the
encoder's hidden states — every layer's (embeddings first) when the neck's ``all_layers`` is true, else
just the last layer's — and ``out_size`` is the width the head is built for. ``NECKS`` names every neck
this project ships; a checkpoint may only name one of these (``mrc.model.checkpoint``).

- ``none``: the last layer's states, unchanged (no parameters; a checkpoint without a neck section).
- ``bigru``: a bidirectional GRU over the window's real tokens (packed: padding never reaches the
  backward direction, so a window's states do not depend on how much its batch was padded).
- ``layer_mix``: a learned softmax-weighted sum of the last ``last_n`` layers times a learned scale
  (ELMo's scalar mix, Peters et al., 2018); lower layers keep more lexical detail, which span
  boundaries need.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


class NoNeck(nn.Module):
    """The encoder's last hidden states as they are."""

    all_layers = False

    def __init__(self, hidden_size: int, num_layers: int = 0):
        super().__init__()
        self.out_size = hidden_size

    def forward(self, states, attention_mask):
        """(last,) -> last (B, L, H)."""
        return states[-1]


class BiGRUNeck(nn.Module):
    """A bidirectional GRU on the last layer's states; output width ``2 * size`` (``size`` default H / 2)."""

    all_layers = False

    def __init__(self, hidden_size: int, num_layers: int = 0, size: int | None = None, layers: int = 1,
                 dropout: float = 0.0):
        super().__init__()
        size = size or max(1, hidden_size // 2)
        self.gru = nn.GRU(hidden_size, size, num_layers=layers, batch_first=True, bidirectional=True,
                          dropout=dropout if layers > 1 else 0.0)
        self.out_size = 2 * size

    def forward(self, states, attention_mask):
        """(B, L, H) -> (B, L, 2 * size); padded positions are 0."""
        hidden = states[-1]
        L = hidden.shape[1]
        lengths = attention_mask.sum(1).clamp(min=1).cpu()  # windows are right-padded (mrc.data.batching)
        packed = pack_padded_sequence(hidden.float(), lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        return pad_packed_sequence(out, batch_first=True, total_length=L)[0]


class LayerMixNeck(nn.Module):
    """``gamma * sum_k softmax(w)_k * h_k`` over the last ``last_n`` hidden states (embeddings count as one)."""

    all_layers = True

    def __init__(self, hidden_size: int, num_layers: int = 0, last_n: int = 4):
        super().__init__()
        if last_n < 1 or (num_layers and last_n > num_layers + 1):
            raise ValueError(f"neck.last_n must be in 1..{num_layers + 1} (the encoder's layers plus its "
                             f"embeddings), got {last_n}")
        self.last_n, self.out_size = last_n, hidden_size
        self.weights = nn.Parameter(torch.zeros(last_n))  # equal weights at the start
        self.gamma = nn.Parameter(torch.ones(()))

    def forward(self, states, attention_mask):
        """Every layer's (B, L, H) -> their mix (B, L, H)."""
        stacked = torch.stack(states[-self.last_n:], 0)  # (n, B, L, H)
        w = self.weights.softmax(0).to(stacked.dtype)
        return self.gamma.to(stacked.dtype) * torch.einsum("n,nblh->blh", w, stacked)


# name (the conf/neck option) -> class; the class path is the same neck's Hydra ``_target_``.
NECKS = {"none": NoNeck, "bigru": BiGRUNeck, "layer_mix": LayerMixNeck}
