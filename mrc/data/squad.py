"""SQuAD-format loading: validation, answer re-location, and counted skips.

Character spans everywhere in this project are half-open: ``[answer_start, answer_start + len(text))``.
"""
from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


class DataError(ValueError):
    """A data file that cannot be used at all (missing, malformed JSON, wrong structure)."""


@dataclass
class Example:
    """One question over one context; ``answers``/``starts`` are parallel lists of located gold spans."""

    id: str
    question: str
    context: str
    answers: list[str]
    starts: list[int]
    is_impossible: bool = False
    qtype: str | None = None
    # Reference texts as given in the file (scoring uses these, located or not).
    references: list[str] = field(default_factory=list)


@dataclass
class LoadStats:
    """What happened to the records of one file: kept, re-located, and skipped by reason."""

    path: str
    records: int = 0
    kept: int = 0
    relocated: int = 0
    skipped: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        """Plain-dict form for ``metrics.json``."""
        return {"path": self.path, "records": self.records, "kept": self.kept,
                "relocated": self.relocated, "skipped": dict(self.skipped),
                "skipped_total": sum(self.skipped.values())}


def read_json(path: str | Path) -> dict:
    """Read a JSON file or raise one DataError naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def locate(context: str, text: str, hint: int) -> int:
    """Start of ``text`` in ``context``: ``hint`` if it matches there, else the nearest occurrence, else -1."""
    if not text:
        return -1
    if 0 <= hint <= len(context) - len(text) and context.startswith(text, hint):
        return hint
    best, pos = -1, context.find(text)
    while pos != -1:
        if best == -1 or abs(pos - hint) < abs(best - hint):
            best = pos
        pos = context.find(text, pos + 1)
    return best


def _iter_qas(raw: dict, path: Path):
    data = raw.get("data") if isinstance(raw, dict) else None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a SQuAD-format object with a 'data' list")
    for a, article in enumerate(data):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise DataError(f"{path}: data[{a}] has no 'paragraphs' list")
        for p, para in enumerate(paragraphs):
            qas = para.get("qas") if isinstance(para, dict) else None
            if not isinstance(qas, list):
                raise DataError(f"{path}: data[{a}].paragraphs[{p}] has no 'qas' list")
            for qa in qas:
                yield para.get("context"), qa


def _parse_answers(qa: dict) -> list[tuple[str, int]] | None:
    answers = qa.get("answers", [])
    if not isinstance(answers, list):
        return None
    out = []
    for ans in answers:
        if not isinstance(ans, dict) or not isinstance(ans.get("text", ""), str):
            return None
        start = ans.get("answer_start", -1)
        out.append((ans.get("text", ""), start if isinstance(start, int) else -1))
    return out


def load_squad(path: str | Path, *, training: bool) -> tuple[list[Example], LoadStats]:
    """Load a SQuAD-format file into Examples, re-locating misplaced answers and counting skips.

    For training, an answerable question must have at least one answer found in its context;
    for evaluation, answers are only scored by text, so such questions are kept.
    """
    path = Path(path)
    raw = read_json(path)
    stats = LoadStats(path=str(path))
    examples: list[Example] = []
    seen: set[str] = set()
    for context, qa in _iter_qas(raw, path):
        stats.records += 1
        reason = _check_record(context, qa, seen)
        if reason:
            stats.skipped[reason] += 1
            continue
        qid = str(qa["id"])
        seen.add(qid)
        pairs = _parse_answers(qa)
        if pairs is None:
            stats.skipped["malformed_answers"] += 1
            continue
        refs = [t for t, _ in pairs if t.strip()]
        impossible = bool(qa.get("is_impossible", False)) or not refs
        if impossible and not qa.get("is_impossible", False) and training:
            stats.skipped["no_answer"] += 1
            continue
        answers, starts = [], []
        for text, hint in pairs:
            if not text.strip() or impossible:
                continue
            pos = locate(context, text, hint)
            if pos == -1:
                continue
            stats.relocated += pos != hint
            answers.append(text)
            starts.append(pos)
        if training and not impossible and not answers:
            stats.skipped["answer_not_in_context"] += 1
            continue
        # A built split's rewrite rule (over-sensitivity) plays the role of the question type.
        examples.append(Example(qid, qa["question"], context, answers, starts, impossible,
                                qa.get("type") or qa.get("rule"), refs))
        stats.kept += 1
    if stats.skipped:
        log.warning("%s: skipped %d of %d records %s", path, sum(stats.skipped.values()),
                    stats.records, dict(stats.skipped))
    if stats.relocated:
        log.info("%s: re-located %d answers whose answer_start did not match", path, stats.relocated)
    return examples, stats


def _check_record(context, qa, seen: set[str]) -> str | None:
    if not isinstance(qa, dict) or "id" not in qa:
        return "missing_id"
    if str(qa["id"]) in seen:
        return "duplicate_id"
    if not isinstance(qa.get("question"), str) or not qa["question"].strip():
        return "missing_question"
    if not isinstance(context, str) or not context.strip():
        return "empty_context"
    return None
