"""Speed benchmark against the HuggingFace peer, in one process, on one tiny encoder config.

    python -m mrc.bench [--data ../shared/data/dureader_robust/dev.json] [--vocab VOCAB] [--out bench.json]

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
the faster peer row.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import threading
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from heads.base import top_spans

from mrc.bench import peer as bench_peer
from mrc.data.batching import batches, collate
from mrc.data.squad import load_squad
from mrc.model.encoder import tiny_bert
from mrc.data.features import build_windows
from mrc.eval.inference import postprocess, score_windows
from mrc.train.loggers import NullLogger
from mrc.eval.metric import evaluate, load_references
from mrc.model.span_model import SpanModel
from mrc.train.loop import build_optimizer, steps_per_epoch, train_epoch

CONF = Path(__file__).resolve().parents[2] / "conf"
HEADS = ("softmax", "globalpointer", "efficient_globalpointer")


class PeakRSS:
    """Samples this process's resident memory in a thread; ``peak_mb`` is the maximum seen in the block."""

    def __init__(self, every_s: float = 0.005):
        self.every_s, self.peak, self._stop = every_s, 0, threading.Event()

    @staticmethod
    def current() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            time.sleep(self.every_s)

    def __enter__(self):
        self.peak = self.current()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.current())

    @property
    def peak_mb(self) -> float:
        return round(self.peak / 2**20, 1)


def best_of(n: int, run):
    """Run ``run()`` n times; keep the result with the smallest ``seconds`` (timing noise only adds time)."""
    results = [run() for _ in range(max(n, 1))]
    return min(results, key=lambda r: r[-1]["seconds"] if isinstance(r, tuple) else r["seconds"])


def f1_em(gold, preds) -> dict:
    summary, _ = evaluate(gold, preds)
    return {"F1": summary["F1"], "EM": summary["EM"]}


def trainer_cfg(args, null_window_keep: float = 1.0):
    cfg = OmegaConf.load(CONF / "trainer" / "default.yaml")
    cfg.merge_with({"epochs": 1, "batch_size": args.batch_size, "eval_batch_size": args.eval_batch_size,
                    "null_window_keep": null_window_keep, "seed": args.seed, "progress": False,
                    "log_every": 10**9, "device": "cpu"})
    return cfg


def train_ours(encoder, head_name: str, tokenizer, train, args, null_window_keep: float = 1.0) -> tuple[SpanModel, dict]:
    """Features + one epoch of our training loop for one head, from a copy of the initial encoder."""
    torch.manual_seed(args.seed)  # the head's init and dropout: identical in every repeat
    head = instantiate(OmegaConf.load(CONF / "head" / f"{head_name}.yaml"), hidden_size=encoder.config.hidden_size)
    model = SpanModel(copy.deepcopy(encoder), head)
    tr, optim = trainer_cfg(args, null_window_keep), OmegaConf.load(CONF / "optim" / "adamw.yaml")
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        windows, _ = build_windows(train, tokenizer, training=True, **geometry(args))
        t1 = time.perf_counter()
        opt, sched = build_optimizer(model, optim, steps_per_epoch(windows, tr))
        train_epoch(model, windows, opt, sched, epoch=1, trainer=tr, pad_id=tokenizer.pad_token_id, device="cpu",
                    amp_dtype=None, logger=NullLogger(), step=0)
        t2 = time.perf_counter()
    return model, {"features_s": t1 - t0, "train_s": t2 - t1, "seconds": t2 - t0, "windows": len(windows),
                   "peak_rss_mb": mem.peak_mb, "examples_per_s": len(train) / (t2 - t0)}


def geometry(args) -> dict:
    return {"max_len": args.max_len, "max_query_len": args.max_query_len, "doc_stride": args.doc_stride}


