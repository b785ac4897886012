"""The HTTP JSON API (FastAPI) and web page of ``python -m mrc.serve`` (command line: :mod:`mrc.serve.cli`).

- ``GET /``: the page (``page.html``: inline JS/CSS, nothing fetched from elsewhere);
- ``GET /api/info``: the model (head, window geometry, backend), the confidence method (``features`` /
  ``temperature`` / ``raw``), the server's ``min_confidence`` and the request limits;
- ``POST /api/predict`` ``{"context": str, "questions": [str, ...]}`` (or ``"question": str``; optional
  ``"min_confidence": 0..1``, default the server's): per question the answer, its character offsets ``start`` /
  ``end`` (exclusive), ``score``, ``null_score``, ``confidence`` (probability that the answer is right) and
  ``abstained`` (answer withheld: confidence below ``min_confidence``), the n-best list with each candidate's
  window and probability, and the windows the context was cut into;
- ``POST /api/explain`` ``{"context": str, "question": str, "window": int (optional), "min_confidence": ...}``:
  the same answer plus the scores the page draws (:func:`mrc.serve.answers.explain`).

Bad requests get a 4xx JSON ``{"error": "..."}`` (:mod:`mrc.serve.guards`: 400 not JSON or a ``Host`` that does
not name this server, 404 / 405 unknown path or method, 413 too large, 415 not ``application/json``, 422
invalid fields or too many windows), never a 500; a request past its deadline gets 503 with ``Retry-After``.
The server binds 127.0.0.1 unless ``--host`` says otherwise.
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from mrc.eval.confidence import AnswerConfidence, check_min_confidence
from mrc.serve import answers
from mrc.serve.guards import HostGuard, RequestError, allowed_names, check_text, read_json
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
    min_confidence: float | None = None


class ExplainRequest(BaseModel):
    """One question; ``window``: which of its windows to show (default: the one the answer came from)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    context: str
    question: str
    window: int | None = None
    min_confidence: float | None = None


class Candidate(BaseModel):
    text: str
    start: int
    end: int
    score: float | None
    window: int
    probability: float


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
    confidence: float
    abstained: bool
    nbest: list[Candidate]
    windows: list[WindowSpan]


class PredictResponse(BaseModel):
    answers: list[Answer]


def questions_of(req: PredictRequest, limits: Limits) -> list[str]:
    """The request's questions, each checked (422 otherwise)."""
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


def min_confidence_of(req, default: float) -> float:
    """The request's ``min_confidence`` (0..1; 422 otherwise), or the server's ``default`` when it gives none."""
    if req.min_confidence is None:
        return default
    why = check_min_confidence(req.min_confidence)
    if why:
        raise RequestError(422, f"min_confidence: {why}")
    return req.min_confidence


async def run_model(limits: Limits, fn, *args, **kwargs):
    """``fn`` (:func:`answers.answer` / :func:`answers.explain`) in a worker thread under the request's window
    limit and deadline; those refusals become a 422 / a 503 with ``Retry-After``."""
    deadline = time.monotonic() + limits.timeout
    try:
        return await run_in_threadpool(fn, *args, max_windows=limits.max_windows, deadline=deadline, **kwargs)
    except answers.TooManyWindows as e:
        raise RequestError(422, f"{e}: send a shorter context or fewer questions") from None
    except answers.DeadlineExceeded as e:
        # The model is held by one request at most until its own deadline: retrying after one timeout finds it free.
        raise RequestError(503, f"server busy: {e} (limit {limits.timeout:g} s per request); retry later",
                           {"Retry-After": str(math.ceil(limits.timeout))}) from None


