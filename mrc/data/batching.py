"""Dynamic padding and length-grouped batches over windows."""
from __future__ import annotations

import numpy as np
import torch

from mrc.data.features import Window


def collate(windows: list[Window], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad a list of windows to the longest one: ids/masks (B, L), labels (B, K, 2) padded with -1, and
    ``token_chars`` (B, L): characters of each context token (0 elsewhere), for span-F1-aware targets; with
    cached teacher distributions (``Window.teacher``) also ``teacher_rows`` / ``teacher_cols`` / ``teacher_logp``
    (B, R, k) and ``teacher_log_rest`` (B, R)."""
    B, L = len(windows), max(len(w.input_ids) for w in windows)
    K = max(len(w.labels) for w in windows)
    input_ids = np.full((B, L), pad_id, np.int64)
    token_type_ids = np.zeros((B, L), np.int64)
    attention_mask = np.zeros((B, L), np.int64)
    span_mask = np.zeros((B, L), bool)
    question_match = np.zeros((B, L), np.int64)
    labels = np.full((B, K, 2), -1, np.int64)
    token_chars = np.zeros((B, L), np.int64)
    for b, w in enumerate(windows):
        n = len(w.input_ids)
        input_ids[b, :n] = w.input_ids
        token_type_ids[b, :n] = w.token_type_ids
        attention_mask[b, :n] = 1
        span_mask[b, :n] = w.span_mask
        if w.question_match is not None:
            question_match[b, :n] = w.question_match
        labels[b, :len(w.labels)] = w.labels
        offs = np.asarray(w.offsets)
        token_chars[b, :n] = np.where(offs[:, 0] >= 0, offs[:, 1] - offs[:, 0], 0)
    out = {"input_ids": torch.from_numpy(input_ids), "token_type_ids": torch.from_numpy(token_type_ids),
           "attention_mask": torch.from_numpy(attention_mask), "span_mask": torch.from_numpy(span_mask),
           "question_match": torch.from_numpy(question_match), "labels": torch.from_numpy(labels),
           "token_chars": torch.from_numpy(token_chars)}
    if windows[0].teacher is not None:  # distill.cache: the teacher's cached distributions, stacked
        for i, key in enumerate(("teacher_rows", "teacher_cols", "teacher_logp", "teacher_log_rest")):
            out[key] = torch.from_numpy(np.stack([w.teacher[i] for w in windows]))
    return out


def batches(lengths: list[int], batch_size: int, *, shuffle: bool, seed: int = 0,
            group_factor: int = 50) -> list[list[int]]:
    """Index batches. Eval: sorted by length. Train: shuffled, sorted within pools of
    ``group_factor`` batches so padding stays small, then the batch order shuffled."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    lengths = np.asarray(lengths)
    if not shuffle:
        order = np.argsort(-lengths, kind="stable")
        return [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    pool = batch_size * max(group_factor, 1)
    out = []
    for i in range(0, len(order), pool):
        chunk = order[i:i + pool]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        out.extend(chunk[j:j + batch_size].tolist() for j in range(0, len(chunk), batch_size))
    return [out[i] for i in rng.permutation(len(out))]