def eval_ours(model, tokenizer, examples, gold, args) -> dict:
    """End to end: windows, forward, decode, answers."""
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        windows, _ = build_windows(examples, tokenizer, training=False, **geometry(args))
        arrays = score_windows(model, windows, batch_size=args.eval_batch_size, max_answer_len=args.max_answer_len,
                               n_best=20, device="cpu", pad_id=tokenizer.pad_token_id)
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
        out = model(**batch)
        t1 = time.perf_counter()
        grid = model.head.span_scores(out, batch["span_mask"], args.max_answer_len)
        [t.cpu() for t in top_spans(grid, 20)]
        dec += time.perf_counter() - t1
        fwd += t1 - t0
    return {"forward_s": fwd, "decode_s": dec, "decode_share": dec / fwd, "seconds": fwd + dec}


@torch.inference_mode()
def bare_forward(encoder, batches_) -> float:
    """Seconds for the encoder alone over pre-collated batches: the floor for evaluation."""
    encoder.eval()
    t0 = time.perf_counter()
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
                                     seed=args.seed, **kw)
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
                                                context_only=True)
    rows["ours_softmax_weights_via_peer"] = f1_em(gold, preds)
    return rows


def peer_eval(model, tokenizer, examples, gold, kw, pipeline: bool, args) -> dict:
    """One timed evaluation by the peer (pipeline or example path)."""
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        if pipeline:
            preds, n_win = bench_peer.evaluate_pipeline(model, tokenizer, examples, max_len=args.max_len,
                                                        doc_stride=args.doc_stride, batch_size=kw["batch_size"])
        else:
            preds, n_win = bench_peer.evaluate_example_path(model, tokenizer, examples, max_len=args.max_len,
                                                            doc_stride=args.doc_stride, **kw)
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "examples_per_s": len(examples) / seconds, "windows": n_win,
            "peak_rss_mb": mem.peak_mb, **kw, **f1_em(gold, preds)}


def ratios(result: dict) -> dict:
    """Each ratio for the like-for-like pair (our softmax head vs the faster peer row), and per head."""
    ours, peer = result["ours"], result["peer"]
    best_train = max(r["examples_per_s"] for r in peer["train"].values())
    best_eval = max(r["examples_per_s"] for r in peer["eval"].values())
    by_head = {
        "train_vs_hf": {h: ours[h]["train"]["examples_per_s"] / best_train for h in ours},
        "eval_vs_hf": {h: ours[h]["eval"]["examples_per_s"] / best_eval for h in ours},
        "eval_vs_forward": {h: ours[h]["eval"]["seconds"] / result["forward"]["seconds"] for h in ours},
        "decode_share": {h: ours[h]["decode"]["decode_share"] for h in ours},
    }
    main = "softmax" if "softmax" in ours else next(iter(ours))
    out = {k: v[main] for k, v in by_head.items()}
    if "ours_null_window_keep" in result:
        out["train_vs_hf_null_window_keep"] = result["ours_null_window_keep"]["train"]["examples_per_s"] / best_train
    out.update(head=main, decode_share_max=max(by_head["decode_share"].values()), by_head=by_head)
    return out


def table(result: dict) -> str:
    r, ours, peer = result["ratios"], result["ours"], result["peer"]
    lines = ["| side | train ex/s | eval ex/s | eval F1 | decode/forward | peak RSS MiB |", "|---|---|---|---|---|---|"]
    for h, o in ours.items():
        lines.append(f"| ours {h} | {o['train']['examples_per_s']:.1f} | {o['eval']['examples_per_s']:.1f} | "
                     f"{o['eval']['F1']:.2f} | {100 * o['decode']['decode_share']:.1f} % | "
                     f"{max(o['train']['peak_rss_mb'], o['eval']['peak_rss_mb']):.0f} |")
    for k in ("default", "tuned"):
        t, e = peer["train"][k], peer["eval"][k]
        lines.append(f"| HF {k} | {t['examples_per_s']:.1f} | {e['examples_per_s']:.1f} | {e['F1']:.2f} | – | "
                     f"{max(t['peak_rss_mb'], e['peak_rss_mb']):.0f} |")
    extra = result.get("ours_null_window_keep")
    if extra:
        lines.append(f"| ours softmax, null_window_keep={extra['null_window_keep']} | "
                     f"{extra['train']['examples_per_s']:.1f} | – | {extra['F1']:.2f} | – | "
                     f"{extra['train']['peak_rss_mb']:.0f} |")
    fw = result["forward"]
    lines.append(f"| bare encoder forward | – | {fw['examples_per_s']:.1f} | – | – | – |")
    lines += ["", "| ratio | " + " | ".join(ours) + " | target |", "|---|" + "---|" * (len(ours) + 1)]
    targets = {"train_vs_hf": "≥ 1.3", "eval_vs_hf": "≥ 1.5", "eval_vs_forward": "≤ 1.15", "decode_share": "≤ 0.05"}
    for k, target in targets.items():
        lines.append(f"| {k} | " + " | ".join(f"{r['by_head'][k][h]:.3f}" for h in ours) + f" | {target} |")
    if "train_vs_hf_null_window_keep" in r:
        lines.append(f"\ntrain_vs_hf of softmax with null_window_keep={extra['null_window_keep']}: "
                     f"{r['train_vs_hf_null_window_keep']:.3f}")
    return "\n".join(lines)


