"""What stands between the network and the model in ``python -m mrc.serve``: the ``Host`` check, and reading a
request body (content type, size, JSON, valid Unicode) into a validated request model.

Every refusal is a :class:`RequestError` (status and one line) that :mod:`mrc.serve.app` answers as
``{"error": ...}``; nothing a client sends can make these functions raise anything else.
"""
from __future__ import annotations

import json
from collections.abc import Iterable

from pydantic import BaseModel, ValidationError
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse

from mrc.data.squad import is_unicode
from mrc.serve.limits import Limits

# The names of this machine's loopback interface; the bound address is added to them.
LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


class RequestError(Exception):
    """A bad request: its HTTP status, a one-line message and any response headers (e.g. ``Retry-After``)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def split_host(value: str) -> tuple[str, str | None]:
    """``(name, port or None)`` of a ``Host`` header value, lower-cased; IPv6 names keep their brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value.partition("]")
        return name + "]", (rest[1:] if rest.startswith(":") else rest or None)
    name, sep, port = value.partition(":")
    return name, (port if sep else None)


def allowed_names(host: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The host names the server answers to: the loopback names, the bound ``host`` unless it is a wildcard
    address (``0.0.0.0``, ``::``: a client never sends those) and ``extra`` (``--allowed-hosts``); lower-cased,
    IPv6 addresses in brackets as a Host header gives them."""
    names = set(LOOPBACK)
    for name in (host, *extra):
        name = name.strip().lower()
        name = f"[{name}]" if ":" in name and not name.startswith("[") else name
        if name not in ("", "0.0.0.0", "[::]"):
            names.add(name)
    return frozenset(names)


class HostGuard:
    """ASGI middleware: answer 400 unless the ``Host`` header names this server (name and port), so a web
    page elsewhere cannot reach a localhost server through DNS rebinding. (Starlette's TrustedHostMiddleware
    ignores the port and answers in plain text, not ``{"error": ...}``.)"""

    def __init__(self, app, names: frozenset[str], port: int | None):
        self.app, self.names, self.port = app, names, port

    def allows(self, value: str) -> bool:
        """Whether a ``Host`` header value names this server (any port when the port is not known)."""
        name, port = split_host(value)
        return name in self.names and (port is None or self.port is None or port == str(self.port))

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":  # no websocket routes: those are refused by the router
            value = Headers(scope=scope).get("host", "")
            if not self.allows(value):
                names = ", ".join(sorted(self.names)) + (f" (port {self.port})" if self.port else "")
                msg = (f"Host header {value[:100]!r} not allowed; this server answers to {names}; "
                       "start it with --allowed-hosts NAME to add a name")
                await JSONResponse({"error": msg}, status_code=400)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def check_content_type(request: Request) -> None:
    """415 unless the body is declared JSON: a form or ``text/plain`` POST is what a page elsewhere can send
    without asking the browser first (no CORS preflight)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise RequestError(415, f"content type {ctype or 'missing'!r}; send the body as application/json")


def first_bad_string(payload, where: str = "body") -> str | None:
    """Where the first string (key or value) that is not valid Unicode sits, e.g. ``questions.1``: a lone
    UTF-16 surrogate (JSON ``"\\ud800"``) decodes into a Python str that cannot be encoded as UTF-8."""
    stack = [(payload, where)]
    while stack:
        obj, at = stack.pop()
        items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
        for key, value in items:
            here = f"{at}.{key}" if at != "body" else str(key)
            if isinstance(key, str) and not is_unicode(key):
                return f"{at} (a key)"
            if isinstance(value, str) and not is_unicode(value):
                return here
            if isinstance(value, (dict, list)):
                stack.append((value, here))
    return None


async def read_body(request: Request, limits: Limits) -> bytes:
    """The request body, refused (413) as soon as it passes ``limits.max_body_bytes``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise RequestError(413, f"body of {int(declared)} bytes; the limit is {limits.max_body_bytes} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limits.max_body_bytes:
            raise RequestError(413, f"body larger than the limit of {limits.max_body_bytes} bytes")
    return bytes(body)


def parse_json(body: bytes):
    """The JSON value of a body: 400 unless it is UTF-8 JSON, 422 when a string in it is not valid Unicode."""
    if not body.strip():
        raise RequestError(400, "empty body; send a JSON object such as "
                                '{"context": "...", "questions": ["..."]}')
    try:
        payload = json.loads(body.decode("utf-8-sig"))
    # ValueError: bad UTF-8, bad JSON, an integer of over 4,300 digits. RecursionError: arrays or objects nested
    # ~1,000 deep (CPython's decoder counts its depth and unwinds cleanly), e.g. 100,000 "[" in a 100 KB body.
    except RecursionError:
        raise RequestError(400, "body nests arrays or objects too deeply; send a flat JSON object") from None
    except ValueError as e:
        raise RequestError(400, f"body is not UTF-8 JSON ({str(e)[:200]}); send a JSON object") from None
    bad = first_bad_string(payload)
    if bad is not None:
        raise RequestError(422, f"{bad[:100]}: not valid Unicode (a lone UTF-16 surrogate such as \\ud800); "
                                "send UTF-8 text")
    return payload


def _where(loc) -> str:
    return ".".join(str(p) for p in loc if p != "body") or "body"


async def read_json(request: Request, limits: Limits, model: type[BaseModel]):
    """The request body, JSON-typed, size-limited, parsed and validated against ``model`` (RequestError
    otherwise)."""
    check_content_type(request)
    payload = parse_json(await read_body(request, limits))
    if not isinstance(payload, dict):
        raise RequestError(422, f"body must be a JSON object, got {type(payload).__name__}")
    try:
        return model.model_validate(payload)
    except ValidationError as e:
        msgs = []
        for err in e.errors():
            msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
            msgs.append(f"{_where(err['loc'])}: {msg}")
        raise RequestError(422, "; ".join(msgs)[:1000]) from None


def check_text(name: str, value: str, limit: int) -> None:
    """422 unless ``value`` has some non-blank text and at most ``limit`` characters."""
    if not value.strip():
        raise RequestError(422, f"{name}: empty; give some text")
    if len(value) > limit:
        raise RequestError(422, f"{name}: {len(value)} characters; the limit is {limit}")
