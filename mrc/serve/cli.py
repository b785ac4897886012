"""``python -m mrc.serve CHECKPOINT_DIR``: the command line of the HTTP API and page (:mod:`mrc.serve.app`), run
by uvicorn. Heavy imports (torch, FastAPI) wait until the arguments are parsed, so ``--help`` is fast."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mrc.serve.limits import Limits

QUANTIZE = ("int8", "bf16")  # = mrc.model.quantize.QUANTIZE (not imported here: it pulls in torch)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m mrc.serve", description="HTTP JSON API and web page that "
                                 "answer questions with a trained checkpoint and show the span scores.")
    ap.add_argument("checkpoint", type=Path, help="directory written by a training run (<run dir>/checkpoint)")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    ap.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    fast = ap.add_mutually_exclusive_group()
    fast.add_argument("--quantize", choices=QUANTIZE, help="int8: dynamic int8 quantisation of the encoder's "
                      "linear layers (CPU); bf16: the encoder under bf16 autocast (CPU; fast with AMX / AVX512-BF16)")
    fast.add_argument("--onnx", type=Path, help="answer with this ONNX file from python -m mrc.export (same "
                      "checkpoint), run by ONNX Runtime (CPU)")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda, ... (--quantize / --onnx: cpu only)")
    ap.add_argument("--threads", type=int, default=None, help="torch / ONNX Runtime threads (default: torch's)")
    d = Limits()
    ap.add_argument("--max-context-chars", type=int, default=d.max_context_chars,
                    help=f"longest context accepted (default {d.max_context_chars})")
    ap.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes,
                    help=f"largest request body (default {d.max_body_bytes} = 256 KB)")
    ap.add_argument("--max-questions", type=int, default=d.max_questions,
                    help=f"questions per request (default {d.max_questions})")
    ap.add_argument("--max-question-chars", type=int, default=d.max_question_chars,
                    help=f"longest question (default {d.max_question_chars})")
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

    from mrc.eval.predict import debug_enabled, load_for_inference

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model, tokenizer, cfg = load_for_inference(args.checkpoint, args.device, quantize=args.quantize,
                                                   onnx=args.onnx)
    except Exception as e:  # noqa: BLE001 - user mistakes get one line, anything else its traceback
        if not (getattr(e, "user_facing", False) or isinstance(e, FileNotFoundError)) or debug_enabled():
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    backend = args.quantize or ("onnx" if args.onnx else "fp32")
    limits = Limits(args.max_body_bytes, args.max_context_chars, args.max_questions, args.max_question_chars)
    app = create_app(model, tokenizer, cfg, limits=limits, backend=backend, device=args.device)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: binding {args.host}: anyone who can reach this address can use the model",
              file=sys.stderr)
    print(f"serving {args.checkpoint} ({backend}) on http://{args.host}:{args.port}/", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