def parse_args(argv=None):
    root = Path(__file__).resolve().parents[3] / "shared"
    ap = argparse.ArgumentParser(description="Benchmark our training/evaluation against the HuggingFace peer.")
    ap.add_argument("--data", default=str(root / "data" / "dureader_robust" / "dev.json"))
    ap.add_argument("--vocab", default=str(root / "vocab" / "bert-base-chinese" / "vocab.txt"))
    ap.add_argument("--out", default="bench.json")
    ap.add_argument("--heads", default=",".join(HEADS))
    ap.add_argument("--n-eval", type=int, default=700, help="first N questions are evaluated, the rest trained on")
    ap.add_argument("--n-train", type=int, default=None, help="cap on training questions")
    ap.add_argument("--max-len", type=int, default=384)
    ap.add_argument("--max-query-len", type=int, default=64)
    ap.add_argument("--doc-stride", type=int, default=128)
    ap.add_argument("--max-answer-len", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--eval-batch-size", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3, help="timed repeats of each evaluation; the fastest is kept")
    ap.add_argument("--train-repeat", type=int, default=2, help="timed repeats of each training run")
    ap.add_argument("--null-window-keep", type=float, default=0.2,
                    help="extra softmax row trained with this share of no-answer windows (trainer.null_window_keep)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    data = Path(args.data)
    if not data.is_file():
        raise SystemExit(f"mrc.bench: --data {data} not found")
    enc = tiny_bert(vocab_file=args.vocab if Path(args.vocab).is_file() else None, layers=args.layers,
                    hidden_size=args.hidden, heads=max(args.hidden // 64, 1), intermediate_size=4 * args.hidden,
                    dropout=0.1, seed=args.seed,
                    texts=None if Path(args.vocab).is_file() else [e.context for e in load_squad(data, training=False)[0]])
    all_eval, _ = load_squad(data, training=False)
    train_all, _ = load_squad(data, training=True)
    eval_ids = {e.id for e in all_eval[:args.n_eval]}
    examples = all_eval[:args.n_eval]
    train = [e for e in train_all if e.id not in eval_ids][:args.n_train]
    gold = [g for g in load_references(data) if g.id in eval_ids]
    result = {"config": {**vars(args), "torch": torch.__version__, "threads": torch.get_num_threads(),
                         "cpu": platform.processor() or platform.machine(), "n_train": len(train),
                         "n_eval": len(examples)}, "ours": {}}
    windows, _ = build_windows(examples, enc.tokenizer, training=False, **geometry(args))
    batches_ = collated(windows, enc.tokenizer, args)
    bare_forward(enc.model, batches_)  # warm-up: first passes pay for allocator and thread-pool start-up
    fwd = min(bare_forward(enc.model, batches_) for _ in range(args.repeat))
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
    Path(args.out).write_text(json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8")
    print(table(result))
    print(f"wrote {args.out}")
    return 0
