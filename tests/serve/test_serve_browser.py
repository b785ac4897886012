"""The page in a real browser: headless Chromium (the system's, driven by Playwright) loads ``/``, asks a
question, and the answer appears highlighted with its confidence, the scores open on the answer's window with
the answer in view and a legend whose swatches stand before their labels; a no-answer result says so with its
confidence, and an error clears the previous answer. A screenshot goes to ``$MRC_ARTIFACTS`` (CI artefact) or
the test's tmp dir, never into the repository."""
from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from mrc.eval.calibrate import TemperatureScaler
from mrc.eval.confidence import AnswerConfidence
from mrc.eval.predict import load_for_inference
from tests.serve.helpers import CONTEXT, QUESTIONS, make_checkpoint

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
STATE = "k => [k.scrollLeft, k.scrollTop, k.clientWidth, k.clientHeight]"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def browser():
    if CHROMIUM is None:
        pytest.skip("no chromium binary: apt-get install chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed: pip install playwright")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


def serve(app):
    """uvicorn in a thread on a free 127.0.0.1 port; returns (url, server)."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.time() + 20
    while not server.started:
        if time.time() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}/", server


def explain(url: str, question: str) -> dict:
    """What /api/explain answers for ``question`` over CONTEXT (the page's request, sent here directly)."""
    body = json.dumps({"context": CONTEXT, "question": question}).encode()
    req = urllib.request.Request(url + "api/explain", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def ask(page, context: str, question: str) -> None:
    page.fill("#context", context)
    page.fill("#question", question)
    page.click("#ask")


def open_page(browser, url):
    """A page on ``url`` with its model info loaded, and the list its script errors go to."""
    page = browser.new_page(viewport={"width": 1100, "height": 1400})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    # waits by selector: the page's CSP forbids eval, which wait_for_function needs
    page.locator("#info", has_text="confidence").wait_for()
    return page, errors


def check_legend(page, head: str) -> None:
    """Each legend swatch stands before its label (green reads as p(start), orange as p(end))."""
    keys = page.locator("#legend .key")
    assert keys.count() == 2
    for i in range(2):
        first = keys.nth(i).evaluate("k => [k.firstChild.nodeType, k.firstChild.className || '']")
        assert first == [1, "swatch"], first  # an element, the swatch, then the label's text
    if head == "softmax":
        assert [keys.nth(i).inner_text().strip() for i in range(2)] == ["p(start)", "p(end)"]
        colours = [keys.nth(i).locator(".swatch").evaluate("s => getComputedStyle(s).backgroundColor")
                   for i in range(2)]
        assert colours == ["rgb(46, 125, 50)", "rgb(230, 81, 0)"]  # the start bars' and the end bars' colours


def check_answer_in_view(page, scrolled: bool) -> None:
    """The scores' scroll box shows the answer's cell / bars (data-answer-box: x, y, w, h on the canvas);
    ``scrolled``: they lie outside its first screenful, so the box was scrolled to them."""
    x, y, w, h = (float(v) for v in page.locator("#scores").get_attribute("data-answer-box").split(","))
    left, top, width, height = page.locator(".scroll").evaluate(STATE)
    if scrolled:
        assert x + min(w, width) > width or y + min(h, height) > height, "the answer is in view unscrolled"
    assert left <= x and x + min(w, width) <= left + width + 1, (x, w, left, width)
    assert top <= y and y + min(h, height) <= top + height + 1, (y, h, top, height)


@pytest.mark.parametrize("head", ["softmax", "globalpointer"])
def test_the_page_answers_in_a_browser(browser, tmp_path, head):
    from mrc.serve.app import create_app

    model, tok, cfg = load_for_inference(make_checkpoint(tmp_path / head, head))
    app = create_app(model, tok, cfg, confidence=AnswerConfidence({"temperature": TemperatureScaler(2.0)}))
    url, server = serve(app)
    try:
        page, errors = open_page(browser, url)
        assert "confidence: temperature" in page.inner_text("#info")
        ask(page, CONTEXT, QUESTIONS[0])
        page.wait_for_selector("#results:not([hidden])", timeout=20_000)
        answer = page.inner_text("#answer-text")
        assert answer and answer in CONTEXT
        assert page.inner_text("#context-view mark") == answer  # highlighted in the context
        expected = explain(url, QUESTIONS[0])["result"]
        assert page.inner_text("#answer-confidence") == f"confidence {expected['confidence']:.3f} (temperature)"
        assert page.locator("#nbest tbody tr").count() == cfg.decode.n_best
        assert page.locator("#windows .winrow").count() > 1
        size = [int(page.locator("#scores").get_attribute(k)) for k in ("width", "height")]
        assert size[0] > 100 and size[1] > 100  # the bars / the heat-map were drawn
        check_legend(page, head)
        # the scores open on the answer's window (not window 0), scrolled to the answer
        k = expected["window"]
        assert k > 0 and page.locator("#windows .winrow.shown").get_attribute("data-window") == str(k)
        assert f"window {k}" in page.inner_text("#scores-title")
        page.click("#windows .winrow >> nth=0")  # another window's scores on demand
        page.locator("#windows .winrow.shown[data-window='0']").wait_for()
        assert page.locator("#scores").get_attribute("data-answer-box") is None  # the answer is not in window 0
        page.set_viewport_size({"width": 480, "height": 900})  # a phone: the scores do not fit the screen
        page.click("#ask")  # asking again opens on the answer's window again, scrolled to the answer
        page.locator(f"#windows .winrow.shown[data-window='{k}']").wait_for()
        check_answer_in_view(page, scrolled=head == "softmax")  # a bar per token: wider than the phone
        page.set_viewport_size({"width": 1100, "height": 1400})
        assert not errors, errors
        out = Path(os.environ.get("MRC_ARTIFACTS") or tmp_path)
        out.mkdir(parents=True, exist_ok=True)
        shot = out / f"serve_page_{head}.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
    finally:
        server.should_exit = True


def test_the_page_says_no_answer_and_clears_on_error(browser, tmp_path):
    from mrc.serve.app import create_app
    from mrc.serve.limits import Limits

    model, tok, cfg = load_for_inference(make_checkpoint(tmp_path / "softmax", "softmax"))
    never = cfg.copy()
    never.decode.null_threshold = -1e9  # the empty answer always wins
    servers = []
    try:
        url, server = serve(create_app(model, tok, never, limits=Limits(max_context_chars=400)))
        servers.append(server)
        page, errors = open_page(browser, url)
        ask(page, CONTEXT, QUESTIONS[0])
        page.locator("#answer-text", has_text="no answer").wait_for(timeout=20_000)
        conf = explain(url, QUESTIONS[0])["result"]["confidence"]
        assert page.inner_text("#answer-confidence") == (f"no answer (confidence {conf:.3f} that the passage holds "
                                                         "none; raw)")
        meta = page.inner_text("#answer-meta")
        assert "–" not in meta and "characters" not in meta and "best span in window" in meta
        # an error: the previous answer goes, the error shows
        ask(page, "北" * 401, QUESTIONS[0])
        page.locator("#status", has_text="Error 422: context: 401 characters; the limit is 400").wait_for()
        assert page.locator("#results").is_hidden() and page.inner_text("#answer-text") == ""
        assert page.locator("#nbest tbody tr").count() == 0 and page.inner_text("#context-view") == ""
        ask(page, CONTEXT, QUESTIONS[1])
        page.wait_for_selector("#results:not([hidden])")
        assert page.inner_text("#status") == ""
        ask(page, CONTEXT, " ")  # refused in the page itself: cleared too
        assert page.inner_text("#status") == "Give a context and a question." and page.locator("#results").is_hidden()
        assert not errors, errors

        url, server = serve(create_app(model, tok, cfg, min_confidence=0.99))  # every answer withheld
        servers.append(server)
        page, errors = open_page(browser, url)
        assert "answers below 0.99 withheld" in page.inner_text("#info")
        ask(page, CONTEXT, QUESTIONS[0])
        page.locator("#answer-text", has_text="no answer").wait_for(timeout=20_000)
        res = explain(url, QUESTIONS[0])["result"]
        assert res["abstained"] is True
        assert page.inner_text("#answer-confidence") == (f"no answer (confidence {res['confidence']:.3f} in "
                                                         f"“{res['nbest'][0]['text']}” is below the minimum 0.99; raw)")
        assert "characters" not in page.inner_text("#answer-meta")
        assert not errors, errors
    finally:
        for server in servers:
            server.should_exit = True
