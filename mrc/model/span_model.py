"""Encoder (+ neck) + span head: the only model class; neck and head come from Hydra ``_target_``."""
from __future__ import annotations

import torch
from torch import nn

from mrc.model.distill import score_kind, symmetric_kl
from mrc.model.necks import NoNeck


class SpanModel(nn.Module):
    """Runs the encoder once, passes its hidden states through the neck (default: the last layer's,
    unchanged; :mod:`mrc.model.necks`) and hands the result to the head.

    ``match_feature`` adds a learned embedding of "this context token also occurs in the question"
    to the input embeddings (the exact-match feature of DrQA, Chen et al., 2017). It is zero-initialised,
    so it starts as a no-op; it helps encoders trained from scratch find the question's words.
    """

    def __init__(self, encoder: nn.Module, head: nn.Module, match_feature: bool = False,
                 neck: nn.Module | None = None):
        super().__init__()
        self.encoder, self.head = encoder, head
        self.neck = neck if neck is not None else NoNeck(encoder.config.hidden_size)
        self.distiller = None  # a mrc.model.distill.Distiller (not a module: the teacher is never saved)
        self.rdrop = 0.0  # R-Drop's alpha (trainer.rdrop): a training option, never saved
        # Encoders without segment embeddings (e.g. RoBERTa-style type_vocab_size=1) get no token types.
        self.use_token_types = getattr(encoder.config, "type_vocab_size", 0) > 1
        self.match_embed = None
        if match_feature:
            self.match_embed = nn.Embedding(2, encoder.config.hidden_size)
            nn.init.zeros_(self.match_embed.weight)

    def forward(self, input_ids, attention_mask, token_type_ids, span_mask, question_match=None, **_):
        """(B, L) inputs -> the head's scores."""
        kwargs = {"token_type_ids": token_type_ids} if self.use_token_types else {}
        if self.match_embed is not None:
            embeds = self.encoder.get_input_embeddings()(input_ids) + self.match_embed(question_match)
            kwargs["inputs_embeds"] = embeds
        else:
            kwargs["input_ids"] = input_ids
        if self.neck.all_layers:  # every layer's states: (embeddings, layer 1, ..., layer N)
            states = self.encoder(attention_mask=attention_mask, output_hidden_states=True, **kwargs).hidden_states
        else:
            states = (self.encoder(attention_mask=attention_mask, **kwargs).last_hidden_state,)
        hidden = self.neck(states, attention_mask)  # (B, L, H)
        if torch.is_autocast_enabled(hidden.device.type):
            # Under bf16 autocast only the encoder (and neck) run in bf16: the head's span grid / start-end
            # logits, the losses over them and decoding stay fp32, where a bf16 score's 8-bit mantissa would
            # tie close spans and the masks' large negatives would lose their margin.
            with torch.autocast(device_type=hidden.device.type, enabled=False):
                return self.head(hidden.float(), span_mask)
        return self.head(hidden, span_mask)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Head loss on one collated batch (mixed with the distillation loss when a teacher is set). With
        ``rdrop`` > 0 in training (R-Drop, Liang et al., 2021) a second pass with fresh dropout: the gold loss is
        the two passes' mean, plus ``rdrop`` times the symmetric KL between their distributions
        (:func:`mrc.model.distill.symmetric_kl`); distillation reads the first pass."""
        scores = self(**batch)
        gold = self._gold_loss(scores, batch)
        again = self(**batch) if self.rdrop and self.training else None
        if again is not None:
            gold = (gold + self._gold_loss(again, batch)) / 2
        loss = gold if self.distiller is None else self.distiller(scores, batch, gold)
        if again is not None:
            loss = loss + self.rdrop * symmetric_kl(scores, again, batch["span_mask"], score_kind(self.head))
        return loss

    def _gold_loss(self, scores, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head.loss(scores, batch["span_mask"], batch["labels"], token_chars=batch.get("token_chars"))

    def span_state(self) -> dict[str, torch.Tensor]:
        """Parameters outside the encoder (head, neck, match embedding, adapters), for checkpoints."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("encoder.")}


def max_positions(config) -> int | None:
    """Longest input (tokens, special tokens included) the encoder's position table allows; None if unbounded.

    RoBERTa-style encoders (``model_type`` roberta, xlm-roberta, camembert) start positions at
    ``padding_idx + 1``, so two rows of their table are never used by real tokens.
    """
    n = getattr(config, "max_position_embeddings", None)
    if not isinstance(n, int) or getattr(config, "position_embedding_type", "absolute") != "absolute":
        return None
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        return n - (getattr(config, "pad_token_id", 1) or 1) - 1
    return n
