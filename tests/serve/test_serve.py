"""mrc.serve: the JSON API answers like mrc predict, validates every request (4xx, never 500), bounds the work
of one request (windows, deadline), answers only requests that name it in their Host header, serves a
self-contained page, and explains every head's scores."""
from __future__ import annotations

import json
import time

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from mrc.data.squad import Example  # noqa: E402
from mrc.eval.predict import load_for_inference, predict  # noqa: E402
from mrc.serve import answers  # noqa: E402
from mrc.serve.app import Limits, PredictResponse, create_app  # noqa: E402
from mrc.serve.cli import main as serve_main  # noqa: E402
from tests.serve.helpers import CONTEXT, QUESTIONS, make_checkpoint  # noqa: E402

HEADS = ["softmax", "globalpointer", "efficient_globalpointer"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    return {head: make_checkpoint(root / head, head) for head in HEADS}


@pytest.fixture(scope="module")
def loaded(checkpoints):
    return {head: load_for_inference(path) for head, path in checkpoints.items()}


def client(loaded, head="softmax", **limits):
    """A TestClient (Host ``testserver``, allowed explicitly: the default is loopback names only)."""
    model, tokenizer, cfg = loaded[head]
    app = create_app(model, tokenizer, cfg, limits=Limits(**limits), allowed_hosts=["testserver"])
    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize("head", HEADS)
def test_predict_agrees_with_mrc_predict(loaded, head):
    model, tokenizer, cfg = loaded[head]
    r = client(loaded, head).post("/api/predict", json={"context": CONTEXT, "questions": QUESTIONS})
    assert r.status_code == 200, r.text
    body = PredictResponse.model_validate(r.json())  # the documented schema
    examples = [Example(f"x{i}", q, CONTEXT, [], []) for i, q in enumerate(QUESTIONS)]
    preds, nbest = predict(model, tokenizer, cfg, examples)
    assert len(body.answers) == len(QUESTIONS)
    for i, ans in enumerate(body.answers):
        ref = nbest[f"x{i}"]
        assert ans.question == QUESTIONS[i] and ans.answer == preds[f"x{i}"] != ""
        assert [(c.text, c.start, c.end, c.window) for c in ans.nbest] == \
            [(c["text"], c["start"], c["end"], c["window"]) for c in ref["candidates"]]
        assert [c.score for c in ans.nbest] == pytest.approx([c["score"] for c in ref["candidates"]], abs=1e-4)
        assert ans.null_score == pytest.approx(ref["null_score"], abs=1e-4)
        assert CONTEXT[ans.start:ans.end] == ans.answer and ans.score == ans.nbest[0].score
        assert len(ans.windows) > 1  # the context is cut into several windows at max_len=64
        win = ans.windows[ans.window]
        assert win.start <= ans.start < ans.end <= win.end
        assert [w.index for w in ans.windows] == list(range(len(ans.windows)))
        assert ans.windows[0].start == 0 and ans.windows[-1].end == len(CONTEXT)


def test_one_question_info_page_and_schema(loaded):
    c = client(loaded)
    one = c.post("/api/predict", json={"context": CONTEXT, "question": QUESTIONS[0]})
    assert one.status_code == 200 and len(one.json()["answers"]) == 1
    info = c.get("/api/info").json()
    assert info["head"] == "SoftmaxHead" and info["backend"] == "fp32" and info["max_len"] == 64
    assert info["confidence"] == "raw" and info["min_confidence"] == 0  # no calibrators given: raw, never abstains
    page = c.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    html = page.text
    assert "<script>" in html and "<style>" in html
    assert "src=\"http" not in html and "href=\"http" not in html and "@import" not in html  # nothing from a CDN
    spec = c.get("/openapi.json").json()
    assert {"/api/predict", "/api/explain"} <= set(spec["paths"])
    body = spec["paths"]["/api/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert {"context", "min_confidence"} <= set(body["schema"]["properties"])
    assert c.get("/docs").status_code == 404  # FastAPI's docs page would load scripts from a CDN


BAD = [
    ("missing context", {"questions": ["谁？"]}, 422, "context"),
    ("missing questions", {"context": "北京是首都。"}, 422, "questions"),
    ("both question forms", {"context": "北京是首都。", "question": "谁？", "questions": ["谁？"]}, 422, "one of them"),
    ("empty context", {"context": "", "questions": ["谁？"]}, 422, "context: empty"),
    ("blank context", {"context": " \n ", "questions": ["谁？"]}, 422, "context: empty"),
    ("empty question", {"context": "北京是首都。", "questions": ["  "]}, 422, "questions.0: empty"),
    ("no questions", {"context": "北京是首都。", "questions": []}, 422, "at least one"),
    ("too many questions", {"context": "北京是首都。", "questions": ["谁？"] * 17}, 422, "limit is 16"),
    ("context too long", {"context": "北" * 20_001, "questions": ["谁？"]}, 422, "limit is 20000"),
    ("1 MB context", {"context": "北" * 350_000, "questions": ["谁？"]}, 413, "the limit is 262144 bytes"),
    ("context not a string", {"context": 123, "questions": ["谁？"]}, 422, "context"),
    ("questions not a list", {"context": "北京是首都。", "questions": "谁？"}, 422, "questions"),
    ("question not a string", {"context": "北京是首都。", "questions": [1]}, 422, "questions.0"),
    ("unknown field", {"context": "北京是首都。", "questions": ["谁？"], "top_k": 3}, 422, "top_k: unknown field"),
]


@pytest.mark.parametrize("name,payload,status,message", BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_a_4xx_with_a_message(loaded, name, payload, status, message):
    r = client(loaded).post("/api/predict", content=json.dumps(payload, ensure_ascii=False).encode(),
                            headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


@pytest.mark.parametrize("body,status", [(b"not json {", 400), (b"", 400), (b"[1, 2]", 422), (b"\xff\xfe\x00", 400),
                                         (b'"just a string"', 422), (b"null", 422)])
def test_bodies_that_are_not_a_json_object(loaded, body, status):
    for path in ("/api/predict", "/api/explain"):
        r = client(loaded).post(path, content=body, headers={"content-type": "application/json"})
        assert r.status_code == status and r.json()["error"], (path, body, r.text)


def test_body_limit_without_content_length_and_configurable_limits(loaded):
    c = client(loaded, max_body_bytes=1000, max_context_chars=50, max_questions=2)

    def chunks():
        yield b'{"context": "'
        for _ in range(20):
            yield "北京".encode() * 50
        yield b'", "questions": ["a"]}'

    r = c.post("/api/predict", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "1000 bytes" in r.json()["error"]
    r = c.post("/api/predict", json={"context": "北" * 51, "questions": ["谁"]})
    assert r.status_code == 422 and "limit is 50" in r.json()["error"]
    r = c.post("/api/predict", json={"context": "北京", "questions": ["谁"] * 3})
    assert r.status_code == 422 and "limit is 2" in r.json()["error"]


def test_explain_bad_requests(loaded):
    c = client(loaded)
    cases = [({"context": CONTEXT}, "question"), ({"context": CONTEXT, "question": "谁？", "window": 99}, "window"),
             ({"context": CONTEXT, "question": "谁？", "window": -1}, "negative"),
             ({"context": CONTEXT, "question": "谁？", "window": "1"}, "window"),
             ({"context": "", "question": "谁？"}, "context: empty")]
    for payload, message in cases:
        r = c.post("/api/explain", json=payload)
        assert 400 <= r.status_code < 500 and message in r.json()["error"], (payload, r.text)
    assert c.get("/api/predict").status_code == 405


@pytest.mark.parametrize("head", HEADS)
def test_explain_scores_every_head(loaded, head):
    r = client(loaded, head).post("/api/explain", json={"context": CONTEXT, "question": QUESTIONS[0]})
    assert r.status_code == 200, r.text
    d = r.json()
    res = d["result"]
    assert d["window"] == res["window"] and d["tokens"] and d["answer_tokens"] is not None
    s, e = d["answer_tokens"]
    assert d["tokens"][s]["start"] == res["start"] and d["tokens"][e]["end"] == res["end"]
    n = len(d["tokens"])
    assert all(CONTEXT[t["start"]:t["end"]] == t["text"] for t in d["tokens"])
    if head == "softmax":
        assert d["view"] == "tokens" and len(d["start_scores"]) == len(d["end_scores"]) == n
        assert d["start_scores"][s] + d["end_scores"][e] == pytest.approx(res["score"], abs=1e-3)
    else:
        assert d["view"] == "grid" and len(d["band"]) == n and d["max_answer_len"] == 16
        assert d["band"][s][e - s] == pytest.approx(res["score"], abs=1e-3)  # the answer's cell is its score
        best = max(v for row in d["band"] for v in row if v is not None)
        assert best == pytest.approx(res["score"], abs=1e-3)
        assert all(row[o] is None for i, row in enumerate(d["band"]) for o in range(len(row)) if i + o >= n)
    other = client(loaded, head).post("/api/explain", json={"context": CONTEXT, "question": QUESTIONS[0],
                                                             "window": 0 if d["window"] else 1}).json()
    assert other["window"] != d["window"] and other["answer_tokens"] is None


@pytest.mark.parametrize("context,question", [("\u200b", "谁？"), ("🙂" * 10, "谁？"), ("\x00\x01abc", "谁？"),
                                              ("北京" * 9000, "谁" * 1000), ("\ufeff", "？")])
def test_odd_texts_are_answered_not_500(loaded, context, question):
    c = client(loaded, "globalpointer", max_windows=1000)  # 18,000 characters make ~620 windows of 64 tokens
    for path in ("/api/predict", "/api/explain"):
        r = c.post(path, json={"context": context, "question": question})
        assert r.status_code == 200, (path, r.text)


def post(c, path, body: bytes, ctype="application/json"):
    return c.post(path, content=body, headers={"content-type": ctype} if ctype else {})


SURROGATES = [(b'{"context": "\\ud800\xe5\x8c\x97", "questions": ["q"]}', "context: not valid Unicode"),
              (b'{"context": "abc", "questions": ["q", "\\udfff"]}', "questions.1: not valid Unicode"),
              (b'{"context": "abc", "question": "a\\ud83d"}', "question: not valid Unicode"),
              (b'{"context": "abc", "questions": ["q"], "\\ud800": 1}', "body (a key): not valid Unicode")]


@pytest.mark.parametrize("body,message", SURROGATES, ids=["context", "questions", "question", "key"])
def test_lone_surrogates_are_422_not_500(loaded, body, message):
    r = post(client(loaded), "/api/predict", body)  # the tokenizer raised TypeError on "\ud800": a 500
    assert r.status_code == 422 and message in r.json()["error"], r.text
    r = post(client(loaded), "/api/explain", b'{"context": "\\ud800abc", "question": "q"}')
    assert r.status_code == 422 and "context: not valid Unicode" in r.json()["error"], r.text


@pytest.mark.parametrize("body,message", [(b"[" * 100_000, "nests arrays or objects too deeply"),
                                          (b'{"context": ' + b"[" * 100_000, "too deeply"),
                                          (b'{"context": "a", "n": ' + b"1" * 5000 + b"}", "4300 digits")],
                         ids=["100k-nested", "nested-in-object", "5000-digit-int"])
def test_bodies_that_crashed_the_json_decoder_are_400(loaded, body, message):
    for path in ("/api/predict", "/api/explain"):
        r = post(client(loaded), path, body)  # RecursionError / ValueError escaped json.loads: a 500
        assert r.status_code == 400 and message in r.json()["error"], (path, r.text)


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                                   None])
def test_posts_must_be_application_json(loaded, ctype):
    # text/plain and forms are what a page elsewhere can POST without a CORS preflight
    body = json.dumps({"context": CONTEXT, "question": QUESTIONS[0]}).encode()
    for path in ("/api/predict", "/api/explain"):
        r = post(client(loaded), path, body, ctype)
        assert r.status_code == 415 and "send the body as application/json" in r.json()["error"], r.text
    assert post(client(loaded), "/api/predict", body, "application/json; charset=utf-8").status_code == 200


def test_host_header_must_name_this_server(loaded):
    model, tok, cfg = loaded["softmax"]
    c = TestClient(create_app(model, tok, cfg, port=8000), raise_server_exceptions=False)  # the default names
    for host in ("127.0.0.1:8000", "localhost:8000", "[::1]:8000", "LocalHost:8000", "127.0.0.1"):
        assert c.get("/api/info", headers={"host": host}).status_code == 200, host
    for host in ("testserver", "evil.example:8000", "127.0.0.1:8001", "127.0.0.1.evil.example:8000", "[::1]x"):
        for r in (c.get("/", headers={"host": host}),
                  c.post("/api/predict", json={"context": CONTEXT, "question": "q"}, headers={"host": host})):
            assert r.status_code == 400, (host, r.text)
            assert r.json()["error"].startswith(f"Host header {host!r} not allowed; this server answers to"), r.text
    more = TestClient(create_app(model, tok, cfg, host="192.168.1.7", port=8000, allowed_hosts=["mrc.lan", "fe80::1"]))
    for host in ("mrc.lan:8000", "192.168.1.7:8000", "[fe80::1]:8000", "localhost:8000"):
        assert more.get("/api/info", headers={"host": host}).status_code == 200, host
    assert more.get("/api/info", headers={"host": "other.lan:8000"}).status_code == 400


def test_404_405_answer_in_the_error_form_and_favicon(loaded):
    c = client(loaded)
    r = c.get("/nope")
    assert r.status_code == 404 and r.json()["error"].startswith("GET /nope: no such page or endpoint")
    r = c.get("/api/predict")
    assert r.status_code == 405 and "method not allowed" in r.json()["error"] and r.headers["allow"] == "POST"
    assert c.get("/favicon.ico").status_code == 204
    assert '<link rel="icon" href="data:,">' in c.get("/").text  # the page does not ask for one at all


@pytest.mark.parametrize("context,questions", [(CONTEXT, QUESTIONS), ("\u200b", ["谁？"]),
                                               ("北京" * 900, ["谁" * 50, "？"]), (CONTEXT[:40], ["《红楼梦》的作者是谁？"] * 3)])
def test_window_count_agrees_with_the_windows_built(loaded, context, questions):
    from mrc.eval.predict import make_windows

    _, tokenizer, cfg = loaded["softmax"]
    examples = [Example(f"q{i}", q, context, [], []) for i, q in enumerate(questions)]
    assert answers.count_windows(tokenizer, cfg, context, questions) == len(make_windows(examples, tokenizer, cfg))


def test_windows_are_counted_before_the_model_runs(loaded, monkeypatch):
    ran = []
    monkeypatch.setattr(answers, "score_windows", lambda *a, **k: ran.append(1))
    c = client(loaded, max_windows=5)
    for path, payload in (("/api/predict", {"context": CONTEXT, "questions": QUESTIONS}),
                          ("/api/explain", {"context": CONTEXT * 2, "question": QUESTIONS[0]})):
        r = c.post(path, json=payload)
        assert r.status_code == 422, r.text
        assert "windows; the limit is 5 per request: send a shorter context or fewer questions" in r.json()["error"]
    # the default limits: 16 questions over 20,000 characters make ~7,300 windows of 64 tokens
    r = client(loaded).post("/api/predict", json={"context": "北京" * 10_000, "questions": ["谁？"] * 16})
    assert r.status_code == 422 and "the limit is 128 per request" in r.json()["error"], r.text
    assert not ran


def test_busy_model_answers_503_with_retry_after(loaded):
    c = client(loaded, timeout=0.3)
    with answers.MODEL_LOCK:  # another request holds the model
        t0 = time.monotonic()
        r = c.post("/api/predict", json={"context": CONTEXT, "question": QUESTIONS[0]})
        waited = time.monotonic() - t0
    assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
    assert r.json()["error"].startswith("server busy: the model stayed busy with other requests (limit 0.3 s")
    assert 0.3 <= waited < 10
    assert c.post("/api/predict", json={"context": CONTEXT, "question": QUESTIONS[0]}).status_code == 200


def test_deadline_is_checked_between_window_batches(loaded, monkeypatch):
    real, batches = answers.score_windows, []

    def slow(model, windows, **kw):
        batches.append(len(windows))
        time.sleep(0.6)
        return real(model, windows, **kw)

    monkeypatch.setattr(answers, "score_windows", slow)
    c = client(loaded, timeout=0.5, max_windows=1000)
    r = c.post("/api/predict", json={"context": CONTEXT * 3, "questions": QUESTIONS})
    assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
    assert "answering took longer than the time allowed per request" in r.json()["error"]
    assert batches == [answers.BATCH]  # stopped after the first batch, not after all of them
    assert not answers.MODEL_LOCK.locked()


@pytest.mark.parametrize("args", [["--port", "70000"], ["--port", "0"], ["--threads", "-3"], ["--threads", "0"],
                                  ["--max-questions", "-1"], ["--max-context-chars", "0"],
                                  ["--max-question-chars", "0"], ["--max-body-bytes", "-5"], ["--max-windows", "0"],
                                  ["--timeout", "0"], ["--timeout", "-1"], ["--timeout", "nan"],
                                  ["--max-windows", "many"], ["--allowed-hosts", "a,,b"],
                                  ["--allowed-hosts", "evil.example:80"], ["--min-confidence", "1.5"],
                                  ["--min-confidence", "-0.1"], ["--min-confidence", "nan"],
                                  ["--min-confidence", "half"]], ids=" ".join)
def test_cli_refuses_out_of_range_options(args, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:  # before any model is loaded (tmp_path is no checkpoint)
        serve_main([str(tmp_path), *args])
    errors = [ln for ln in capsys.readouterr().err.splitlines() if "error:" in ln]
    assert e.value.code == 2 and len(errors) == 1 and f"error: argument {args[0]}: " in errors[0], errors


def test_cli_help_documents_the_work_limits(capsys):
    with pytest.raises(SystemExit):
        serve_main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--max-windows" in out and "default 128" in out and "--timeout" in out and "(default 30)" in out
    assert "--allowed-hosts" in out
    assert "--min-confidence" in out and "features > temperature > raw" in out and "default 0: off" in out
