"""``python -m mrc.serve CHECKPOINT_DIR``: the command line of the HTTP API and page (:mod:`mrc.serve.app`), run
by uvicorn. Heavy imports (torch, FastAPI) wait until the arguments are parsed, so ``--help`` is fast."""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from mrc.errors import command_error
from mrc.serve.limits import Limits

QUANTIZE = ("int8", "bf16")  # = mrc.model.quantize.QUANTIZE (not imported here: it pulls in torch)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (0 or less would refuse every request, or mean nothing)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer; give 1 or more")
    return value


def port_number(text: str) -> int:
    """argparse type: a TCP port, 1-65535."""
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port; give 1-65535")
    return value


def _finite(text: str, ok, not_a_number: str, out_of_range: str) -> float:
    """``text`` as a finite float for which ``ok(value)`` holds, else argparse's one-line error."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} {not_a_number}") from None
    if not math.isfinite(value) or not ok(value):
        raise argparse.ArgumentTypeError(f"{text} {out_of_range}")
    return value


def seconds(text: str) -> float:
    """argparse type: a finite number of seconds > 0."""
    return _finite(text, lambda v: v > 0, "is not a number of seconds", "is not a positive number of seconds")


def fraction(text: str) -> float:
    """argparse type: a number from 0 to 1 (a minimum confidence)."""
    return _finite(text, lambda v: 0 <= v <= 1, "is not a number; give 0..1", "is outside 0..1 (0: always answer)")


def host_list(text: str) -> list[str]:
    """argparse type: comma-separated host names or addresses as a Host header gives them, without a port."""
    names = [n.strip() for n in text.split(",")]
    for n in names:
        if not n or any(c.isspace() or c in "/*@" for c in n):
            raise argparse.ArgumentTypeError(f"{n!r} is not a host name; give names separated by commas, e.g. "
                                             "myhost.lan,10.0.0.5 (no blanks, paths or wildcards)")
        if n.count(":") == 1 or n.startswith("[") and not n.endswith("]"):
            raise argparse.ArgumentTypeError(f"{n!r}: give the name without a port (requests must use --port)")
    return names


def build_parser() -> argparse.ArgumentParser:
    """The command line of python -m mrc.serve (options checked for range as they are parsed)."""
    ap = argparse.ArgumentParser(prog="python -m mrc.serve", description="HTTP JSON API and web page that "
                                 "answer questions with a trained checkpoint and show the span scores.")
    ap.add_argument("checkpoint", type=Path, help="directory written by a training run (<run dir>/checkpoint)")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    ap.add_argument("--port", type=port_number, default=8000, help="port, 1-65535 (default 8000)")
    ap.add_argument("--allowed-hosts", type=host_list, default=[], metavar="NAME,...",
                    help="more names a request's Host header may give, comma-separated, without a port (default: "
                    "only 127.0.0.1, localhost, [::1] and --host, so that web pages elsewhere cannot reach the "
                    "server); others get 400")
    fast = ap.add_mutually_exclusive_group()
    fast.add_argument("--quantize", choices=QUANTIZE, help="int8: dynamic int8 quantisation of the encoder's "
                      "linear layers (CPU); bf16: the encoder under bf16 autocast (CPU; fast with AMX / AVX512-BF16)")
    fast.add_argument("--onnx", type=Path, help="answer with this ONNX file from python -m mrc export (same "
                      "checkpoint), run by ONNX Runtime (CPU)")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda, ... (--quantize / --onnx: cpu only)")
    ap.add_argument("--threads", type=positive_int, default=None,
                    help="torch / ONNX Runtime threads, 1 or more (default: torch's)")
    ap.add_argument("--min-confidence", type=fraction, default=0.0, metavar="X",
                    help="withhold answers whose confidence is below X, 0..1: they come back as \"\" with "
                    "\"abstained\": true (default 0: off; a request's min_confidence replaces it). The confidence "
                    "is the best the checkpoint's calibration.json allows: features > temperature > raw")
    d = Limits()
    ap.add_argument("--max-context-chars", type=positive_int, default=d.max_context_chars,
                    help=f"longest context accepted (default {d.max_context_chars})")
    ap.add_argument("--max-body-bytes", type=positive_int, default=d.max_body_bytes,
                    help=f"largest request body (default {d.max_body_bytes} = 256 KB)")
    ap.add_argument("--max-questions", type=positive_int, default=d.max_questions,
                    help=f"questions per request (default {d.max_questions})")
    ap.add_argument("--max-question-chars", type=positive_int, default=d.max_question_chars,
                    help=f"longest question (default {d.max_question_chars})")
    ap.add_argument("--max-windows", type=positive_int, default=d.max_windows,
                    help=f"windows one request may run through the model, counted before it runs (422 above; "
                    f"default {d.max_windows}: one {d.max_context_chars}-character context at 256-token windows)")
    ap.add_argument("--timeout", type=seconds, default=d.timeout,
                    help=f"seconds one request may wait for and use the model (default {d.timeout:g}); past it: "
                    "503 with Retry-After")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    args = build_parser().parse_args(argv)
    try:
        import uvicorn

        from mrc.serve.app import create_app
    except ModuleNotFoundError as e:  # the serve extra is not installed
        if e.name not in ("fastapi", "starlette", "uvicorn", "pydantic"):
            raise
        print(f"error: python -m mrc.serve needs {e.name}; install the serve extra: pip install -e '.[serve]'",
              file=sys.stderr)
        return 2
    import torch

    from mrc.eval.confidence import load_confidence
    from mrc.eval.predict import load_for_inference

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model, tokenizer, cfg = load_for_inference(args.checkpoint, args.device, quantize=args.quantize,
                                                   onnx=args.onnx)
        confidence = load_confidence(args.checkpoint)  # after the load: its manifest check names an edited file first
    except Exception as e:  # noqa: BLE001 - user mistakes get one line, anything else its traceback
        return command_error(e)
    backend = args.quantize or ("onnx" if args.onnx else "fp32")
    limits = Limits(max_body_bytes=args.max_body_bytes, max_context_chars=args.max_context_chars,
                    max_questions=args.max_questions, max_question_chars=args.max_question_chars,
                    max_windows=args.max_windows, timeout=args.timeout)
    app = create_app(model, tokenizer, cfg, limits=limits, backend=backend, device=args.device, host=args.host,
                     port=args.port, allowed_hosts=args.allowed_hosts, confidence=confidence,
                     min_confidence=args.min_confidence)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: binding {args.host}: anyone who can reach this address can use the model (requests "
              "must name it in their Host header: give the names it is reached by with --allowed-hosts)",
              file=sys.stderr)
    gate = f", answers below confidence {args.min_confidence:g} withheld" if args.min_confidence else ""
    print(f"serving {args.checkpoint} ({backend}; confidence: {confidence.method}{gate}) on "
          f"http://{args.host}:{args.port}/", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
