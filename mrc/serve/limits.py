"""Request limits of the HTTP API (``python -m mrc.serve --max-*``); no heavy imports, so ``--help`` is fast."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Limits:
    """Request limits (``--max-*`` options)."""

    max_body_bytes: int = 256 * 1024
    max_context_chars: int = 20_000
    max_questions: int = 16
    max_question_chars: int = 1_000
