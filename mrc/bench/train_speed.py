"""Training speed on one device (``python -m mrc.bench --device cuda|cpu|auto``): our training loop against the
HuggingFace ``Trainer`` peer, per precision and with / without ``torch.compile``.

    python -m mrc.bench --device cuda                         # roberta_wwm-shaped random BERT, 384-token windows
    python -m mrc.bench --device cuda --encoder outputs/e5_small
    python -m mrc.bench --device cpu --shape tiny --windows 32 --batch-size 8 --variants fp32

Both sides train the same windows from the same randomly initialised encoder (``--shape base``: BERT 12 x 768,
12 heads, vocabulary 21128, roberta_wwm's shape, built from a ``BertConfig``: no download; ``--encoder DIR``: a
saved local encoder) with a start / end softmax head, ``--batch-size`` windows per step, length-grouped batches and
dynamic padding on both sides. Inputs: ``--windows`` synthetic windows (``--inputs synthetic``: 3/4 of them the full
``--length``, as long contexts fill their windows, the rest uniform in [length/4, length)) or the first training
windows of ``--data`` (``--inputs data``). Ours: a warm-up pass of ``--warmup-batches`` batches (compiles), then one
timed epoch of every window. The peer: one ``Trainer.train()`` epoch, timed from the end of its first
``--warmup-batches`` steps.

Per run: windows/s; tokens/s (real tokens, padding excluded; the peer's from its windows/s times the mean window
length); model FLOP/s = 6 x (non-embedding parameters) x tokens/s, and attention FLOP/s = 12 x layers x hidden x
sum(length^2) / s apart (both forward + backward, per window's real length); MFU = model FLOP/s over the device's
dense peak in that precision (:mod:`mrc.bench.peaks`; null with a reason for a GPU not in the table or on the CPU,
unless ``--peak-tflops``), and with attention added; peak memory (CUDA: ``torch.cuda.max_memory_allocated`` over the
timed part; CPU: the process's peak RSS over the run). A run that fails is kept as a row with its error and the
exit status is 1.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn

from heads.softmax import SoftmaxHead
from mrc.bench import peer as bench_peer
from mrc.bench.measure import memory_probe, peak_memory, release, reset_peak, sync
from mrc.bench.peaks import peak_flops
from mrc.data.features import Window
from mrc.model.encoder import attention_implementation
from mrc.model.span_model import SpanModel
from mrc.train.distributed import LossForward
from mrc.train.loop import TrainLoop, build_optimizer, steps_per_epoch
from mrc.train.precision import BY_NAME, cuda_precision, grad_scaler, maybe_compile, tf32_scope

CONF = Path(__file__).resolve().parents[2] / "conf"
SHAPES = {"base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                       vocab_size=21128, max_position_embeddings=512, type_vocab_size=2),
          "tiny": dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                       vocab_size=500, max_position_embeddings=128, type_vocab_size=2)}
LENGTH = {"base": 384, "tiny": 64}
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")


@dataclass(frozen=True)
class Variant:
    """One measured setting: ``precision`` (fp32, tf32 = fp32 with TF32 products, bf16, fp16) and ``compile``."""

    precision: str
    compile: bool = False

    @property
    def name(self) -> str:
        return self.precision + ("+compile" if self.compile else "")

    @property
    def autocast(self) -> str:
        """The autocast precision: fp32 (none), bf16 or fp16."""
        return "fp32" if self.precision == "tf32" else self.precision


def default_variants(device: str) -> str:
    """CUDA: fp32 and the half precisions with tensor cores there (bf16 and fp16 from compute capability 8.0, fp16 on
    7.x), each of those also compiled (fp32 compiled where there is none); the CPU: fp32 alone."""
    if device == "cpu":
        return "fp32"
    fast = {"bf16": ["bf16", "fp16"], "fp16": ["fp16"]}.get(cuda_precision(OmegaConf.create({}), device).name, [])
    return ",".join(["fp32"] + fast + [f"{p}+compile" for p in fast or ["fp32"]])


def parse_variants(text: str, device: str) -> list[Variant]:
    """``fp32,bf16,bf16+compile,...``; ``auto`` is what ``trainer.precision=auto`` picks on ``device``."""
    out = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        name, _, extra = item.partition("+")
        if name == "auto":
            name = "fp32" if device == "cpu" else cuda_precision(OmegaConf.create({}), device).name
        if name not in PRECISIONS or extra not in ("", "compile"):
            raise SystemExit(f"mrc.bench: --variants item {item!r}: must be one of {', '.join(PRECISIONS)} or auto, "
                             "optionally with +compile")
        if name == "tf32" and device == "cpu":
            raise SystemExit("mrc.bench: tf32 is a CUDA mode; on the CPU use fp32")
        out.append(Variant(name, extra == "compile"))
    return out


def synthetic_windows(n: int, length: int, vocab: int, seed: int = 0) -> list[Window]:
    """``n`` windows of random token ids: 3/4 of them ``length`` long, the rest uniform in [length/4, length); each
    with a question quarter (type 0), a context (type 1, in the span mask) and one gold span in the context."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        L = length if rng.random() < 0.75 else int(rng.integers(length // 4, length))
        q = max(L // 4, 2)
        types = (np.arange(L) >= q).astype(np.int64)
        span = types.astype(bool)
        span[0] = True  # [CLS]: the null answer
        s = int(rng.integers(q, L - 1))
        e = min(L - 1, s + int(rng.integers(0, 8)))
        out.append(Window(0, rng.integers(5, vocab, L), types, span, np.zeros((L, 2), np.int64), [(s, e)]))
    return out


def data_windows(args, tokenizer, n: int) -> list[Window]:
    """The first ``n`` training windows of ``--data``, cut as the run cuts them (``--length``, query, stride)."""
    from mrc.data.features import Geometry, build_windows
    from mrc.data.squad import load_squad

    examples, _ = load_squad(Path(args.data), training=True)
    try:  # every question gives at least one window: its first n are enough
        windows, _ = build_windows(examples[:n], tokenizer, Geometry(args.length, args.max_query_len, args.doc_stride),
                                   training=True)
    except ValueError as e:
        raise SystemExit(f"mrc.bench: --length / --max-query-len / --doc-stride: {e}") from None
    return windows[:n]


def build_encoder(args):
    """(encoder without pooler, tokenizer or None, a description): ``--encoder DIR`` or the ``--shape`` random BERT."""
    if args.encoder:
        from mrc.model.encoder import pretrained
        enc = pretrained(args.encoder, local_files_only=True)
        return enc.model, enc.tokenizer, f"{args.encoder} ({enc.model.config.model_type})"
    from transformers import BertConfig, BertModel, BertTokenizerFast
    torch.manual_seed(args.seed)
    model = BertModel(BertConfig(**SHAPES[args.shape], attn_implementation="sdpa"), add_pooling_layer=False)
    vocab = Path(args.vocab)
    tokenizer = BertTokenizerFast(str(vocab)) if args.shape == "base" and vocab.is_file() else None
    return model, tokenizer, f"random-init BERT, shape {args.shape}"


def matmul_params(model: nn.Module) -> int:
    """Trainable parameters outside embedding tables (lookups do no matrix products): the N of 6 N FLOPs per token."""
    tables = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    return sum(p.numel() for p in model.parameters() if p.requires_grad and id(p) not in tables)


def run_ours(encoder, windows: list[Window], v: Variant, args, device: str) -> dict:
    """Our loop: a warm-up pass, then one timed epoch over every window."""
    torch.manual_seed(args.seed)
    model = SpanModel(copy.deepcopy(encoder), SoftmaxHead(encoder.config.hidden_size)).to(device)
    tr = OmegaConf.merge(OmegaConf.load(CONF / "trainer" / "default.yaml"), {
        "epochs": 2, "batch_size": args.batch_size, "null_window_keep": 1.0, "seed": args.seed, "progress": False,
        "log_every": 10**9, "device": device, "compile": v.compile, "num_workers": args.num_workers})
    warm = windows[:args.batch_size * args.warmup_batches]
    opt, sched = build_optimizer(model, OmegaConf.load(CONF / "optim" / "adamw.yaml"),
                                 steps_per_epoch(warm, tr) + steps_per_epoch(windows, tr))
    prec = BY_NAME[v.autocast]
    net = LossForward(model)
    maybe_compile(net, tr)
    loop = TrainLoop(model, opt, sched, tr, 0, device, amp_dtype=prec.autocast_dtype, net=net,
                     scaler=grad_scaler(prec, device))
    with tf32_scope(v.precision == "tf32", device), memory_probe(device) as rss:
        t0 = time.perf_counter()
        _, step = loop.run_epoch(warm, epoch=1, step=0)
        sync(device)
        warm_s = time.perf_counter() - t0
        reset_peak(device)
        t0 = time.perf_counter()
        stats, _ = loop.run_epoch(windows, epoch=2, step=step)
        sync(device)
        seconds = time.perf_counter() - t0
    return {"windows": stats["windows"], "seconds": seconds, "warmup_s": round(warm_s, 2),
            "loss": round(stats["loss"], 4), "padded_share": round(stats["padded_share"], 4),
            "attention": attention_implementation(model.encoder), **dict(zip(("peak_mb", "peak_kind"),
                                                                             peak_memory(device, rss)))}


def run_peer(encoder, windows: list[Window], v: Variant, args, device: str) -> dict:
    """The peer: Trainer + BertForQuestionAnswering for one epoch, timed after its first warm-up steps."""
    return bench_peer.train_timed(encoder, windows, device=device, precision=v.autocast, tf32=v.precision == "tf32",
                                  compile=v.compile, batch_size=args.batch_size, seed=args.seed,
                                  warmup_steps=args.warmup_batches, workers=args.num_workers)


def rates(row: dict, lengths: np.ndarray, n_params: int, layers: int, hidden: int, peak: float | None) -> dict:
    """windows/s, tokens/s, model / attention TFLOP/s and MFU of a timed run (its windows at the set's mean length
    and mean squared length: exact for ours, which times every window)."""
    w_s = row["windows"] / row["seconds"]
    tokens_s = w_s * lengths.mean()
    model_f = 6 * n_params * tokens_s
    attn_f = 12 * layers * hidden * w_s * (lengths.astype(np.float64) ** 2).mean()
    out = {"windows_per_s": round(w_s, 2), "tokens_per_s": round(tokens_s, 1),
           "model_tflops_per_s": round(model_f / 1e12, 4), "attention_tflops_per_s": round(attn_f / 1e12, 4),
           "mfu": None, "mfu_with_attention": None}
    if peak:
        out.update(mfu=round(model_f / peak, 4), mfu_with_attention=round((model_f + attn_f) / peak, 4))
    return out


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    from mrc.model.cpu import cpu_name
    return cpu_name()


def peak_for(name: str, v: Variant, args, device: str) -> tuple[float | None, str]:
    """The peak FLOP/s MFU divides by, and where it comes from (or why there is none)."""
    if args.peak_tflops:
        return args.peak_tflops * 1e12, f"--peak-tflops {args.peak_tflops:g}"
    if not device.startswith("cuda"):
        return None, "no peak FLOP rate for a CPU: give one with --peak-tflops"
    return peak_flops(name, v.precision)


def table(result: dict) -> str:
    """The runs as a markdown table, then ours / HF per variant."""
    m, i = result["model"], result["inputs"]
    lines = [f"Training speed on {result['device_name']} ({result['device']}; torch {result['torch']}): "
             f"{m['described']}, {m['matmul_params'] / 1e6:.2f}M non-embedding parameters; {i['windows']} "
             f"{i['kind']} windows, mean {i['mean_length']:.0f} of {i['length']} tokens, batch {result['batch_size']}",
             "", "| side | variant | windows/s | tokens/s | model TFLOP/s | attention TFLOP/s | MFU | MFU with attention "
             "| peak MiB | warm-up s |", "|---|---|---|---|---|---|---|---|---|---|"]
    pct = lambda x: "–" if x is None else f"{100 * x:.1f} %"  # noqa: E731
    for r in result["runs"]:
        if "error" in r:
            lines.append(f"| {r['side']} | {r['variant']} | failed: {r['error']} | | | | | | | |")
            continue
        lines.append(f"| {r['side']} | {r['variant']} | {r['windows_per_s']:.1f} | {r['tokens_per_s']:.0f} | "
                     f"{r['model_tflops_per_s']:.3f} | {r['attention_tflops_per_s']:.3f} | {pct(r['mfu'])} | "
                     f"{pct(r['mfu_with_attention'])} | {r['peak_mb']:.0f} ({r['peak_kind']}) | {r['warmup_s']} |")
    if result["ours_vs_hf"]:
        lines += ["", "| variant | ours / HF windows/s |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in result["ours_vs_hf"].items()]
    reasons = sorted({r["peak_source"] for r in result["runs"]})
    return "\n".join(lines + ["", "Peak FLOP rates: " + "; ".join(reasons)]) + "\n"


def main(args) -> int:
    """Measure every variant on every side; write ``--out`` (JSON) and the same name with ``.md``."""
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("mrc.bench: --device cuda but torch sees no CUDA device")
    encoder, tokenizer, described = build_encoder(args)
    args.length = args.length or (384 if args.encoder else LENGTH[args.shape])
    batch, warm = args.batch_size, args.warmup_batches
    n = (args.windows or (64 * batch if device.startswith("cuda") else 8 * batch)) // batch * batch
    if n < (warm + 1) * batch:
        raise SystemExit(f"mrc.bench: --windows must hold at least --warmup-batches + 1 = {warm + 1} batches of "
                         f"{batch}")
    if args.inputs == "data":
        if tokenizer is None:
            raise SystemExit("mrc.bench: --inputs data needs a tokenizer: --encoder DIR, or --shape base with --vocab")
        windows = data_windows(args, tokenizer, n)
        if len(windows) < n:
            raise SystemExit(f"mrc.bench: --data {args.data} gives {len(windows)} training windows, fewer than {n}")
    else:
        windows = synthetic_windows(n, args.length, encoder.config.vocab_size, args.seed)
    lengths = np.array([len(w.input_ids) for w in windows])
    variants = parse_variants(args.variants or default_variants(device), device)
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    if not sides or set(sides) - {"ours", "hf"}:
        raise SystemExit(f"mrc.bench: --sides {args.sides!r}: ours, hf or both")
    name, cfg = device_name(device), encoder.config
    n_params = matmul_params(encoder) + matmul_params(SoftmaxHead(cfg.hidden_size))  # the QA layer: the same size
    runs, failed = [], False
    for v in variants:
        peak, source = peak_for(name, v, args, device)
        for side in sides:
            row = {"side": side, "variant": v.name, "precision": v.precision, "compile": v.compile}
            try:
                got = (run_ours if side == "ours" else run_peer)(encoder, windows, v, args, device)
                row.update(got, **rates(got, lengths, n_params, cfg.num_hidden_layers, cfg.hidden_size, peak))
                row["seconds"] = round(row["seconds"], 3)
            except Exception as e:  # one failing variant must not lose the others' figures
                failed = True
                row["error"] = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}"
            row.update(peak_tflops=None if peak is None else peak / 1e12, peak_source=source)
            runs.append(row)
            print(json.dumps(row), flush=True)
            release(device, v.compile)
    by = {(r["side"], r["variant"]): r for r in runs if "error" not in r}
    ratios = {v.name: round(by["ours", v.name]["windows_per_s"] / by["hf", v.name]["windows_per_s"], 3)
              for v in variants if ("ours", v.name) in by and ("hf", v.name) in by}
    import transformers
    result = {"device": device, "device_name": name, "torch": torch.__version__, "transformers": transformers.__version__,
              "batch_size": batch, "warmup_batches": warm, "num_workers": args.num_workers,
              "model": {"described": described, "layers": cfg.num_hidden_layers, "hidden": cfg.hidden_size,
                        "vocab": cfg.vocab_size, "matmul_params": n_params,
                        "params": sum(p.numel() for p in encoder.parameters())},
              "inputs": {"kind": args.inputs, "windows": len(windows), "length": args.length,
                         "mean_length": round(float(lengths.mean()), 2), "data": args.data if args.inputs == "data"
                         else None},
              "runs": runs, "ours_vs_hf": ratios}
    out = Path(args.out or "bench_train.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(table(result), encoding="utf-8")
    print(table(result))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 1 if failed else 0
