"""``distill.teacher``: load a teacher checkpoint, check it fits the student, attach it to the student's loss."""
from __future__ import annotations

import logging
from pathlib import Path

from mrc.model import checkpoint
from mrc.model.distill import Distiller, score_kind
from mrc.model.span_model import max_positions
from mrc.train.inputs import ConfigError

log = logging.getLogger(__name__)


def attach_teacher(distill, model, tokenizer, max_len: int, device: str) -> None:
    """Set ``model.distiller`` from the ``distill`` options when ``distill.teacher`` names a checkpoint dir.

    The teacher scores the student's own windows, so it must use the same tokenizer (the same vocabulary,
    token for token); a teacher whose position table is shorter than ``max_len`` is refused too.
    """
    if not distill or not distill.get("teacher"):
        return
    path = Path(str(distill.teacher)).expanduser()
    if not (path / "mrc.yaml").is_file() and (path / "checkpoint" / "mrc.yaml").is_file():
        path = path / "checkpoint"  # a run dir: its best checkpoint
    try:
        teacher, teacher_tok, _ = checkpoint.load(path, device)
    except checkpoint.CheckpointError as e:
        raise ConfigError(f"distill.teacher: {e}") from None
    ours, theirs = tokenizer.get_vocab(), teacher_tok.get_vocab()
    if ours != theirs:
        differ = len(set(ours.items()) ^ set(theirs.items()))
        raise ConfigError(f"distill.teacher={path}: its tokenizer differs from the student's ({len(theirs)} vs "
                          f"{len(ours)} tokens, {differ} entries differ); distillation needs the same tokenizer, "
                          "so train the student with the teacher's encoder vocabulary")
    limit = max_positions(teacher.encoder.config)
    if limit is not None and max_len > limit:
        raise ConfigError(f"distill.teacher={path}: its encoder has {limit} positions, fewer than "
                          f"data.max_len={max_len}; set data.max_len<={limit}")
    try:
        model.distiller = Distiller(teacher, float(distill.alpha), float(distill.temperature), score_kind(model.head))
    except ValueError as e:
        raise ConfigError(f"distill: {e}") from None
    log.info("distilling from %s (%s head): alpha %.2f, temperature %.2f", path, type(teacher.head).__name__,
             distill.alpha, distill.temperature)
