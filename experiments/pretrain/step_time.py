"""Step time of CPU training under the allocator and attention-dropout settings (the figures in
experiments/pretrain/README.md, "Speed on 2 CPU cores", and the cpu_small budget of encoder=minilm_zh).

    python experiments/pretrain/step_time.py mlm --init-from outputs/minilm_zh_transplant --freeze-body \
        [--attention-dropout 0.0] [--retain-memory] [--batch 64 --length 256] [--threads 2]
    python experiments/pretrain/step_time.py mlm --size tiny [--attention-dropout 0.0] [--retain-memory]
    python experiments/pretrain/step_time.py finetune --size tiny|minilm [--retain-memory] [--threads 1]

``mlm``: one masked-LM optimizer step of ``mrc.pretrain`` (logits at the masked positions only, AdamW) on
random token ids with 15 % of the positions as targets. ``finetune``: forward + backward + AdamW of a
randomly initialised BERT encoder of the cpu_small sizes on a batch of 32 x 222 tokens (the mean cpu_small
training window), the cost that dominates a fine-tuning step. Prints one JSON line: seconds per step
(the mean of the steps after ``--warmup``), tokens/s, peak RSS, user and system CPU seconds.
"""
from __future__ import annotations

import argparse
import json
import resource
import time

import torch

SIZES = {"tiny": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
         "minilm": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)}


def mlm_step(args):
    from omegaconf import OmegaConf
    from transformers import AutoModelForMaskedLM, BertConfig, BertForMaskedLM

    from mrc.pretrain.model import build_optimizer, freeze_body, mlm_forward, set_attention_dropout

    if args.init_from:
        model = AutoModelForMaskedLM.from_pretrained(args.init_from, local_files_only=True)
    else:  # from scratch, as the tiny_zh recipe
        model = BertForMaskedLM(BertConfig(vocab_size=21128, **SIZES[args.size]))
    if args.freeze_body:
        freeze_body(model)
    if args.attention_dropout is not None:
        set_attention_dropout(model, args.attention_dropout)
    model.train()
    opt = build_optimizer(model, OmegaConf.create({"lr": 1e-3, "weight_decay": 0.01, "betas": [0.9, 0.98],
                                                   "eps": 1e-6}))
    ids = torch.randint(1000, model.config.vocab_size - 1000, (args.batch, args.length))
    attention = torch.ones_like(ids)
    labels = torch.where(torch.rand(args.batch, args.length) < 0.15, ids, torch.full_like(ids, -100))

    def step():
        loss, _, _ = mlm_forward(model, ids, attention, labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def finetune_step(args):
    from transformers import BertConfig, BertModel

    model = BertModel(BertConfig(vocab_size=21128, **SIZES[args.size]), add_pooling_layer=False).train()
    opt = torch.optim.AdamW(model.parameters(), foreach=True)
    ids = torch.randint(0, 21128, (args.batch, args.length))

    def step():
        model(input_ids=ids).last_hidden_state.sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["mlm", "finetune"])
    parser.add_argument("--init-from", help="mlm: a local HF checkpoint dir (e.g. outputs/minilm_zh_transplant); "
                                            "without it a new BERT of --size")
    parser.add_argument("--freeze-body", action="store_true", help="mlm: train word embeddings + MLM head only")
    parser.add_argument("--attention-dropout", type=float, default=None, help="mlm: run-only attention dropout")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny", help="the BERT's size (mlm: from scratch)")
    parser.add_argument("--retain-memory", action="store_true", help="mrc.train.cpu_memory.retain_freed_memory()")
    parser.add_argument("--batch", type=int, default=None, help="default: 64 (mlm), 32 (finetune)")
    parser.add_argument("--length", type=int, default=None, help="default: 256 (mlm), 222 (finetune)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    args.batch = args.batch or (64 if args.mode == "mlm" else 32)
    args.length = args.length or (256 if args.mode == "mlm" else 222)
    if args.threads:
        torch.set_num_threads(args.threads)
    retained = False
    if args.retain_memory:
        from mrc.train.cpu_memory import retain_freed_memory
        retained = retain_freed_memory()
    torch.manual_seed(0)
    step = (mlm_step if args.mode == "mlm" else finetune_step)(args)
    times = []
    for _ in range(args.warmup + args.steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    mean = sum(times[args.warmup:]) / args.steps
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"mode": args.mode, "model": args.init_from or args.size,
                      "freeze_body": args.freeze_body, "attention_dropout": args.attention_dropout,
                      "retain_memory": retained, "threads": torch.get_num_threads(), "batch": args.batch,
                      "length": args.length, "s_per_step": round(mean, 3),
                      "steps_s": [round(t, 2) for t in times[args.warmup:]],
                      "tokens_per_s": round(args.batch * args.length / mean), "peak_rss_gb": round(usage.ru_maxrss / 1e6, 2),
                      "user_s": round(usage.ru_utime, 1), "sys_s": round(usage.ru_stime, 1)}))


if __name__ == "__main__":
    main()
