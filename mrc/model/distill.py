"""Knowledge distillation from a trained span model (``distill.teacher``; Hinton et al., 2015).

The student trains on ``alpha · T² · KL(teacher || student) + (1 − alpha) · gold loss`` where both
distributions are the heads' own, softened by the temperature ``T``:

- softmax head: the start and the end distributions over the window's ``span_mask`` (KL averaged over the two);
- GlobalPointer heads: one distribution over every valid cell of the span grid (``valid_spans``: both ends
  in ``span_mask``, start <= end, [CLS] only as the null cell).

``T²`` keeps the gradients' size independent of ``T`` (at ``T = 1`` it is the plain KL). By default the
teacher runs in eval mode under ``no_grad`` on the student's own batches, so teacher and student must share
a tokenizer (the run checks their vocabularies). The teacher is held outside the student's modules: it is
never trained, saved or counted.

Cached (``distill.cache=true``): the teacher scores every training window once before training
(:func:`teacher_top_k`), keeping per distribution its ``top_k`` most probable cells at temperature ``T`` and
the probability left over. The loss (:func:`kd_loss_cached`) is then the KL between the two distributions
coarsened to those cells plus one "rest" bin: exact when ``top_k`` covers every cell, otherwise a lower
bound of the full KL that differs from it only by how the teacher's left-over mass is spread. A distilled
step then costs what a plain one does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from heads.base import NEG, valid_spans
from heads.softmax import SoftmaxHead


def score_kind(head) -> str:
    """``start_end`` for the softmax head's (B, L, 2) logits, ``grid`` for the GlobalPointer heads' (B, L, L)."""
    return "start_end" if isinstance(head, SoftmaxHead) else "grid"


def _kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over rows of KL(softmax(teacher / T) || softmax(student / T)) over the last dim."""
    log_q = (student.float() / temperature).log_softmax(-1)
    log_p = (teacher.float() / temperature).log_softmax(-1)
    return F.kl_div(log_q, log_p, log_target=True, reduction="sum") / student.shape[0]


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, span_mask: torch.Tensor, kind: str,
            temperature: float = 1.0) -> torch.Tensor:
    """``T² · KL(teacher || student)`` over the head's scores (see the module docstring); ~0 when they agree."""
    if kind == "start_end":  # (B, L, 2); positions outside span_mask already hold NEG in both
        kl = (_kl(student[..., 0], teacher[..., 0], temperature) + _kl(student[..., 1], teacher[..., 1], temperature)) / 2
    else:  # (B, L, L) grid: invalid cells set to NEG in both, so they carry no probability
        B, L, _ = student.shape
        invalid = ~valid_spans(span_mask)
        s = student.float().masked_fill(invalid, NEG).reshape(B, L * L)
        t = teacher.float().masked_fill(invalid, NEG).reshape(B, L * L)
        kl = _kl(s, t, temperature)
    return kl * temperature ** 2


def log_distributions(scores: torch.Tensor, span_mask: torch.Tensor, kind: str) -> torch.Tensor:
    """(B, R, N) log-probabilities of the head's distributions: start and end over the window's positions
    (``start_end``: R = 2, N = L) or one over the span grid's valid cells, the null cell included (``grid``:
    R = 1, N = L * L)."""
    if kind == "start_end":  # (B, L, 2); positions outside span_mask already hold NEG
        return scores.float().log_softmax(1).transpose(1, 2)
    B, L, _ = scores.shape
    return scores.float().masked_fill(~valid_spans(span_mask), NEG).reshape(B, 1, L * L).log_softmax(-1)


def symmetric_kl(a: torch.Tensor, b: torch.Tensor, span_mask: torch.Tensor, kind: str) -> torch.Tensor:
    """``(KL(p_a || p_b) + KL(p_b || p_a)) / 2`` between two score tensors of one head (R-Drop's term), summed
    over cells and averaged over windows and distributions; gradients reach both. Cells masked in both hold no
    probability and add nothing."""
    log_a, log_b = log_distributions(a, span_mask, kind), log_distributions(b, span_mask, kind)
    return ((log_a.exp() - log_b.exp()) * (log_a - log_b)).sum(-1).mean() / 2


