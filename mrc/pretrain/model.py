"""The masked-LM model of :mod:`mrc.pretrain`: building it, the loss at masked positions only, the
transplant's frozen body, and the optimizer with its warmup + linear-decay schedule."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from mrc.pretrain.masking import IGNORE_INDEX

log = logging.getLogger(__name__)
NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight")


def build_model(m: DictConfig):
    """(masked-LM model, fast tokenizer): from ``m.init_from`` or a fresh BERT sized by ``m``."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer, BertConfig, BertForMaskedLM

    from mrc.model.encoder import _wordpiece_tokenizer

    if m.init_from:
        kw = dict(local_files_only=bool(m.local_files_only))
        tokenizer = AutoTokenizer.from_pretrained(m.init_from, use_fast=True, **kw)
        return AutoModelForMaskedLM.from_pretrained(m.init_from, **kw), tokenizer
    if not m.vocab_file or not Path(m.vocab_file).is_file():
        raise FileNotFoundError(f"model.vocab_file={m.vocab_file}: a WordPiece vocab.txt is needed from scratch")
    tokenizer = _wordpiece_tokenizer(m.vocab_file, bool(m.lowercase))
    tokenizer.model_max_length = int(m.max_position)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=m.hidden_size, num_hidden_layers=m.layers,
                        num_attention_heads=m.heads, intermediate_size=m.intermediate_size,
                        max_position_embeddings=m.max_position, hidden_dropout_prob=m.dropout,
                        attention_probs_dropout_prob=m.dropout, pad_token_id=tokenizer.pad_token_id)
    return BertForMaskedLM(config), tokenizer


def mlm_head(model) -> torch.nn.Module:
    """The prediction head (transform + tied vocabulary projection) of a BERT- or RoBERTa-style MLM."""
    for name in ("cls", "lm_head"):
        if isinstance(getattr(model, name, None), torch.nn.Module):
            return getattr(model, name)
    raise TypeError(f"{type(model).__name__}: no `cls` or `lm_head` prediction head")


def masked_logits(model, input_ids, attention_mask, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (M, V) at the M positions selected for prediction, never B*T; their (B, T) mask)."""
    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
    where = labels != IGNORE_INDEX  # (B, T)
    return mlm_head(model)(hidden[where]), where


def mlm_forward(model, input_ids, attention_mask, labels) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(mean loss, correct predictions, masked tokens); logits only at masked positions."""
    logits, where = masked_logits(model, input_ids, attention_mask, labels)  # (M, V)
    target = labels[where]  # (M,)
    loss = F.cross_entropy(logits.float(), target)
    return loss, (logits.argmax(-1) == target).sum(), int(target.numel())


def set_attention_dropout(model, prob: float) -> int:
    """Set the attention-probability dropout of every self-attention module to ``prob`` for this run only
    (the model's config, and so the saved encoder, keep their value). With 0, PyTorch's fused CPU/GPU
    attention kernel replaces the one that materialises the (B, heads, T, T) probabilities: 2x the
    tokens/s of a frozen-body transplant step on 2 CPU cores. Returns the number of modules changed."""
    changed = 0
    for module in model.modules():
        if type(module).__name__.endswith("SelfAttention") and isinstance(getattr(module, "dropout", None),
                                                                          torch.nn.Dropout):
            module.dropout.p = float(prob)
            changed += 1
    if not changed:
        raise ValueError(f"model.attention_dropout: no self-attention dropout found in {type(model).__name__}")
    log.info("model.attention_dropout: %s in %d self-attention modules (the saved config keeps %s)", prob,
             changed, getattr(model.config, "attention_probs_dropout_prob", "?"))
    return changed


def freeze_body(model) -> int:
    """Train only the word embeddings and the MLM head (the tied decoder is the embedding matrix itself):
    the embedding-learning stage of a vocabulary transplant (:mod:`mrc.pretrain.transplant`). Returns trainable count."""
    keep = {id(model.get_input_embeddings().weight)} | {id(q) for q in mlm_head(model).parameters()}
    for q in model.parameters():
        q.requires_grad_(id(q) in keep)
    n = sum(q.numel() for q in model.parameters() if q.requires_grad)
    log.info("model.freeze_body: %d of %d parameters trainable (word embeddings + MLM head)", n,
             sum(q.numel() for q in model.parameters()))
    return n


def build_optimizer(model, o: DictConfig) -> torch.optim.AdamW:
    """AdamW, weight decay off for biases and LayerNorm weights (schedule: :func:`lr_factor`)."""
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if any(k in n for k in NO_DECAY) else decay).append(p)
    groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps)


def warmup_steps(o: DictConfig, total: int | None) -> int:
    """Warmup length: ``optim.warmup_steps`` if set, else ``warmup_ratio`` of the step budget."""
    if o.warmup_steps is not None:
        return int(o.warmup_steps)
    if total is None:
        raise ValueError("a time-only budget (train.max_steps=null) needs optim.warmup_steps")
    return int(o.warmup_ratio * total)


def lr_factor(step: int, warmup: int, total: int | None) -> float:
    """Linear warmup to 1 over ``warmup`` steps, then linear decay to 0 at ``total`` (flat if unknown)."""
    if step < warmup:
        return (step + 1) / warmup
    if total is None:
        return 1.0
    return max(0.0, (total - step) / max(1, total - warmup))
