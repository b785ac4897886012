"""Training speed per precision (windows/s, peak memory) through the project's own training loop.

    python experiments/gpu/speed.py --out DIR [--dry-run]

On CUDA: a randomly initialised BERT of roberta_wwm's shape (12 x 768, vocab 21128: no download), windows of
384 tokens, batch 12 (the dureader_robust_gpu settings), each precision the GPU has (fp32, fp32 + TF32, bf16,
fp16 + GradScaler) and bf16/fp16 + torch.compile. ``--dry-run``: a 1 x 32 BERT, 64-token windows, on the CPU,
every path (fp16 via GradScaler("cpu"), compile) for a few batches. Writes DIR/speed.json and DIR/speed.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from transformers import BertConfig, BertModel

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from anywhere: the repo's packages

from heads.softmax import SoftmaxHead  # noqa: E402
from mrc.data.features import Window  # noqa: E402
from mrc.model.span_model import SpanModel  # noqa: E402
from mrc.train.loop import TrainLoop, build_optimizer  # noqa: E402
from mrc.train.precision import BY_NAME, grad_scaler, maybe_compile, tf32_scope  # noqa: E402

BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, vocab_size=21128)
TINY = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=500)
OPTIM = OmegaConf.create({"encoder_lr": 3e-5, "head_lr": 3e-5, "weight_decay": 0.01, "warmup_ratio": 0.0,
                          "betas": [0.9, 0.999], "eps": 1e-8, "fused": False})


def synthetic_windows(n: int, length: int, vocab: int, seed: int = 0) -> list[Window]:
    """``n`` full-length windows of random token ids, each with one gold span in its second half."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        span = np.zeros(length, bool)
        span[0], span[length // 4:] = True, True  # [CLS] + a context of 3/4 of the window
        s = int(rng.integers(length // 4, length - 8))
        out.append(Window(0, rng.integers(5, vocab, length), (span & (np.arange(length) > 0)).astype(np.int64), span,
                          np.zeros((length, 2), np.int64), [(s, s + int(rng.integers(0, 8)))]))
    return out


def variants(device: str) -> list[tuple[str, bool, bool]]:
    """(precision, tf32, compile) to measure on ``device``."""
    if device == "cpu":
        return [("fp32", False, False), ("bf16", False, False), ("fp16", False, False), ("fp32", False, True)]
    fast = [p for p in ("bf16", "fp16") if p != "bf16" or torch.cuda.get_device_capability() >= (8, 0)]
    return [("fp32", False, False), ("fp32", True, False)] + [(p, False, False) for p in fast] + \
        [(p, False, True) for p in fast]


def measure(device: str, precision: str, tf32: bool, compiled: bool, shape: dict, length: int, batch: int,
            batches: int) -> dict:
    """Train ``batches`` batches after a warm-up epoch; windows/s of the timed epoch and peak memory."""
    torch.manual_seed(0)
    model = SpanModel(BertModel(BertConfig(**shape, attn_implementation="sdpa"), add_pooling_layer=False),
                      SoftmaxHead(shape["hidden_size"])).to(device)
    prec = BY_NAME[precision]
    trainer = OmegaConf.create({"seed": 1, "null_window_keep": 1.0, "batch_size": batch, "grad_accum": 1,
                                "max_grad_norm": 1.0, "log_every": 10_000, "progress": False,
                                "compile": compiled, "compile_mode": "default"})
    ws = synthetic_windows(batch * batches, length, shape["vocab_size"])
    opt, sched = build_optimizer(model, OPTIM, 4 * batches)
    scaler, net = grad_scaler(prec, device), None
    if compiled:
        from mrc.train.distributed import LossForward
        net = LossForward(model)
        maybe_compile(net, trainer)
    loop = TrainLoop(model, opt, sched, trainer, 0, device, amp_dtype=prec.autocast_dtype, net=net, scaler=scaler)
    with tf32_scope(tf32, device):
        t0 = time.perf_counter()
        loop.run_epoch(ws[: batch * max(2, batches // 4)], epoch=1, step=0)  # warm-up, compile
        warm = time.perf_counter() - t0
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        stats, _ = loop.run_epoch(ws, epoch=2, step=0)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() if device.startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**20
    return {"precision": precision, "tf32": tf32, "compile": compiled, "windows": stats["windows"],
            "windows_per_s": round(stats["windows"] / seconds, 2), "seconds": round(seconds, 3),
            "warmup_seconds": round(warm, 2), "loss": round(stats["loss"], 4),
            "peak_mb": round(peak, 1), "peak_kind": "cuda allocated" if device.startswith("cuda") else "process RSS"}


def table(result: dict) -> str:
    """The measurements as a markdown table."""
    lines = [f"Training speed on {result['device_name']} ({result['shape']}, {result['length']} tokens, batch "
             f"{result['batch']}, {result['batches']} timed batches; torch {result['torch']})", "",
             "| precision | tf32 | compile | windows/s | peak MiB | warm-up s | loss |", "|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        lines.append(f"| {r['precision']} | {r['tf32']} | {r['compile']} | {r['windows_per_s']} | {r['peak_mb']} "
                     f"({r['peak_kind']}) | {r['warmup_seconds']} | {r['loss']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    """Measure every variant and write speed.json + speed.md into ``--out``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny model, a few batches")
    ap.add_argument("--batches", type=int, default=None, help="timed batches per variant (default 60; dry run 4)")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.dry_run
    device = "cuda" if cuda else "cpu"
    if not cuda and not args.dry_run:
        ap.error("no CUDA device: use --dry-run")
    shape, length, batch = (BASE, 384, 12) if cuda else (TINY, 64, 4)
    batches = args.batches or (60 if cuda else 4)
    runs = []
    for precision, tf32, compiled in variants(device):
        runs.append(measure(device, precision, tf32, compiled, shape, length, batch, batches))
        print(json.dumps(runs[-1]), flush=True)
    result = {"device": device, "device_name": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
              "torch": torch.__version__, "shape": "12 x 768" if cuda else "1 x 32", "length": length, "batch": batch,
              "batches": batches, "runs": runs}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "speed.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "speed.md").write_text(table(result))


if __name__ == "__main__":
    main()