def rest_logsumexp(logp: torch.Tensor, index: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """(B, R) log of the probability outside the ``kept`` cells ``index`` (B, R, k) of the log-distributions
    ``logp`` (B, R, N): a log-sum-exp over the other cells, exact even when that mass is tiny (where
    ``log(1 - sum(exp(kept)))`` would cancel to noise in float32); about ``NEG`` when nothing is left."""
    in_top = torch.zeros_like(logp).scatter_add_(-1, index, kept.to(logp.dtype)) > 0
    return logp.masked_fill(in_top, NEG).logsumexp(-1)


def teacher_top_k(scores: torch.Tensor, span_mask: torch.Tensor, kind: str, temperature: float, k: int):
    """The teacher's distributions at temperature ``T``, compacted: per window ``R`` distributions (2 for
    start/end, 1 for the grid), each as its ``k`` most probable cells ``(rows, cols)`` (start, end; for
    start/end the position and 0), their log-probabilities, and the log of the probability left over.

    Returns ``rows, cols`` (B, R, k) int32, ``logp`` (B, R, k) float32 and ``log_rest`` (B, R) float32. When a
    distribution has fewer than ``k`` valid cells the remaining entries hold ``logp = NEG`` (no mass)."""
    B, L = span_mask.shape
    if kind == "start_end":  # (B, L, 2); positions outside span_mask hold NEG
        raw = scores.float().transpose(1, 2)  # (B, 2, L)
    else:
        raw = scores.float().masked_fill(~valid_spans(span_mask), NEG).reshape(B, 1, L * L)
    kk = min(k, raw.shape[-1])
    logp = (raw / temperature).log_softmax(-1)
    top, idx = logp.topk(kk, -1)
    massless = raw.gather(-1, idx) <= NEG / 2  # an invalid cell filled the top k: no mass
    # and its index 0, so that it points inside every batch the window lands in (the teacher's batch may
    # have been padded longer than the student's)
    top, idx = top.masked_fill(massless, NEG), idx.masked_fill(massless, 0)
    log_rest = rest_logsumexp(logp, idx, ~massless)
    rows, cols = (idx, torch.zeros_like(idx)) if kind == "start_end" else (idx // L, idx % L)
    if kk < k:  # fewer cells than k: pad with massless entries
        pad = (0, k - kk)
        rows, cols = F.pad(rows, pad), F.pad(cols, pad)
        top = F.pad(top, pad, value=NEG)
    return rows.int(), cols.int(), top, log_rest


def kd_loss_cached(student: torch.Tensor, span_mask: torch.Tensor, kind: str, temperature: float,
                   rows: torch.Tensor, cols: torch.Tensor, logp: torch.Tensor, log_rest: torch.Tensor) -> torch.Tensor:
    """``T² · KL`` between the cached teacher distributions (:func:`teacher_top_k`) and the student's,
    both coarsened to the teacher's top-k cells plus a "rest" bin; averaged as :func:`kd_loss` does."""
    B, L = span_mask.shape
    if kind == "start_end":
        logq = (student.float() / temperature).log_softmax(1).transpose(1, 2)  # (B, 2, L)
        index = rows.long()
    else:
        s = student.float().masked_fill(~valid_spans(span_mask), NEG).reshape(B, 1, L * L)
        logq, index = (s / temperature).log_softmax(-1), rows.long() * L + cols.long()
    kept = logp > NEG / 2
    q_top = logq.gather(2, index).masked_fill(~kept, NEG)
    q_rest = rest_logsumexp(logq, index, kept)
    p = logp.exp()  # 0 on padded entries
    kl = (p * (logp - q_top)).masked_fill(~kept, 0.0).sum(-1) + log_rest.exp() * (log_rest - q_rest)
    return kl.mean() * temperature ** 2


class Distiller:
    """What :meth:`mrc.model.span_model.SpanModel.loss` adds when a teacher is set."""

    def __init__(self, teacher, alpha: float, temperature: float, kind: str, student_head=None):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"distill.alpha must be in [0, 1], got {alpha}")
        if not temperature > 0:
            raise ValueError(f"distill.temperature must be > 0, got {temperature}")
        for who, head in (("teacher", teacher.head), ("student", student_head)):
            if getattr(head, "loss_type", "softmax") != "softmax":
                raise ValueError(f"the {who}'s head has loss={head.loss_type!r}: its grid is not one "
                                 "distribution over the spans; distillation needs loss=softmax on both sides")
        if score_kind(teacher.head) != kind:
            raise ValueError(f"the teacher's head ({type(teacher.head).__name__}) scores "
                             f"{score_kind(teacher.head).replace('_', '/')}, the student's {kind.replace('_', '/')}; "
                             "use a teacher whose head scores the same way (softmax, or a GlobalPointer head)")
        self.teacher, self.alpha, self.temperature, self.kind = teacher.eval(), alpha, temperature, kind
        teacher.requires_grad_(False)

    def __call__(self, scores: torch.Tensor, batch: dict, gold: torch.Tensor) -> torch.Tensor:
        """``alpha · kd + (1 − alpha) · gold`` for one batch (the student's ``scores`` and gold loss); uses
        the cached teacher distributions when the batch carries them (``teacher_logp`` etc.)."""
        if "teacher_logp" in batch:
            kd = kd_loss_cached(scores, batch["span_mask"], self.kind, self.temperature, batch["teacher_rows"],
                                batch["teacher_cols"], batch["teacher_logp"], batch["teacher_log_rest"])
            return self.alpha * kd + (1 - self.alpha) * gold
        if self.teacher is None:
            raise RuntimeError("distill.cache: a training batch without the teacher's cached distributions")
        with torch.no_grad():
            teacher_scores = self.teacher(**batch)
        kd = kd_loss(scores, teacher_scores, batch["span_mask"], self.kind, self.temperature)
        return self.alpha * kd + (1 - self.alpha) * gold
