"""Predict with a saved checkpoint.

    python -m mrc predict CHECKPOINT_DIR INPUT.json OUT.json [--nbest NBEST.json] [--min-confidence X]
    python -m mrc predict CHECKPOINT_DIR --question 问题 --context 上下文

INPUT.json is SQuAD format (answers not needed); OUT.json is the submission format ``{id: answer}`` (what the
official scorers read, unchanged). Beside it, OUT.confidence.json (``--confidence FILE`` elsewhere) gives per id
``{"answer", "confidence", "method", "abstained"}``: the probability that the returned answer is right, by the
best method the checkpoint has (``features`` > ``temperature`` > ``raw``, :mod:`mrc.eval.confidence`).
``--min-confidence X`` answers "" where the confidence is below X (the withheld answer is in the confidence
file as ``withheld``). The n-best file gives each candidate's ``probability`` and the ``null_probability``.
``--quantize int8`` (int8 encoder on CPU), ``--quantize bf16`` (the encoder in bf16 on CPUs with AMX /
AVX512-BF16) or ``--onnx FILE`` (a graph from ``python -m mrc export``, run by
ONNX Runtime) make CPU inference faster.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from mrc.errors import command_error
from mrc.model import checkpoint
from mrc.model.quantize import (QUANTIZE, FastModelError, OnnxSpanModel, autocast_bf16, quantize_int8,
                                tokenizer_and_config)
from mrc.data.squad import DataError, Example, load_squad
from mrc.data.features import Geometry, build_windows
from mrc.eval.confidence import AnswerConfidence, check_min_confidence, load_confidence, withhold
from mrc.eval.inference import postprocess, score_windows


def make_windows(examples: list[Example], tokenizer, cfg):
    """The windows :func:`predict` scores: the geometry the model was trained with."""
    return build_windows(examples, tokenizer, Geometry.of(cfg.data), training=False)[0]


def load_for_inference(path, device: str = "cpu", *, quantize: str | None = None, onnx=None):
    """(model, tokenizer, cfg) from a checkpoint, the model optionally int8-quantised (``quantize="int8"``), its
    encoder run in bf16 (``quantize="bf16"``, :func:`mrc.model.quantize.autocast_bf16`) or replaced by an ONNX
    graph exported from this checkpoint (``onnx=FILE``); all three run on CPU only."""
    if quantize is not None and onnx is not None:
        raise FastModelError("--quantize and --onnx exclude each other; pick one")
    if quantize is not None and quantize not in QUANTIZE:
        raise FastModelError(f"--quantize {quantize!r}: one of {', '.join(QUANTIZE)}")
    if (quantize or onnx) and torch.device(device).type != "cpu":
        raise FastModelError(f"--quantize / --onnx run on the CPU; drop --device {device} or use --device cpu")
    if onnx is not None:  # the graph holds the weights: the checkpoint gives the tokenizer and config only
        tokenizer, cfg = tokenizer_and_config(path)
        model = OnnxSpanModel(onnx, checkpoint_dir=path, threads=torch.get_num_threads())
        if model.max_answer_len != cfg.decode.max_answer_len:
            raise FastModelError(f"{onnx}: exported for max_answer_len={model.max_answer_len}, the checkpoint "
                                 f"decodes with {cfg.decode.max_answer_len}; export it again")
        return model, tokenizer, cfg
    model, tokenizer, cfg = checkpoint.load(path, device)
    if quantize == "int8":
        model = quantize_int8(model)
    elif quantize == "bf16":
        model = autocast_bf16(model)
    return model, tokenizer, cfg


def predict(model, tokenizer, cfg, examples: list[Example], *, batch_size: int = 64, device: str = "cpu",
            progress: bool = False, null_threshold: float | None = None, windows=None):
    """Answers and n-best lists for ``examples`` with the window geometry the model was trained with
    (``windows``: those :func:`make_windows` built for ``examples``, when the caller needs them too)."""
    if windows is None:
        windows = make_windows(examples, tokenizer, cfg)
    n_best = cfg.decode.n_best
    arrays = score_windows(model, windows, batch_size=batch_size, max_answer_len=cfg.decode.max_answer_len,
                           n_best=n_best, device=device, pad_id=tokenizer.pad_token_id, progress=progress)
    threshold = cfg.decode.null_threshold if null_threshold is None else null_threshold
    return postprocess(examples, windows, *arrays, n_best=n_best, null_threshold=threshold)


def predict_confident(model, tokenizer, cfg, examples: list[Example], confidence: AnswerConfidence, *,
                      min_confidence: float = 0.0, **kwargs):
    """(answers, n-best, confidences): :func:`predict`'s answers with those whose confidence is below
    ``min_confidence`` withheld (""), its n-best with each candidate's ``probability`` and the
    ``null_probability``, and per id ``{"answer", "confidence", "method", "abstained"}`` (``withheld``: the
    answer given up)."""
    windows = make_windows(examples, tokenizer, cfg)
    preds, nbest = predict(model, tokenizer, cfg, examples, windows=windows, **kwargs)
    conf = confidence.of(nbest, examples, windows, preds)
    answers, abstained = withhold(preds, conf, min_confidence)
    records = {}
    for qid, answer in answers.items():
        records[qid] = {"answer": answer, "confidence": round(conf[qid], 6), "method": confidence.method,
                        "abstained": qid in abstained, **({"withheld": preds[qid]} if qid in abstained else {})}
        probs, null_prob = confidence.probabilities(nbest[qid])
        for cand, p in zip(nbest[qid]["candidates"], probs):
            cand["probability"] = round(p, 6)
        nbest[qid]["null_probability"] = round(null_prob, 6)
    return answers, nbest, records


def confidence_path(output: Path) -> Path:
    """The default confidence file beside OUT.json: OUT.confidence.json."""
    stem = output.stem if output.suffix == ".json" else output.name
    return output.with_name(f"{stem}.confidence.json")


def min_confidence_arg(text: str) -> float:
    """argparse type: a number from 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give 0..1") from None
    why = check_min_confidence(value)
    if why:
        raise argparse.ArgumentTypeError(why)
    return value


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(prog="python -m mrc predict", description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", type=Path, help="directory written by a training run (<run dir>/checkpoint)")
    ap.add_argument("input", nargs="?", type=Path, help="SQuAD-format JSON to predict")
    ap.add_argument("output", nargs="?", type=Path, help="where to write {id: answer}")
    ap.add_argument("--nbest", type=Path, help="also write n-best candidates with scores, null scores and each "
                    "candidate's probability (softmax over the candidates and the null at the checkpoint's fitted "
                    "temperature, 1 without one)")
    ap.add_argument("--confidence", type=Path, metavar="FILE",
                    help="where to write {id: {answer, confidence, method, abstained}} (default: OUT.json's "
                    "name with .confidence.json, beside it); confidence: the probability that the returned "
                    "answer is right, method: features > temperature > raw, the best the checkpoint's "
                    "calibration.json allows (raw: softmax over the n-best and the null, uncalibrated); "
                    "OUT.json itself stays {id: answer} for the official scorers")
    ap.add_argument("--min-confidence", type=min_confidence_arg, default=0.0, metavar="X",
                    help="answer '' (abstain) where the answer's confidence is below X, 0..1 (default 0: "
                    "always answer); the confidence file keeps the withheld answer")
    ap.add_argument("--question", help="predict one question (with --context) and print the answer")
    ap.add_argument("--context")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available; cpu with "
                    "--quantize / --onnx)")
    fast = ap.add_mutually_exclusive_group()
    fast.add_argument("--quantize", choices=QUANTIZE, help="int8: dynamic int8 quantisation of the encoder's "
                      "linear layers (CPU); bf16: the encoder under bf16 autocast (CPU; fast with AMX / AVX512-BF16)")
    fast.add_argument("--onnx", type=Path, help="run this ONNX file from python -m mrc export (exported from "
                      "the same checkpoint) with ONNX Runtime (CPU)")
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
    conf_file = None if single else (args.confidence or confidence_path(args.output))
    if conf_file is not None and conf_file.resolve() in {p.resolve() for p in (args.output, args.nbest) if p}:
        ap.error(f"--confidence {conf_file}: the same file as OUT.json or --nbest; give another name")
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() and not (args.quantize or args.onnx) else "cpu"
    try:
        model, tokenizer, cfg = load_for_inference(args.checkpoint, args.device, quantize=args.quantize,
                                                   onnx=args.onnx)
        confidence = load_confidence(args.checkpoint)  # after the load: its manifest check names an edited file first
        if single:
            examples = [Example("q", args.question, args.context, [], [])]
        else:
            logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")  # the loader's skip counts
            examples, stats = load_squad(args.input, training=False)
            if not examples:
                raise DataError(f"{args.input}: no usable question among its {stats.records} records; fix the file")
    except Exception as e:  # noqa: BLE001 - user mistakes get one line, anything else its traceback
        return command_error(e)
    preds, nbest, records = predict_confident(
        model, tokenizer, cfg, examples, confidence, min_confidence=args.min_confidence, batch_size=args.batch_size,
        device=args.device, progress=not single, null_threshold=args.null_threshold)
    if single:
        print(json.dumps({**records["q"], "candidates": nbest["q"]["candidates"][:5],
                          "null_probability": nbest["q"]["null_probability"]}, ensure_ascii=False))
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(preds, ensure_ascii=False, indent=1), encoding="utf-8")
    conf_file.parent.mkdir(parents=True, exist_ok=True)
    conf_file.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    if args.nbest:
        args.nbest.write_text(json.dumps(nbest, ensure_ascii=False, indent=1), encoding="utf-8")
    withheld = sum(r["abstained"] for r in records.values())
    gate = f"; {withheld} withheld below --min-confidence {args.min_confidence:g}" if args.min_confidence else ""
    print(f"wrote {len(preds)} predictions to {args.output}, their confidences ({confidence.method}) to "
          f"{conf_file}{gate}", file=sys.stderr)
    return 0
