"""``python -m mrc.serve`` under load: the real server (uvicorn, 127.0.0.1, a free port, the session's tiny
checkpoint) takes 8 parallel clients for ~3 s mixing good requests with every kind of bad one (lone surrogates,
deeply nested JSON, a 5,000-digit number, an oversized body, too many windows, a wrong content type, a wrong
Host, unknown paths). No 5xx but a deliberate 503 with ``Retry-After``, every request gets the status its kind
calls for, the server logs no traceback, and its RSS does not grow between the first and second half.
Loopback only; bounded in requests and time; the server is stopped at the end."""
from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
from tests.serve.helpers import CONTEXT, QUESTIONS, free_port  # noqa: E402

CLIENTS, SECONDS, MAX_REQUESTS = 8, 3.0, 400  # per client: stop at whichever comes first
RSS_GROWTH = 200 * 2**20
JSON = {"content-type": "application/json"}


def cases(port: int) -> list[tuple[str, str, str, bytes, dict, set[int]]]:
    """(name, method, path, body, headers, the statuses this kind of request may get)."""
    def body(obj) -> bytes:
        return json.dumps(obj).encode()  # ensure_ascii: a lone surrogate goes out as the escape \\ud800

    good = {200, 503}  # 503 only past the deadline (checked below to carry Retry-After)
    return [
        ("predict", "POST", "/api/predict", body({"context": CONTEXT, "questions": QUESTIONS}), JSON, good),
        ("explain", "POST", "/api/explain", body({"context": CONTEXT, "question": QUESTIONS[1]}), JSON, good),
        ("info", "GET", "/api/info", b"", {}, {200}),
        ("page", "GET", "/", b"", {}, {200}),
        ("surrogate", "POST", "/api/predict", body({"context": "北京\ud800", "questions": ["谁"]}), JSON, {422}),
        ("nested", "POST", "/api/predict", b"[" * 100_000, JSON, {400}),
        ("big number", "POST", "/api/explain", b'{"context": "a", "window": ' + b"7" * 5000 + b"}", JSON, {400}),
        ("oversized", "POST", "/api/predict", body({"context": "北" * 50_000, "question": "谁"}), JSON, {413}),
        ("too many windows", "POST", "/api/predict", body({"context": "北京" * 10_000, "questions": ["谁"] * 16}),
         JSON, {422}),
        ("text/plain", "POST", "/api/predict", body({"context": CONTEXT, "question": "谁"}),
         {"content-type": "text/plain"}, {415}),
        ("wrong host", "POST", "/api/predict", body({"context": CONTEXT, "question": "谁"}),
         {**JSON, "host": f"evil.example:{port}"}, {400}),
        ("unknown path", "GET", "/nope", b"", {}, {404}),
        ("favicon", "GET", "/favicon.ico", b"", {}, {204}),
    ]


def rss(pid: int) -> int:
    """Resident set size of a process in bytes (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def request(port: int, method: str, path: str, body: bytes, headers: dict):
    """(status, headers, body) of one request on a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body or None, headers=headers)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def start_server(checkpoint: Path, port: int, log: Path) -> subprocess.Popen:
    """``python -m mrc.serve`` on 127.0.0.1:``port``; returns once ``/api/info`` answers."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mrc.serve", str(checkpoint), "--port", str(port),
                                 "--threads", "1", "--timeout", "5"], stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            if request(port, "GET", "/api/info", b"", {})[0] == 200:
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not start in 120 s")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the server's RSS from /proc")
def test_server_under_mixed_load(tiny_checkpoint, tmp_path):
    port, log = free_port(), tmp_path / "server.log"
    proc = start_server(tiny_checkpoint, port, log)
    try:
        kinds = cases(port)
        results, errors, samples = [], [], []
        start = time.monotonic()
        stop = threading.Event()

        def client(k: int):
            for i in range(MAX_REQUESTS):
                if time.monotonic() - start > SECONDS:
                    return
                name, method, path, body, headers, allowed = kinds[(k + i) % len(kinds)]
                try:
                    status, hdrs, data = request(port, method, path, body, headers)
                except OSError as e:  # noqa: PERF203 - a dropped connection is a failure to report
                    errors.append(f"{name}: {e!r}")
                    continue
                results.append((name, status, hdrs, data, allowed))

        def sampler():
            while not stop.is_set():
                samples.append((time.monotonic() - start, rss(proc.pid)))
                stop.wait(0.1)

        watch = threading.Thread(target=sampler, daemon=True)
        watch.start()
        threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        stop.set()
        watch.join(timeout=5)
        assert not any(t.is_alive() for t in threads), "a client hung"
        assert not errors, errors[:5]
        assert len(results) >= 2 * len(kinds), len(results)  # every kind was sent, and more than once
        assert {name for name, *_ in results} == {name for name, *_ in kinds}
        for name, status, hdrs, data, allowed in results:
            assert status in allowed, (name, status, data[:200])
            if status == 503:
                assert hdrs.get("retry-after", "").isdigit(), (name, hdrs)
            if status >= 400:  # one JSON line {"error": ...}
                assert list(json.loads(data)) == ["error"] and b"\n" not in data.strip(), (name, data[:200])
        first = max(r for t, r in samples if t < SECONDS / 2)
        second = max(r for t, r in samples if t >= SECONDS / 2)
        assert second - first < RSS_GROWTH, (first, second)
        assert request(port, "GET", "/api/info", b"", {})[0] == 200  # still serving
        text = log.read_text(errors="replace")
        assert "Traceback" not in text and "Exception in ASGI application" not in text, text[-3000:]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