def create_app(model, tokenizer, cfg, *, limits: Limits | None = None, backend: str = "fp32", device: str = "cpu",
               host: str = "127.0.0.1", port: int | None = None, allowed_hosts: Iterable[str] = (),
               confidence: AnswerConfidence | None = None, min_confidence: float = 0.0) -> FastAPI:
    """The FastAPI app answering with ``model`` (a loaded checkpoint; see :func:`load_for_inference`) and the
    checkpoint's calibrators (``confidence``, :func:`mrc.eval.confidence.load_confidence`; None: raw confidence),
    withholding answers below ``min_confidence`` unless a request says otherwise; requests must name ``host`` /
    a loopback name / one of ``allowed_hosts`` in their ``Host`` header (with ``port`` when given)."""
    limits = limits or Limits()
    confidence = confidence or AnswerConfidence()
    if check_min_confidence(min_confidence):
        raise ValueError(f"min_confidence: {check_min_confidence(min_confidence)}")
    scoring = {"confidence": confidence, "device": device}  # what every model call gets beside the request
    # No /docs or /redoc: FastAPI's pages load their scripts from a CDN; /openapi.json stays.
    app = FastAPI(title="mrc-zh", docs_url=None, redoc_url=None)
    app.add_middleware(HostGuard, names=allowed_names(host, allowed_hosts), port=port)
    page = PAGE.read_text(encoding="utf-8")
    head = getattr(model.head, "name", type(model.head).__name__)
    info = {"head": head, "backend": backend, "max_len": cfg.data.max_len, "max_query_len": cfg.data.max_query_len,
            "doc_stride": cfg.data.doc_stride, "max_answer_len": cfg.decode.max_answer_len,
            "n_best": cfg.decode.n_best, "null_threshold": cfg.decode.get("null_threshold"),
            "confidence": confidence.method, "min_confidence": min_confidence, "limits": asdict(limits)}

    @app.exception_handler(RequestError)
    async def _bad_request(request: Request, exc: RequestError):
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(HTTPException)  # 404 and 405 in the documented {"error": ...} form
    async def _http_error(request: Request, exc: HTTPException):
        what = {404: "no such page or endpoint", 405: "method not allowed"}.get(exc.status_code, exc.detail)
        return JSONResponse({"error": f"{request.method} {request.url.path[:200]}: {what}; the API is "
                                      "GET /api/info, POST /api/predict, POST /api/explain"},
                            status_code=exc.status_code, headers=exc.headers)

    # A bug: still one JSON line for the client; Starlette re-raises the exception after this answer, so the
    # server logs its traceback.
    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception):
        return JSONResponse({"error": "internal error; the server log has the details"}, status_code=500)

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return HTMLResponse(page, headers={"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"})

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon():  # browsers ask for it on every page load; no icon, and no 404 in the log
        return Response(status_code=204)

    @app.get("/api/info")
    async def api_info():
        return info

    predict_body = {"requestBody": {"required": True, "content": {
        "application/json": {"schema": PredictRequest.model_json_schema()}}}}
    explain_body = {"requestBody": {"required": True, "content": {
        "application/json": {"schema": ExplainRequest.model_json_schema()}}}}
    errors = {code: {"description": f"{code}: JSON {{\"error\": message}}"} for code in (400, 413, 415, 422, 503)}

    @app.post("/api/predict", response_model=PredictResponse, openapi_extra=predict_body, responses=errors)
    async def api_predict(request: Request):
        req = await read_json(request, limits, PredictRequest)
        check_text("context", req.context, limits.max_context_chars)
        questions = questions_of(req, limits)
        gate = min_confidence_of(req, min_confidence)
        result = await run_model(limits, answers.answer, model, tokenizer, cfg, req.context, questions,
                                 min_confidence=gate, **scoring)
        return {"answers": result}

    @app.post("/api/explain", openapi_extra=explain_body, responses=errors)
    async def api_explain(request: Request):
        req = await read_json(request, limits, ExplainRequest)
        check_text("context", req.context, limits.max_context_chars)
        check_text("question", req.question, limits.max_question_chars)
        if req.window is not None and req.window < 0:
            raise RequestError(422, "window: negative; give a window index, 0 or more")
        if req.window is not None and req.window >= limits.max_windows:  # nor is a 4,000-digit number echoed
            raise RequestError(422, f"window: a request has at most {limits.max_windows} windows "
                                    f"(0..{limits.max_windows - 1})")
        gate = min_confidence_of(req, min_confidence)
        try:
            return await run_model(limits, answers.explain, model, tokenizer, cfg, req.context, req.question,
                                   window=req.window, min_confidence=gate, **scoring)
        except IndexError as e:
            raise RequestError(422, f"window: {e}") from None

    return app
