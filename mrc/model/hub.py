"""Fail fast offline: one short connection attempt to the HuggingFace hub before loading an encoder by
hub name. When the hub cannot be reached the encoder is loaded from the local cache only, so an offline
machine fails at once with the encoder's message (or loads a cached copy) instead of spending about a
minute in the hub client's retries."""
from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

log = logging.getLogger(__name__)
TIMEOUT_S = 3.0


class HubError(OSError):
    """An encoder that could not be loaded by hub name or path (a user-facing message, no traceback)."""

    user_facing = True


def endpoint() -> str:
    """The hub's base URL (``$HF_ENDPOINT`` or huggingface_hub's default)."""
    from huggingface_hub import constants

    return os.environ.get("HF_ENDPOINT") or constants.ENDPOINT


def hub_reachable(url: str | None = None, timeout: float = TIMEOUT_S) -> bool:
    """Whether a TCP connection to the hub's host opens within ``timeout`` seconds."""
    parsed = urlparse(url or endpoint())
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _offline_env() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_or_cache(name_or_path: str, kw: dict) -> dict:
    """``kw`` (``from_pretrained`` options) with ``local_files_only=True`` when ``name_or_path`` is a hub
    name and the hub is unreachable; unchanged for local directories or when already offline."""
    if kw.get("local_files_only") or Path(name_or_path).is_dir() or _offline_env():
        return kw
    if hub_reachable():
        return kw
    log.warning("the hub (%s) is unreachable: loading encoder %r from the local cache only", endpoint(), name_or_path)
    return {**kw, "local_files_only": True}
