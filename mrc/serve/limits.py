"""Request limits of the HTTP API (``python -m mrc.serve --max-*``, ``--timeout``); no heavy imports, so ``--help``
is fast."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Limits:
    """Request limits (``--max-*`` and ``--timeout`` options).

    ``max_windows`` bounds the model work of one request before the model runs: the windows its context and
    questions are cut into (each question scores every window of the context). 128 windows take in one
    20,000-character context (the default ``max_context_chars``) asked once at 256-token windows (~115) or at
    512 (~55); the e5_small checkpoint of experiments/inference scores ~18 windows/s of 256 tokens on 2
    threads (~7 s for 128), a base-size encoder at 512 tokens several times slower. ``timeout`` (seconds) is
    the deadline of one request: past it, waiting for the model or between window batches, the answer is 503
    with ``Retry-After``, so one request never holds the model much past it whatever the encoder.
    """

    max_body_bytes: int = 256 * 1024
    max_context_chars: int = 20_000
    max_questions: int = 16
    max_question_chars: int = 1_000
    max_windows: int = 128
    timeout: float = 30.0
