"""fp32 vs int8 / bf16 (vs ONNX Runtime) inference of one checkpoint on one SQuAD-format file.

    python experiments/inference/measure.py CHECKPOINT_DIR --input DEV.json [--limit N] [--threads T] \
        [--variants fp32,int8,bf16,onnx,onnx_int8] [--onnx FILE] [--onnx-int8 FILE] [--runs 3] [--repeats 30] \
        [--out DIR]

Per variant (each in its own process, so peak RSS is its own): F1 / EM on the file (official metric,
mrc/eval/metric.py; with --limit, over the first N usable questions), agreement of its answers with fp32 (%),
batch throughput (questions/s over the file, best of --runs; windows built once beforehand, so tokenization
is excluded as in metrics.json; scoring + decoding included) and its ratio to fp32, single-question latency
p50 / p95 (ms) for one ~500-character context (--repeats calls of mrc.eval.predict.predict, tokenization
included), and peak RSS (MB). Writes DIR/results.json, DIR/results.md and DIR/<variant>.predictions.json.
With onnx in --variants and no --onnx file, the checkpoint is exported first (python -m mrc export; onnx_int8
without --onnx-int8: python -m mrc export --quantize int8); an export that fails is reported in the table and
the other variants still run.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

LATENCY_CHARS = 500
VARIANTS = ("fp32", "int8", "bf16", "onnx", "onnx_int8")


def latency_example(examples):
    """One question over a context of 500 characters (the first long-enough context, cut; else the contexts
    joined)."""
    from mrc.data.squad import Example

    long = next((e for e in examples if len(e.context) >= LATENCY_CHARS), None)
    if long is not None:
        return Example("latency", long.question, long.context[:LATENCY_CHARS], [], [])
    text = ""
    while len(text) < LATENCY_CHARS:  # short contexts: joined (and repeated) up to the length
        text += "".join(dict.fromkeys(e.context for e in examples))
    return Example("latency", examples[0].question, text[:LATENCY_CHARS], [], [])


def worker(args) -> dict:
    """Measure one variant in this process; returns its record."""
    import numpy as np
    import torch

    from mrc.data.squad import load_squad
    from mrc.eval.metric import evaluate, load_references
    from mrc.eval.predict import load_for_inference, make_windows, predict

    torch.set_num_threads(args.threads)
    quantize = args.worker if args.worker in ("int8", "bf16") else None
    onnx = {"onnx": args.onnx, "onnx_int8": args.onnx_int8}.get(args.worker)
    model, tokenizer, cfg = load_for_inference(args.checkpoint, "cpu", quantize=quantize, onnx=onnx)
    examples, _ = load_squad(args.input, training=False)
    if args.limit:
        examples = examples[:args.limit]
    ids = {e.id for e in examples}
    gold = [g for g in load_references(args.input) if g.id in ids]
    windows = make_windows(examples, tokenizer, cfg)
    predict(model, tokenizer, cfg, examples[:8], batch_size=args.batch_size)  # warm-up
    times, preds = [], None
    for _ in range(args.runs):
        t = time.perf_counter()
        preds, _ = predict(model, tokenizer, cfg, examples, batch_size=args.batch_size, windows=windows)
        times.append(time.perf_counter() - t)
    summary, _ = evaluate(gold, preds)
    one = [latency_example(examples)]
    for _ in range(3):
        predict(model, tokenizer, cfg, one, batch_size=args.batch_size)
    lat = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        predict(model, tokenizer, cfg, one, batch_size=args.batch_size)
        lat.append((time.perf_counter() - t) * 1000)
    (args.out / f"{args.worker}.predictions.json").write_text(json.dumps(preds, ensure_ascii=False, indent=1),
                                                              encoding="utf-8")
    return {"variant": args.worker, "F1": summary["F1"], "EM": summary["EM"], "questions": len(examples),
            "windows": len(windows), "seconds_best": round(min(times), 3), "seconds_all": [round(t, 3) for t in times],
            "examples_per_s": round(len(examples) / min(times), 3),
            "latency_ms_p50": round(float(np.percentile(lat, 50)), 2),
            "latency_ms_p95": round(float(np.percentile(lat, 95)), 2), "latency_repeats": len(lat),
            "latency_context_chars": len(one[0].context),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "threads": torch.get_num_threads()}


def table(records: list[dict]) -> str:
    head = ("| variant | F1 | EM | ΔF1 vs fp32 | agreement with fp32 (%) | examples/s (best of runs) | × fp32 | "
            "latency p50 (ms) | p95 (ms) | peak RSS (MB) |")
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for r in records:
        if "error" in r:
            lines.append(f"| {r['variant']} | failed: {r['error']} |" + " |" * 8)
            continue
        lines.append(f"| {r['variant']} | {r['F1']:.3f} | {r['EM']:.3f} | {r['delta_F1']:+.3f} | {r['agreement']:.2f} | "
                     f"{r['examples_per_s']:.2f} | {r['speedup']:.2f} | {r['latency_ms_p50']:.1f} | "
                     f"{r['latency_ms_p95']:.1f} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--input", type=Path, required=True, help="SQuAD-format file with answers (e.g. in-domain dev)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N usable questions")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch / ONNX Runtime threads "
                    "(default: os.cpu_count())")
    ap.add_argument("--variants", default="fp32,int8,bf16,onnx,onnx_int8",
                    help="comma-separated, from fp32, int8, bf16, onnx, onnx_int8")
    ap.add_argument("--onnx", type=Path, default=None, help="an exported file (default: export into --out)")
    ap.add_argument("--onnx-int8", type=Path, default=None,
                    help="an exported int8 file (default: export --quantize int8 into --out)")
    ap.add_argument("--export-args", default="", help="extra options of python -m mrc export, e.g. --no-optimize")
    ap.add_argument("--runs", type=int, default=3, help="throughput passes over the file; the best counts")
    ap.add_argument("--repeats", type=int, default=30, help="single-question latency calls (20+)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--out", type=Path, default=ROOT / "experiments" / "inference" / "results")
    ap.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.worker:
        record = worker(args)
        (args.out / f"{args.worker}.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
        return 0
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = set(variants) - set(VARIANTS)
    if bad or "fp32" not in variants:
        ap.error(f"--variants: give fp32 and any of int8, bf16, onnx, onnx_int8 (got {args.variants})")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="false")
    records, errors = [], {}
    for variant, attr, name, extra in (("onnx", "onnx", "model.onnx", []),
                                       ("onnx_int8", "onnx_int8", "model_int8.onnx", ["--quantize", "int8"])):
        if variant not in variants or getattr(args, attr) is not None:
            continue
        setattr(args, attr, args.out / name)
        proc = subprocess.run([sys.executable, "-m", "mrc", "export", str(args.checkpoint), "--onnx",
                               str(args.out / name), *extra, *args.export_args.split()],
                              cwd=ROOT, env=env, capture_output=True, text=True)
        print(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "", file=sys.stderr)
        if proc.returncode != 0:
            errors[variant] = (proc.stderr.strip().splitlines() or ["export failed"])[-1][:300]
    for variant in variants:
        if variant in errors:
            records.append({"variant": variant, "error": errors[variant]})
            continue
        cmd = [sys.executable, __file__, str(args.checkpoint), "--input", str(args.input), "--threads",
               str(args.threads), "--runs", str(args.runs), "--repeats", str(args.repeats), "--batch-size",
               str(args.batch_size), "--out", str(args.out), "--worker", variant]
        if args.limit:
            cmd += ["--limit", str(args.limit)]
        if variant == "onnx":
            cmd += ["--onnx", str(args.onnx)]
        if variant == "onnx_int8":
            cmd += ["--onnx-int8", str(args.onnx_int8)]
        print(f"measuring {variant} ...", file=sys.stderr)
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["failed"])[-1][:300]
            print(proc.stderr[-3000:], file=sys.stderr)
            records.append({"variant": variant, "error": tail})
            continue
        records.append(json.loads((args.out / f"{variant}.json").read_text(encoding="utf-8")))
    base = next((r for r in records if r["variant"] == "fp32" and "error" not in r), None)
    if base is None:
        print("error: the fp32 run failed; nothing to compare", file=sys.stderr)
        return 1
    ref = json.loads((args.out / "fp32.predictions.json").read_text(encoding="utf-8"))
    for r in records:
        if "error" in r:
            continue
        got = json.loads((args.out / f"{r['variant']}.predictions.json").read_text(encoding="utf-8"))
        r["agreement"] = round(100 * sum(got.get(k) == v for k, v in ref.items()) / max(1, len(ref)), 2)
        r["delta_F1"] = round(r["F1"] - base["F1"], 3)
        r["delta_EM"] = round(r["EM"] - base["EM"], 3)
        r["speedup"] = round(r["examples_per_s"] / base["examples_per_s"], 3)
    meta = {"checkpoint": str(args.checkpoint), "input": str(args.input), "limit": args.limit,
            "onnx": str(args.onnx) if args.onnx else None, "onnx_int8": str(args.onnx_int8) if args.onnx_int8 else None,
            "export_args": args.export_args,
            "threads": args.threads, "runs": args.runs, "repeats": args.repeats, "batch_size": args.batch_size,
            "cpu_count": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "variants": records}, indent=1), encoding="utf-8")
    md = (f"{args.checkpoint} on {args.input} ({base['questions']} questions, {base['windows']} windows), "
          f"{args.threads} threads, throughput best of {args.runs}, latency over {args.repeats} calls on a "
          f"{base['latency_context_chars']}-character context\n\n" + table(records) + "\n")
    (args.out / "results.md").write_text(md, encoding="utf-8")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
