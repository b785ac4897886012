"""mrc.serve: the JSON API answers like mrc.predict, validates every request (4xx, never 500), serves a
self-contained page, and explains every head's scores."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from mrc.data.squad import Example  # noqa: E402
from mrc.eval.predict import load_for_inference, predict  # noqa: E402
from mrc.serve.app import Limits, PredictResponse, create_app  # noqa: E402
from tests.serve_helpers import CONTEXT, QUESTIONS, make_checkpoint  # noqa: E402

HEADS = ["softmax", "globalpointer", "efficient_globalpointer"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    return {head: make_checkpoint(root / head, head) for head in HEADS}


@pytest.fixture(scope="module")
def loaded(checkpoints):
    return {head: load_for_inference(path) for head, path in checkpoints.items()}


def client(loaded, head="softmax", **limits):
    model, tokenizer, cfg = loaded[head]
    return TestClient(create_app(model, tokenizer, cfg, limits=Limits(**limits)), raise_server_exceptions=False)


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
    page = c.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    html = page.text
    assert "<script>" in html and "<style>" in html
    assert "src=\"http" not in html and "href=\"http" not in html and "@import" not in html  # nothing from a CDN
    spec = c.get("/openapi.json").json()
    assert {"/api/predict", "/api/explain"} <= set(spec["paths"])
    assert "context" in spec["paths"]["/api/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]
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
    c = client(loaded, "globalpointer")
    for path in ("/api/predict", "/api/explain"):
        r = c.post(path, json={"context": context, "question": question})
        assert r.status_code == 200, (path, r.text)
