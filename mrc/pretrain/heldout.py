"""Held-out scores of :mod:`mrc.pretrain`: masked-token accuracy under fixed masks, the same at [MASK]
positions only, and the most-frequent-token (unigram) baseline a model that ignores the context reaches."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from mrc.pretrain.masking import IGNORE_INDEX, mask_generator
from mrc.pretrain.corpus import Corpora, masked_batch
from mrc.pretrain.model import masked_logits

HELDOUT_SEED_OFFSET = 7919  # held-out masks come from their own fixed stream
CONTEXT_MARGIN = 0.02  # [MASK] accuracy this close to the unigram guess: the context is hardly used yet


def heldout_batches(corpora: Corpora, tokenizer, replacements, cfg: DictConfig):
    """(masked ids, attention mask, labels) over the held-out sequences, under the same fixed masks every time."""
    held, bs = corpora.heldout, int(cfg.train.eval_batch_size)
    for i, lo in enumerate(range(0, len(held), bs)):
        yield masked_batch(held, list(range(lo, min(lo + bs, len(held)))), tokenizer, replacements, cfg.masking,
                           mask_generator(cfg.seed + HELDOUT_SEED_OFFSET, i))


@torch.no_grad()
def heldout_accuracy(model, corpora: Corpora, tokenizer, replacements, cfg: DictConfig, device) -> dict | None:
    """Held-out masked-token scores under fixed masks (the same before and after training).

    ``acc``: accuracy over every selected token, as trained (80 % [MASK], 10 % random, 10 % kept: the kept
    tenth can be copied from the input, so about 0.1 of it needs no context). ``mask_acc`` and ``mask_loss``
    (mean cross-entropy, nats): only where the input is [MASK], which must be filled in from the context;
    compare them with :func:`unigram_baseline`. Top-1 accuracy moves late (the most frequent token stays the
    best single guess until the model is confident); the loss shows earlier whether the context helps.
    """
    if len(corpora.heldout) == 0:
        return None
    model.eval()
    correct = total = mask_correct = mask_total = 0
    mask_loss = 0.0
    for ids, att, labels in heldout_batches(corpora, tokenizer, replacements, cfg):
        ids, att, labels = ids.to(device), att.to(device), labels.to(device)
        with autocast(cfg, device):
            logits, where = masked_logits(model, ids, att, labels)  # (M, V), (B, T)
        logits = logits.float()
        target, filled = labels[where], ids[where] == tokenizer.mask_token_id  # (M,), (M,) input was [MASK]
        right = logits.argmax(-1) == target
        correct, total = correct + int(right.sum()), total + int(right.numel())
        mask_correct, mask_total = mask_correct + int(right[filled].sum()), mask_total + int(filled.sum())
        mask_loss += float(F.cross_entropy(logits[filled], target[filled], reduction="sum"))
    model.train()
    return {"acc": correct / max(total, 1), "mask_acc": mask_correct / max(mask_total, 1),
            "mask_loss": mask_loss / max(mask_total, 1)}


def unigram_baseline(corpora: Corpora, tokenizer, replacements, cfg: DictConfig) -> dict | None:
    """What a model that ignores the context reaches at the held-out [MASK] positions (the plateau early
    masked-LM training sits on): ``acc`` of always guessing the training corpus's most frequent maskable
    token, ``loss`` (nats) of predicting the corpus's token frequencies (add-one smoothed) everywhere."""
    if len(corpora.heldout) == 0 or corpora.train.n_tokens == 0:
        return None
    counts = np.bincount(corpora.train.ids, minlength=len(tokenizer)).astype(np.float64)
    counts[tokenizer.all_special_ids] = 0  # never selected for prediction
    log_p = torch.from_numpy(np.log((counts + 1.0) / (counts.sum() + len(counts))))
    top = int(counts.argmax())
    hit = total = 0
    loss = 0.0
    for ids, _, labels in heldout_batches(corpora, tokenizer, replacements, cfg):
        target = labels[(labels != IGNORE_INDEX) & (ids == tokenizer.mask_token_id)]
        hit, total, loss = hit + int((target == top).sum()), total + int(target.numel()), loss - float(log_p[target].sum())
    return {"acc": hit / max(total, 1), "loss": loss / max(total, 1)}


def autocast(cfg: DictConfig, device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and bool(cfg.train.bf16))
