"""Knowledge distillation from a trained span model (``distill.teacher``; Hinton et al., 2015).

The student trains on ``alpha · T² · KL(teacher || student) + (1 − alpha) · gold loss`` where both
distributions are the heads' own, softened by the temperature ``T``:

- softmax head: the start and the end distributions over the window's ``span_mask`` (KL averaged over the two);
- GlobalPointer heads: one distribution over every valid cell of the span grid (``valid_spans``: both ends
  in ``span_mask``, start <= end, [CLS] only as the null cell).

``T²`` keeps the gradients' size independent of ``T`` (at ``T = 1`` it is the plain KL). The teacher runs in
eval mode under ``no_grad`` on the student's own batches (scores computed on the fly, never cached), so
teacher and student must share a tokenizer (the run checks their vocabularies). The teacher is held
outside the student's modules: it is never trained, saved or counted.
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


class Distiller:
    """What :meth:`mrc.model.span_model.SpanModel.loss` adds when a teacher is set."""

    def __init__(self, teacher, alpha: float, temperature: float, kind: str):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"distill.alpha must be in [0, 1], got {alpha}")
        if not temperature > 0:
            raise ValueError(f"distill.temperature must be > 0, got {temperature}")
        if score_kind(teacher.head) != kind:
            raise ValueError(f"the teacher's head ({type(teacher.head).__name__}) scores "
                             f"{score_kind(teacher.head).replace('_', '/')}, the student's {kind.replace('_', '/')}; "
                             "use a teacher whose head scores the same way (softmax, or a GlobalPointer head)")
        self.teacher, self.alpha, self.temperature, self.kind = teacher.eval(), alpha, temperature, kind
        teacher.requires_grad_(False)

    def __call__(self, scores: torch.Tensor, batch: dict, gold: torch.Tensor) -> torch.Tensor:
        """``alpha · kd + (1 − alpha) · gold`` for one batch (the student's ``scores`` and gold loss)."""
        with torch.no_grad():
            teacher_scores = self.teacher(**batch)
        kd = kd_loss(scores, teacher_scores, batch["span_mask"], self.kind, self.temperature)
        return self.alpha * kd + (1 - self.alpha) * gold
