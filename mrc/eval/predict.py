"""Predict with a saved checkpoint.

    python -m mrc.predict CHECKPOINT_DIR INPUT.json OUT.json [--nbest NBEST.json]
    python -m mrc.predict CHECKPOINT_DIR --question 问题 --context 上下文

INPUT.json is SQuAD format (answers not needed); OUT.json is the submission format ``{id: answer}``.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from mrc.model import checkpoint
from mrc.data.squad import DataError, Example, load_squad
from mrc.data.features import build_windows
from mrc.eval.inference import postprocess, score_windows


def predict(model, tokenizer, cfg, examples: list[Example], *, batch_size: int = 64, device: str = "cpu",
            progress: bool = False, null_threshold: float | None = None):
    """Answers and n-best lists for ``examples`` with the window geometry the model was trained with."""
    windows, _ = build_windows(examples, tokenizer, max_len=cfg.data.max_len, max_query_len=cfg.data.max_query_len,
                               doc_stride=cfg.data.doc_stride, training=False)
    n_best = cfg.decode.n_best
    arrays = score_windows(model, windows, batch_size=batch_size, max_answer_len=cfg.decode.max_answer_len,
                           n_best=n_best, device=device, pad_id=tokenizer.pad_token_id, progress=progress)
    threshold = cfg.decode.null_threshold if null_threshold is None else null_threshold
    return postprocess(examples, windows, *arrays, n_best=n_best, null_threshold=threshold)


def debug_enabled() -> bool:
    """``MRC_DEBUG=1``: show tracebacks instead of one-line messages (as run.py does)."""
    import os

    return os.environ.get("MRC_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(prog="python -m mrc.predict", description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", type=Path, help="directory written by a training run (<run dir>/checkpoint)")
    ap.add_argument("input", nargs="?", type=Path, help="SQuAD-format JSON to predict")
    ap.add_argument("output", nargs="?", type=Path, help="where to write {id: answer}")
    ap.add_argument("--nbest", type=Path, help="also write n-best candidates with scores and null scores")
    ap.add_argument("--question", help="predict one question (with --context) and print the answer")
    ap.add_argument("--context")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--null-threshold", type=float, default=None,
                    help="answer '' when null_score - best_span_score > this (default: the checkpoint's)")
    args = ap.parse_args(argv)
    single = args.question is not None or args.context is not None
    if single and (args.question is None or args.context is None):
        ap.error("--question and --context go together")
    for flag, value in (("--question", args.question), ("--context", args.context)):
        if single and not value.strip():
            ap.error(f"{flag} is empty: give the {'question to ask' if flag == '--question' else 'passage to read'}")
    if not single and not (args.input and args.output):
        ap.error("give INPUT.json and OUT.json, or --question and --context")
    try:
        model, tokenizer, cfg = checkpoint.load(args.checkpoint, args.device)
        if single:
            examples = [Example("q", args.question, args.context, [], [])]
        else:
            logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")  # the loader's skip counts
            examples, stats = load_squad(args.input, training=False)
            if not examples:
                raise DataError(f"{args.input}: no usable question among its {stats.records} records; fix the file")
    except Exception as e:  # noqa: BLE001 - user mistakes get one line, anything else its traceback
        if not (getattr(e, "user_facing", False) or isinstance(e, FileNotFoundError)) or debug_enabled():
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    preds, nbest = predict(model, tokenizer, cfg, examples, batch_size=args.batch_size, device=args.device,
                           progress=not single, null_threshold=args.null_threshold)
    if single:
        print(json.dumps({"answer": preds["q"], "candidates": nbest["q"]["candidates"][:5]}, ensure_ascii=False))
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(preds, ensure_ascii=False, indent=1), encoding="utf-8")
    if args.nbest:
        args.nbest.write_text(json.dumps(nbest, ensure_ascii=False, indent=1), encoding="utf-8")
    print(f"wrote {len(preds)} predictions to {args.output}", file=sys.stderr)
    return 0
