"""The page in a real browser: headless Chromium (the system's, driven by Playwright) loads ``/``, asks a
question, and the answer appears highlighted; a screenshot goes to ``$MRC_ARTIFACTS`` (CI artefact) or the
test's tmp dir, never into the repository."""
from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from mrc.eval.predict import load_for_inference
from tests.serve_helpers import CONTEXT, QUESTIONS, make_checkpoint

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


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


@pytest.mark.parametrize("head", ["softmax", "globalpointer"])
def test_the_page_answers_in_a_browser(browser, tmp_path, head):
    from mrc.serve.app import create_app

    model, tok, cfg = load_for_inference(make_checkpoint(tmp_path / head, head))
    url, server = serve(create_app(model, tok, cfg))
    try:
        page = browser.new_page(viewport={"width": 1100, "height": 1400})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        # waits by selector: the page's CSP forbids eval, which wait_for_function needs
        page.locator("#info", has_text="head").wait_for()
        page.fill("#context", CONTEXT)
        page.fill("#question", QUESTIONS[0])
        page.click("#ask")
        page.wait_for_selector("#results:not([hidden])", timeout=20_000)
        answer = page.inner_text("#answer-text")
        assert answer and answer in CONTEXT
        assert page.inner_text("#context-view mark") == answer  # highlighted in the context
        assert page.locator("#nbest tbody tr").count() == cfg.decode.n_best
        assert page.locator("#windows .winrow").count() > 1
        size = [int(page.locator("#scores").get_attribute(k)) for k in ("width", "height")]
        assert size[0] > 100 and size[1] > 100  # the bars / the heat-map were drawn
        page.click("#windows .winrow >> nth=0")  # another window's scores on demand
        page.locator("#windows .winrow.shown[data-window='0']").wait_for()
        assert not errors, errors
        out = Path(os.environ.get("MRC_ARTIFACTS") or tmp_path)
        out.mkdir(parents=True, exist_ok=True)
        shot = out / f"serve_page_{head}.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
    finally:
        server.should_exit = True
