"""The HTTP JSON API (FastAPI) and web page of ``python -m mrc.serve`` (command line: :mod:`mrc.serve.cli`).

- ``GET /``: the page (``page.html``: inline JS/CSS, nothing fetched from elsewhere);
- ``GET /api/info``: the model (head, window geometry, backend) and the request limits;
- ``POST /api/predict`` ``{"context": str, "questions": [str, ...]}`` (or ``"question": str``): per question
  the answer, its character offsets ``start`` / ``end`` (exclusive), ``score``, ``null_score``, the n-best
  list and the window each candidate came from, and the windows the context was cut into;
- ``POST /api/explain`` ``{"context": str, "question": str, "window": int (optional)}``: the same answer plus
  the scores the page draws (:func:`mrc.serve.answers.explain`).

Bad requests get a 4xx JSON ``{"error": "..."}`` (400 not JSON, 413 too large, 422 invalid fields), never a
500. The server binds 127.0.0.1 unless ``--host`` says otherwise.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.concurrency import run_in_threadpool

from mrc.serve import answers
from mrc.serve.limits import Limits

PAGE = Path(__file__).with_name("page.html")
# The page runs its own inline script and style only, and talks to this server only.
CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
       "img-src 'self' data:; base-uri 'none'; form-action 'none'")


class PredictRequest(BaseModel):
    """``questions`` (a list) or ``question`` (one string), not both."""

    model_config = ConfigDict(extra="forbid", strict=True)
    context: str
    questions: list[str] | None = None
    question: str | None = None


class ExplainRequest(BaseModel):
    """One question; ``window``: which of its windows to show (default: the one the answer came from)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    context: str
    question: str
    window: int | None = None


class Candidate(BaseModel):
    text: str
    start: int
    end: int
    score: float | None
    window: int


class WindowSpan(BaseModel):
    index: int
    start: int
    end: int
    tokens: int


class Answer(BaseModel):
    question: str
    answer: str
    start: int | None
    end: int | None
    score: float | None
    null_score: float | None
    window: int | None
    nbest: list[Candidate]
    windows: list[WindowSpan]


class PredictResponse(BaseModel):
    answers: list[Answer]


class RequestError(Exception):
    """A bad request: its HTTP status and a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _where(loc) -> str:
    return ".".join(str(p) for p in loc if p != "body") or "body"


async def read_json(request: Request, limits: Limits, model: type[BaseModel]):
    """The request body, size-limited, parsed and validated against ``model`` (RequestError otherwise)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise RequestError(413, f"body of {int(declared)} bytes; the limit is {limits.max_body_bytes} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limits.max_body_bytes:
            raise RequestError(413, f"body larger than the limit of {limits.max_body_bytes} bytes")
    if not body.strip():
        raise RequestError(400, "empty body; send a JSON object such as "
                                '{"context": "...", "questions": ["..."]}')
    try:
        payload = json.loads(bytes(body).decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RequestError(400, f"body is not UTF-8 JSON ({e}); send a JSON object") from None
    if not isinstance(payload, dict):
        raise RequestError(422, f"body must be a JSON object, got {type(payload).__name__}")
    try:
        return model.model_validate(payload)
    except ValidationError as e:
        msgs = []
        for err in e.errors():
            where = _where(err["loc"])
            msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
            msgs.append(f"{where}: {msg}")
        raise RequestError(422, "; ".join(msgs)) from None


def check_text(name: str, value: str, limit: int) -> None:
    if not value.strip():
        raise RequestError(422, f"{name}: empty; give some text")
    if len(value) > limit:
        raise RequestError(422, f"{name}: {len(value)} characters; the limit is {limit}")


def questions_of(req: PredictRequest, limits: Limits) -> list[str]:
    if (req.questions is None) == (req.question is None):
        raise RequestError(422, "give 'questions' (a list of strings) or 'question' (a string), one of them")
    questions = req.questions if req.questions is not None else [req.question]
    if not questions:
        raise RequestError(422, "questions: empty list; give at least one question")
    if len(questions) > limits.max_questions:
        raise RequestError(422, f"questions: {len(questions)} given; the limit is {limits.max_questions}")
    for i, q in enumerate(questions):
        check_text(f"questions.{i}" if req.questions is not None else "question", q, limits.max_question_chars)
    return questions


def create_app(model, tokenizer, cfg, *, limits: Limits | None = None, backend: str = "fp32",
               device: str = "cpu") -> FastAPI:
    """The FastAPI app answering with ``model`` (a loaded checkpoint; see :func:`load_for_inference`)."""
    limits = limits or Limits()
    # No /docs or /redoc: FastAPI's pages load their scripts from a CDN; /openapi.json stays.
    app = FastAPI(title="mrc-zh", docs_url=None, redoc_url=None)
    page = PAGE.read_text(encoding="utf-8")
    head = getattr(model.head, "name", type(model.head).__name__)
    info = {"head": head, "backend": backend, "max_len": cfg.data.max_len, "max_query_len": cfg.data.max_query_len,
            "doc_stride": cfg.data.doc_stride, "max_answer_len": cfg.decode.max_answer_len,
            "n_best": cfg.decode.n_best, "null_threshold": cfg.decode.get("null_threshold"), "limits": asdict(limits)}

    @app.exception_handler(RequestError)
    async def _bad_request(request: Request, exc: RequestError):
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return HTMLResponse(page, headers={"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"})

    @app.get("/api/info")
    async def api_info():
        return info

    predict_body = {"requestBody": {"required": True, "content": {
        "application/json": {"schema": PredictRequest.model_json_schema()}}}}
    explain_body = {"requestBody": {"required": True, "content": {
        "application/json": {"schema": ExplainRequest.model_json_schema()}}}}
    errors = {code: {"description": f"{code}: JSON {{\"error\": message}}"} for code in (400, 413, 422)}

    @app.post("/api/predict", response_model=PredictResponse, openapi_extra=predict_body, responses=errors)
    async def api_predict(request: Request):
        req = await read_json(request, limits, PredictRequest)
        check_text("context", req.context, limits.max_context_chars)
        questions = questions_of(req, limits)
        result = await run_in_threadpool(answers.answer, model, tokenizer, cfg, req.context, questions,
                                         device=device)
        return {"answers": result}

    @app.post("/api/explain", openapi_extra=explain_body, responses=errors)
    async def api_explain(request: Request):
        req = await read_json(request, limits, ExplainRequest)
        check_text("context", req.context, limits.max_context_chars)
        check_text("question", req.question, limits.max_question_chars)
        if req.window is not None and req.window < 0:
            raise RequestError(422, f"window: {req.window} is negative")
        try:
            return await run_in_threadpool(answers.explain, model, tokenizer, cfg, req.context, req.question,
                                           window=req.window, device=device)
        except IndexError as e:
            raise RequestError(422, f"window: {e}") from None

    return app
