"""SQuAD-format loading: validation, answer re-location, and counted skips.

Character spans everywhere in this project are half-open: ``[answer_start, answer_start + len(text))``.
"""
from __future__ import annotations

import copy
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


class DataError(ValueError):
    """A data file that cannot be used at all (missing, malformed JSON, wrong structure); the message
    names the file (and the record) and what to do."""

    user_facing = True


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
    """What happened to the question records of one file: kept, answers re-located, skipped by reason.

    ``records`` and ``kept`` count questions; ``relocated`` counts answers (a question may have several)."""

    path: str
    records: int = 0
    kept: int = 0
    relocated: int = 0
    skipped: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        """Plain-dict form for ``metrics.json``."""
        return {"path": self.path, "records": self.records, "kept": self.kept,
                "answers_relocated": self.relocated, "skipped": dict(self.skipped),
                "skipped_total": sum(self.skipped.values())}


def read_json(path: str | Path) -> dict:
    """Read a JSON file or raise one DataError naming it.

    The one rule for every file the project reads (training and evaluation data, references,
    predictions, sources of built splits): UTF-8 JSON, with or without a leading byte-order mark."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with path.open(encoding="utf-8-sig") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror})") from None


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
            for q, qa in enumerate(qas):
                yield f"data[{a}].paragraphs[{p}].qas[{q}]", article, para, qa


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


def is_impossible(qa: dict, path: Path, where: str) -> bool:
    """The record's ``is_impossible`` flag; anything but true/false/absent is a DataError naming the record
    (a string "false" would otherwise make an answerable question unanswerable)."""
    flag = qa.get("is_impossible", False)
    if not isinstance(flag, bool):
        raise DataError(f"{path}: {where} (id {qa.get('id')!r}): 'is_impossible' must be true or false, got "
                        f"{flag!r}; fix the record")
    return flag


def _records(raw, path: Path, training: bool, stats: LoadStats):
    """Validated records: (article, paragraph, qa, Example, [(text, located start or -1) per answer]);
    skips are counted in ``stats``."""
    seen: set[str] = set()
    for where, article, para, qa in _iter_qas(raw, path):
        context = para.get("context")
        stats.records += 1
        reason = _check_record(context, qa, seen)
        if reason:
            stats.skipped[reason] += 1
            continue
        qid = str(qa["id"])
        seen.add(qid)
        flag = is_impossible(qa, path, where)
        pairs = _parse_answers(qa)
        if pairs is None:
            stats.skipped["malformed_answers"] += 1
            continue
        refs = [t for t, _ in pairs if t.strip()]
        impossible = flag or not refs
        if impossible and not flag and training:
            stats.skipped["no_answer"] += 1
            continue
        answers, starts, located = [], [], []
        for text, hint in pairs:
            pos = -1 if not text.strip() or impossible else locate(context, text, hint)
            located.append((text, pos))
            if pos == -1:
                continue
            stats.relocated += pos != hint
            answers.append(text)
            starts.append(pos)
        if training and not impossible and not answers:
            stats.skipped["answer_not_in_context"] += 1
            continue
        # A built split's rewrite rule (over-sensitivity) plays the role of the question type.
        qtype = qa.get("type") or qa.get("rule")
        stats.kept += 1
        yield article, para, qa, Example(qid, qa["question"], context, answers, starts, impossible,
                                qtype if isinstance(qtype, str) else None, refs), located


def _log(stats: LoadStats, relocated_level: int = logging.INFO) -> None:
    if stats.skipped:
        log.warning("%s: skipped %d of %d question records %s", stats.path, sum(stats.skipped.values()),
                    stats.records, dict(stats.skipped))
    if stats.relocated:
        log.log(relocated_level, "%s: re-located %d answers whose answer_start did not match", stats.path, stats.relocated)


def load_squad(path: str | Path, *, training: bool) -> tuple[list[Example], LoadStats]:
    """Load a SQuAD-format file into Examples, re-locating misplaced answers and counting skips.

    For training, an answerable question must have at least one answer found in its context;
    for evaluation, answers are only scored by text, so such questions are kept.
    """
    path = Path(path)
    stats = LoadStats(path=str(path))
    examples = [ex for _, _, _, ex, _ in _records(read_json(path), path, training, stats)]
    _log(stats)
    return examples, stats


def clean_squad(raw, path: str | Path) -> tuple[dict, LoadStats]:
    """The evaluation loader's validation applied to a SQuAD dict (for split builders): the records
    :func:`load_squad` would keep, each answer's ``answer_start`` re-located (-1 where its text is not
    in the context), every other field kept; raises :class:`DataError` when nothing usable is left."""
    path = Path(path)
    stats = LoadStats(path=str(path))
    out = {k: v for k, v in raw.items() if k != "data"} if isinstance(raw, dict) else {}
    articles: dict[int, dict] = {}
    paragraphs: dict[int, dict] = {}
    for article, para, qa, _, located in _records(raw, path, False, stats):
        art = articles.setdefault(id(article), {**{k: v for k, v in article.items() if k != "paragraphs"},
                                                "paragraphs": []})
        if id(para) not in paragraphs:
            paragraphs[id(para)] = {**{k: v for k, v in para.items() if k != "qas"}, "qas": []}
            art["paragraphs"].append(paragraphs[id(para)])
        answers = [{**ans, "text": text, "answer_start": pos}
                   for ans, (text, pos) in zip(qa.get("answers", []), located)]
        paragraphs[id(para)]["qas"].append({**copy.deepcopy(qa), "answers": answers})
    out["data"] = list(articles.values())
    _log(stats, logging.DEBUG)  # the split loaded from this source reports its own re-locations
    if not stats.kept:
        raise DataError(f"{path}: no usable question among its {stats.records} records "
                        f"(skipped {dict(stats.skipped)}); fix the file")
    return out, stats


def _check_record(context, qa, seen: set[str]) -> str | None:
    if not isinstance(qa, dict) or not isinstance(qa.get("id"), str) or not qa["id"].strip():
        return "missing_id"
    if str(qa["id"]) in seen:
        return "duplicate_id"
    if not isinstance(qa.get("question"), str) or not qa["question"].strip():
        return "missing_question"
    if not isinstance(context, str) or not context.strip():
        return "empty_context"
    answers = qa.get("answers")
    texts = [a.get("text") for a in answers if isinstance(a, dict)] if isinstance(answers, list) else []
    if not all(is_unicode(t) for t in (context, qa["question"], *texts) if isinstance(t, str)):
        return "invalid_unicode"
    return None


def is_unicode(text: str) -> bool:
    """False for a string holding a lone UTF-16 surrogate: ``json.loads`` turns the escape ``"\\ud800"`` into
    one, which no tokenizer, encoder or UTF-8 file accepts."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
