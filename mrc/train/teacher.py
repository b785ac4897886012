"""``distill.teacher``: load a teacher checkpoint, check it fits the student, attach it to the student's loss;
``distill.cache``: score the training windows with it once."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mrc.data.batching import batches
from mrc.eval.inference import forward_batches
from mrc.model import checkpoint
from mrc.model.distill import Distiller, score_kind, teacher_top_k
from mrc.model.span_model import max_positions
from mrc.train import loop
from mrc.train.inputs import ConfigError

log = logging.getLogger(__name__)
# Texts both tokenizers must cut identically: casing, accents, full-width forms, CJK, digits, punctuation
PROBES = ("Hello WORLD, naïve Café Straße", "北京是中国的首都。曹雪芹写了《红楼梦》", "２０２６年ＡＩ大会, 3.14%",
          "  spaces\tand\nnewlines  ", "iPhone 15 Pro Max 售价 7999 元")
SPECIAL = ("cls_token_id", "sep_token_id", "pad_token_id", "unk_token_id", "mask_token_id")


def tokenizer_difference(ours, theirs) -> str | None:
    """Why two tokenizers would give a window different ids (vocabulary, special tokens, or how they cut
    the probe texts: normalisation and pre-tokenisation), or None when they agree."""
    a, b = ours.get_vocab(), theirs.get_vocab()
    if a != b:
        return f"{len(b)} vs {len(a)} tokens, {len(set(a.items()) ^ set(b.items()))} entries differ"
    for name in SPECIAL:
        if getattr(ours, name, None) != getattr(theirs, name, None):
            return f"{name} {getattr(theirs, name, None)} vs {getattr(ours, name, None)}"
    for text in PROBES:
        if ours(text, add_special_tokens=False)["input_ids"] != theirs(text, add_special_tokens=False)["input_ids"]:
            return f"the same vocabulary cuts {text!r} differently (normalisation or pre-tokenisation)"
    return None


def attach_teacher(distill, model, tokenizer, max_len: int, device: str) -> None:
    """Set ``model.distiller`` from the ``distill`` options when ``distill.teacher`` names a checkpoint dir.

    The teacher scores the student's own windows, so it must use the same tokenizer (the same vocabulary,
    token for token, the same special tokens, and the same cuts of a few probe texts); a teacher whose position
    table is shorter than ``max_len`` is refused too.
    """
    if not distill or not distill.get("teacher"):
        return
    path = Path(str(distill.teacher)).expanduser()
    if not (path / "mrc.yaml").is_file() and (path / "checkpoint" / "mrc.yaml").is_file():
        path = path / "checkpoint"  # a run dir: its best checkpoint
    try:  # its mrc.yaml is read as plain data (no ${...} resolved, no aliases), its files checked against the manifest
        teacher, teacher_tok, _ = checkpoint.load(path, device)
    except checkpoint.CheckpointError as e:
        raise ConfigError(f"distill.teacher: {e}") from None
    differ = tokenizer_difference(tokenizer, teacher_tok)
    if differ:
        raise ConfigError(f"distill.teacher={path}: its tokenizer differs from the student's ({differ}); "
                          "distillation needs the same tokenizer, so train the student with the teacher's encoder "
                          "vocabulary and tokenizer settings")
    limit = max_positions(teacher.encoder.config)
    if limit is not None and max_len > limit:
        raise ConfigError(f"distill.teacher={path}: its encoder has {limit} positions, fewer than "
                          f"data.max_len={max_len}; set data.max_len<={limit}")
    try:
        model.distiller = Distiller(teacher, float(distill.alpha), float(distill.temperature), score_kind(model.head),
                                    student_head=model.head)
    except ValueError as e:
        raise ConfigError(f"distill: {e}") from None
    log.info("distilling from %s (%s head): alpha %.2f, temperature %.2f", path, type(teacher.head).__name__,
             distill.alpha, distill.temperature)


def cache_teacher(model, windows: list, *, batch_size: int, device, pad_id: int, amp_dtype=None,
                  top_k: int = 64, progress: bool = False) -> dict:
    """``distill.cache``: score every training window with ``model.distiller``'s teacher once and keep its
    top-k distributions on the windows (``Window.teacher``), so that training batches carry them and no
    teacher runs during training. Returns what ``metrics.json`` records: windows, ``top_k``, seconds, and the
    mean share of the teacher's probability the kept cells hold (1.0: the cached loss is the full KL)."""
    dist = model.distiller
    if top_k < 1:
        raise ConfigError(f"distill.top_k must be >= 1, got {top_k}")
    log.info("caching the teacher's distributions over %d training windows (top %d cells, T=%.2f)",
             len(windows), top_k, dist.temperature)
    t0, covered, n = time.perf_counter(), 0.0, 0
    said = t0
    order = batches([len(w.input_ids) for w in windows], batch_size, shuffle=False)
    bar = tqdm(order, desc="teacher", unit="batch", disable=None if progress else True)
    with torch.inference_mode():
        scored = forward_batches(dist.teacher, windows, bar, device=device, pad_id=pad_id, amp_dtype=amp_dtype)
        for done, (idx, batch, scores) in enumerate(scored, 1):
            rows, cols, logp, rest = (t.cpu().numpy() for t in teacher_top_k(
                scores, batch["span_mask"], dist.kind, dist.temperature, top_k))
            for b, i in enumerate(idx):
                windows[i].teacher = (rows[b], cols[b], logp[b], rest[b])
            covered += float((1 - np.exp(rest)).sum())
            n += rest.size
            now = time.perf_counter()
            if bar.disable and now - said >= loop.PROGRESS_EVERY_S:  # no bar shown: a log line
                said = now
                log.info("teacher: batch %d/%d, done in ~%s", done, len(order),
                         loop.duration((now - t0) / done * (len(order) - done)))
    seconds = time.perf_counter() - t0
    info = {"windows": len(windows), "top_k": top_k, "seconds": round(seconds, 2),
            "mass_kept": round(covered / max(n, 1), 5)}
    log.info("teacher cached in %.0f s: the kept cells hold %.2f %% of its probability on average",
             seconds, 100 * info["mass_kept"])
    return info
