"""Question-template paraphrases: rewrite the question word and the frame around it by question type
("X是什么" -> "什么是X", "X多少钱" -> "X要多少钱", "X上映时间" -> "X什么时候上映").

The mapping table is data, ``question_templates.json`` beside this module: each entry is a regex
searched in the question and the replacements of its first match. Only the question frame moves; the
captured content (the entity, numbers, Latin tokens) is copied unchanged.
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

TABLE = Path(__file__).with_name("question_templates.json")


@lru_cache(maxsize=None)
def load_templates(path: str = str(TABLE)) -> tuple:
    """The table as (type, compiled pattern, rewrites) tuples, in file order."""
    entries = json.loads(Path(path).read_text(encoding="utf-8"))["templates"]
    return tuple((e["type"], re.compile(e["pattern"]), tuple(e["rewrites"])) for e in entries)


def _split_tail(question: str) -> tuple[str, str]:
    """Question body and its closing punctuation/space, so that anchored patterns see the words."""
    body = question.rstrip(" ？?！!。")
    return body, question[len(body):]


def candidates(question: str, templates: tuple | None = None) -> list[str]:
    """Every distinct rewrite of ``question`` one template makes (file order, duplicates removed)."""
    body, tail = _split_tail(question)
    out = []
    for _type, pattern, rewrites in templates or load_templates():
        m = pattern.search(body)
        if not m:
            continue
        for rewrite in rewrites:
            new = body[:m.start()] + m.expand(rewrite) + body[m.end():] + tail
            if new != question and new not in out:
                out.append(new)
    return out


def template(question, rng, protect=()):
    """One template rewrite of ``question`` picked with ``rng``, or None when no template matches."""
    options = candidates(question)
    return rng.choice(options) if options else None
