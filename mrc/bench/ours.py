"""Speed benchmark against the HuggingFace peer, in one process, on one tiny encoder config.

    python -m mrc.bench [--data ../shared/data/dureader_robust/dev.json] [--vocab VOCAB] [--out bench.json]
    python -m mrc.bench --device cuda|cpu|auto [...]   # training speed per precision: mrc.bench.train_speed

Both sides start from the same randomly initialised tiny BERT and see the same questions with the same
``max_len`` / ``doc_stride``. The file's first ``--n-eval`` questions are evaluated, the rest trained on
(one epoch). Measured (wall clock, this process):

- training examples/s (features + training loop): ours per head; the peer (``Trainer`` +
  ``BertForQuestionAnswering``) as its example runs by default, and with the settings that give it our
  speed-ups (dynamic padding, ``group_by_length``, our batch size);
- evaluation examples/s end to end (tokenize, windows, forward, decode, answers): ours per head; the peer's
  evaluation path (see mrc.bench.peer) at its defaults and tuned; and the bare encoder forward over our
  windows, the floor;
- decode time (span grid + top-k) as a share of forward time, per head;
- peak RSS per phase and F1 of every side, including our softmax weights run through the peer's
  evaluation path, so a speed-up can never hide a wrong answer.

Every timed phase runs ``--repeat`` times (training ``--train-repeat`` times) and the fastest run is
kept: on a shared 2-core machine noise only ever adds time. Ratios (``ratios`` in the JSON) are against
the faster peer row. ``--precision bf16`` runs both sides (and the bare forward) under bf16 autocast, each the way its
users would turn it on.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from heads.base import top_spans

from mrc.bench import peer as bench_peer
from mrc.bench.measure import PeakRSS, best_of
from mrc.model.cpu import bf16_math_mode_unavailable, bf16_units, cpu_name, matmul_precision_scope, set_bf16_matmuls
from mrc.bench.summary import ratios, table
from mrc.data.batching import batches, collate
from mrc.data.squad import load_squad
from mrc.model.encoder import pretrained, tiny_bert
from mrc.data.features import Geometry, build_windows
from mrc.eval.inference import postprocess, score_windows
from mrc.eval.metric import evaluate, load_references
from mrc.model.span_model import SpanModel
from mrc.train.loop import TrainLoop, build_optimizer, steps_per_epoch

CONF = Path(__file__).resolve().parents[2] / "conf"
HEADS = ("softmax", "globalpointer", "efficient_globalpointer")


def f1_em(gold, preds) -> dict:
    summary, _ = evaluate(gold, preds)
    return {"F1": summary["F1"], "EM": summary["EM"]}


def trainer_cfg(args, null_window_keep: float = 1.0):
    cfg = OmegaConf.load(CONF / "trainer" / "default.yaml")
    cfg.merge_with({"epochs": 1, "batch_size": args.batch_size, "eval_batch_size": args.eval_batch_size,
                    "null_window_keep": null_window_keep, "seed": args.seed, "progress": False,
                    "log_every": 10**9, "device": "cpu"})
    return cfg


def amp_dtype(args) -> torch.dtype | None:
    """The autocast dtype of ``--precision`` on our side (bf16: torch.autocast, as ``trainer.cpu_bf16_via=autocast``
    runs it), None for fp32 and for the math-mode way (no autocast)."""
    return torch.bfloat16 if args.precision == "bf16" else None


def peer_precision(args) -> str:
    """The peer's ``TrainingArguments`` precision for ``--precision``: its ``bf16=True`` (accelerate's autocast) for
    bf16, fp32 otherwise (the math mode, when on, changes the peer's products as it changes ours)."""
    return "bf16" if args.precision == "bf16" else "fp32"


def autocast(args):
    """Around a forward pass of ours or of the bare encoder: autocast in ``--precision`` (a no-op for fp32)."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp_dtype(args) is not None)


def train_ours(encoder, head_name: str, tokenizer, train, args, null_window_keep: float = 1.0) -> tuple[SpanModel, dict]:
    """Features + one epoch of our training loop for one head, from a copy of the initial encoder."""
    torch.manual_seed(args.seed)  # the head's init and dropout: identical in every repeat
    head_cfg = OmegaConf.load(CONF / "head" / f"{head_name}.yaml")
    head_cfg.span_max_len = args.max_answer_len  # the file interpolates the run config's decode.max_answer_len
    head = instantiate(head_cfg, hidden_size=encoder.config.hidden_size)
    model = SpanModel(copy.deepcopy(encoder), head)
    tr, optim = trainer_cfg(args, null_window_keep), OmegaConf.load(CONF / "optim" / "adamw.yaml")
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        windows, _ = build_windows(train, tokenizer, Geometry.of(args), training=True)
        t1 = time.perf_counter()
        opt, sched = build_optimizer(model, optim, steps_per_epoch(windows, tr))
        TrainLoop(model, opt, sched, tr, tokenizer.pad_token_id, "cpu",
                  amp_dtype=amp_dtype(args)).run_epoch(windows, epoch=1, step=0)
        t2 = time.perf_counter()
    return model, {"features_s": t1 - t0, "train_s": t2 - t1, "seconds": t2 - t0, "windows": len(windows),
                   "peak_rss_mb": mem.peak_mb, "examples_per_s": len(train) / (t2 - t0)}


def eval_ours(model, tokenizer, examples, gold, args) -> dict:
    """End to end: windows, forward, decode, answers."""
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        windows, _ = build_windows(examples, tokenizer, Geometry.of(args), training=False)
        arrays = score_windows(model, windows, batch_size=args.eval_batch_size, max_answer_len=args.max_answer_len,
                               n_best=20, device="cpu", pad_id=tokenizer.pad_token_id, amp_dtype=amp_dtype(args))
        preds, _ = postprocess(examples, windows, *arrays, n_best=20)
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "examples_per_s": len(examples) / seconds, "windows": len(windows),
            "peak_rss_mb": mem.peak_mb, **f1_em(gold, preds)}


@torch.inference_mode()
def forward_and_decode(model, batches_, args) -> dict:
    """Time the model forward and the decode (span grid + top-k) separately over the same batches."""
    model.eval()
    fwd = dec = 0.0
    for batch in batches_:
        t0 = time.perf_counter()
        with autocast(args):
            out = model(**batch)
        t1 = time.perf_counter()
        grid = model.head.span_scores(out, batch["span_mask"], args.max_answer_len)
        [t.cpu() for t in top_spans(grid, 20)]
        dec += time.perf_counter() - t1
        fwd += t1 - t0
    return {"forward_s": fwd, "decode_s": dec, "decode_share": dec / fwd, "seconds": fwd + dec}


@torch.inference_mode()
def bare_forward(encoder, batches_, args) -> float:
    """Seconds for the encoder alone over pre-collated batches, in ``--precision``: the floor for evaluation."""
    encoder.eval()
    t0 = time.perf_counter()
    with autocast(args):
        for b in batches_:
            encoder(input_ids=b["input_ids"], attention_mask=b["attention_mask"], token_type_ids=b["token_type_ids"])
    return time.perf_counter() - t0


def collated(windows, tokenizer, args) -> list[dict]:
    order = batches([len(w.input_ids) for w in windows], args.eval_batch_size, shuffle=False)
    return [collate([windows[i] for i in idx], tokenizer.pad_token_id) for idx in order]


def peer_rows(encoder, tokenizer, train, examples, gold, ours_softmax, args) -> dict:
    """The peer: training at its defaults and tuned; evaluation at its defaults and tuned."""
    rows = {"train": {}, "eval": {}}
    kinds = {"default": dict(batch_size=8, pad=True, group_by_length=False),
             "tuned": dict(batch_size=args.batch_size, pad=False, group_by_length=True)}
    trained = None
    for name, kw in kinds.items():
        def peer_train(kw=kw):
            torch.manual_seed(args.seed)  # the QA layer's init: identical in every repeat
            model = bench_peer.qa_model(encoder)
            with PeakRSS() as mem:
                t = bench_peer.train(model, tokenizer, train, max_len=args.max_len, doc_stride=args.doc_stride,
                                     seed=args.seed, precision=peer_precision(args), **kw)
            seconds = t["features_s"] + t["train_s"]
            t.update(seconds=seconds, peak_rss_mb=mem.peak_mb, examples_per_s=len(train) / seconds, **kw)
            return model, t

        trained, rows["train"][name] = best_of(args.train_repeat, peer_train)
    pipeline = bench_peer.has_qa_pipeline()
    eval_kinds = {"default": dict(batch_size=8, pad=True), "tuned": dict(batch_size=args.eval_batch_size, pad=False)}
    for name, kw in eval_kinds.items():
        rows["eval"][name] = best_of(args.repeat, lambda kw=kw: peer_eval(trained, tokenizer, examples, gold, kw,
                                                                          pipeline, args))
    rows["eval_path"] = "question-answering pipeline" if pipeline else "QA example path (Trainer.predict + n-best)"
    # our softmax weights through the peer's evaluation path: the same answers, or a bug somewhere
    same = bench_peer.qa_model(ours_softmax.encoder, ours_softmax.head.proj)
    preds, _ = bench_peer.evaluate_example_path(same, tokenizer, examples, max_len=args.max_len,
                                                doc_stride=args.doc_stride, batch_size=args.eval_batch_size, pad=False,
                                                context_only=True, precision=peer_precision(args))
    rows["ours_softmax_weights_via_peer"] = f1_em(gold, preds)
    return rows


def peer_eval(model, tokenizer, examples, gold, kw, pipeline: bool, args) -> dict:
    """One timed evaluation by the peer (pipeline or example path)."""
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        if pipeline:
            with autocast(args):  # the pipeline has no precision setting of its own
                preds, n_win = bench_peer.evaluate_pipeline(model, tokenizer, examples, max_len=args.max_len,
                                                            doc_stride=args.doc_stride, batch_size=kw["batch_size"])
        else:
            preds, n_win = bench_peer.evaluate_example_path(model, tokenizer, examples, max_len=args.max_len,
                                                            doc_stride=args.doc_stride, precision=peer_precision(args),
                                                            **kw)
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "examples_per_s": len(examples) / seconds, "windows": n_win,
            "peak_rss_mb": mem.peak_mb, **kw, **f1_em(gold, preds)}


def parse_args(argv=None):
    root = Path(__file__).resolve().parents[3] / "shared"
    ap = argparse.ArgumentParser(description="Benchmark our training/evaluation against the HuggingFace peer; with "
                                 "--device, training speed per precision on that device (mrc.bench.train_speed).")
    ap.add_argument("--data", default=str(root / "data" / "dureader_robust" / "dev.json"))
    ap.add_argument("--vocab", default=str(root / "vocab" / "bert-base-chinese" / "vocab.txt"),
                    help="WordPiece vocabulary of the random-init BERT (default: the shared bert-base-chinese one); "
                         "'data': a character vocabulary built from --data's contexts. A missing file is an error: "
                         "another vocabulary cuts other windows, and its timings compare with nothing")
    ap.add_argument("--out", default=None, help="JSON written (default bench.json; with --device bench_train.json, "
                                                "and a .md table beside it)")
    ap.add_argument("--heads", default=",".join(HEADS))
    ap.add_argument("--n-eval", type=int, default=700, help="first N questions are evaluated, the rest trained on")
    ap.add_argument("--n-train", type=int, default=None, help="cap on training questions")
    ap.add_argument("--max-len", type=int, default=384)
    ap.add_argument("--max-query-len", type=int, default=64)
    ap.add_argument("--doc-stride", type=int, default=128)
    ap.add_argument("--max-answer-len", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--eval-batch-size", type=int, default=64)
    ap.add_argument("--encoder", default=None,
                    help="a saved encoder directory (e.g. outputs/e5_small) instead of the random-init tiny BERT; "
                         "both sides start from its weights and tokenizer")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3, help="timed repeats of each evaluation; the fastest is kept")
    ap.add_argument("--train-repeat", type=int, default=2, help="timed repeats of each training run")
    ap.add_argument("--precision", choices=("fp32", "bf16", "bf16-matmul"), default="fp32",
                    help="bf16: both sides train and evaluate under bf16 autocast, each its own way (ours as "
                         "trainer.cpu_bf16=true trainer.cpu_bf16_via=autocast, the head's scores in fp32; the peer "
                         "with TrainingArguments(bf16=True)), the bare forward too; bf16-matmul: every fp32 matrix "
                         "product of both sides runs with bf16 inputs and fp32 accumulation (oneDNN's bf16 math mode, "
                         "= trainer.cpu_bf16_via=matmul), refused where this torch build ignores the mode (the bench "
                         "would compare fp32 with fp32). Run the bench once per precision, in its own process, on the "
                         "same machine to compare the ratios")
    ap.add_argument("--null-window-keep", type=float, default=0.2,
                    help="extra softmax row trained with this share of no-answer windows (trainer.null_window_keep)")
    speed = ap.add_argument_group("training speed on a device (--device; mrc.bench.train_speed)")
    speed.add_argument("--device", choices=("cpu", "cuda", "auto"), default=None,
                       help="measure training speed on this device instead of the CPU comparison above")
    speed.add_argument("--shape", choices=("base", "tiny"), default="base",
                       help="random-init BERT: base = roberta_wwm's 12 x 768, vocab 21128; tiny = 1 x 32 (tests)")
    speed.add_argument("--variants", default=None,
                       help="comma-separated fp32 / tf32 / bf16 / fp16 / auto, each optionally +compile (default: "
                            "CUDA fp32 and its native half precisions, those also compiled; CPU fp32)")
    speed.add_argument("--sides", default="ours,hf", help="ours, hf (the Trainer peer) or both")
    speed.add_argument("--windows", type=int, default=None, help="windows per timed epoch (default 64 batches on "
                                                                 "CUDA, 8 on the CPU)")
    speed.add_argument("--length", type=int, default=None, help="window length (default 384; tiny 64)")
    speed.add_argument("--inputs", choices=("synthetic", "data"), default="synthetic",
                       help="synthetic windows, or the training windows of --data")
    speed.add_argument("--warmup-batches", type=int, default=5, help="untimed batches first (compiles happen there)")
    speed.add_argument("--num-workers", type=int, default=0,
                       help="collating workers (trainer.num_workers; the peer's dataloader_num_workers)")
    speed.add_argument("--peak-tflops", type=float, default=None,
                       help="peak TFLOP/s for MFU (CPU, or a GPU missing from mrc.bench.peaks)")
    return ap.parse_args(argv)


def load_encoder(args, data: Path):
    """``--encoder DIR`` (a saved HF encoder, e.g. e5_small) or the random-init tiny BERT of ``--layers``/``--hidden``."""
    if args.encoder:
        return pretrained(args.encoder, local_files_only=True)
    vocab = None if args.vocab == "data" else args.vocab
    if vocab is not None and not Path(vocab).is_file():
        raise SystemExit(f"mrc.bench: --vocab {vocab} not found (--vocab data: a character vocabulary built from --data)")
    return tiny_bert(vocab_file=vocab, layers=args.layers, hidden_size=args.hidden, heads=max(args.hidden // 64, 1),
                     intermediate_size=4 * args.hidden, dropout=0.1, seed=args.seed,
                     texts=None if vocab else [e.context for e in load_squad(data, training=False)[0]])


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device is not None:
        from mrc.bench import train_speed
        return train_speed.main(args)
    why = bf16_math_mode_unavailable() if args.precision == "bf16-matmul" else None
    if why:
        raise SystemExit(f"mrc.bench: --precision bf16-matmul: {why}, so both sides would run fp32 and the bench "
                         "would compare fp32 with fp32 (compare bf16 training with trainer.cpu_bf16_via=autocast)")
    with matmul_precision_scope():
        set_bf16_matmuls(args.precision == "bf16-matmul")
        return _bench(args)


def _bench(args) -> int:
    data = Path(args.data)
    if not data.is_file():
        raise SystemExit(f"mrc.bench: --data {data} not found")
    enc = load_encoder(args, data)
    all_eval, _ = load_squad(data, training=False)
    train_all, _ = load_squad(data, training=True)
    eval_ids = {e.id for e in all_eval[:args.n_eval]}
    examples = all_eval[:args.n_eval]
    train = [e for e in train_all if e.id not in eval_ids][:args.n_train]
    gold = [g for g in load_references(data) if g.id in eval_ids]
    result = {"config": {**vars(args), "torch": torch.__version__, "threads": torch.get_num_threads(),
                         "cpu": cpu_name(), "bf16_units": bf16_units(), "cores": os.cpu_count(), "n_train": len(train),
                         "n_eval": len(examples), "vocab_size": enc.tokenizer.vocab_size}, "ours": {}}
    windows, _ = build_windows(examples, enc.tokenizer, Geometry.of(args), training=False)
    batches_ = collated(windows, enc.tokenizer, args)
    bare_forward(enc.model, batches_, args)  # warm-up: first passes pay for allocator and thread-pool start-up
    fwd = min(bare_forward(enc.model, batches_, args) for _ in range(args.repeat))
    result["forward"] = {"seconds": fwd, "examples_per_s": len(examples) / fwd, "windows": len(windows)}
    models = {}
    for head in args.heads.split(","):
        model, tr = best_of(args.train_repeat, lambda head=head: train_ours(enc.model, head, enc.tokenizer, train, args))
        ev = best_of(args.repeat, lambda model=model: eval_ours(model, enc.tokenizer, examples, gold, args))
        dec = best_of(args.repeat, lambda model=model: forward_and_decode(model, batches_, args))
        result["ours"][head] = {"train": tr, "eval": ev, "decode": dec}
        models[head] = model
        print(f"ours {head}: train {tr['examples_per_s']:.1f} ex/s, eval {ev['examples_per_s']:.1f} ex/s, "
              f"F1 {ev['F1']:.2f}", flush=True)
    softmax = models.get("softmax") or train_ours(enc.model, "softmax", enc.tokenizer, train, args)[0]
    # our null-window sampling (trainer.null_window_keep): fewer windows per epoch, no peer setting does it
    model, tr = best_of(args.train_repeat, lambda: train_ours(enc.model, "softmax", enc.tokenizer, train, args,
                                                              null_window_keep=args.null_window_keep))
    result["ours_null_window_keep"] = {"null_window_keep": args.null_window_keep, "train": tr,
                                       **{k: v for k, v in eval_ours(model, enc.tokenizer, examples, gold, args).items()
                                          if k in ("F1", "EM")}}
    result["peer"] = peer_rows(enc.model, enc.tokenizer, train, examples, gold, softmax, args)
    result["ratios"] = ratios(result)
    out = args.out or "bench.json"
    Path(out).write_text(json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8")
    print(table(result))
    print(f"wrote {out}")
    return 0
