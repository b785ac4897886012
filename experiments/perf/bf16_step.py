"""One e5_small training step (4 windows x 256 tokens, forward + backward) per CPU precision, interleaved.

    ENCODER_DIR=outputs/e5_small python experiments/perf/bf16_step.py fp32,fpmath,autocast REPEATS

fpmath = oneDNN's bf16 math mode (trainer.cpu_bf16_via=matmul), autocast = torch.autocast bf16
(trainer.cpu_bf16_via=autocast). Prints the best step seconds per precision and each one's speed-up over the first.
"""
import os
import sys
import time

import torch
from transformers import AutoModel
from transformers import logging as hf_logging


def main(modes: list[str], repeats: int) -> None:
    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    model = AutoModel.from_pretrained(os.environ.get("ENCODER_DIR", "outputs/e5_small"))
    model.get_input_embeddings().weight.requires_grad_(False)  # frozen, as cpu_small freezes it for e5_small
    model.train()
    ids = torch.randint(5, 250000, (4, 256))  # (B, L)
    att = torch.ones_like(ids)
    head = torch.nn.Linear(384, 2 * 64 * 12)  # a GlobalPointer-sized projection, kept in fp32

    def step(mode: str) -> None:
        torch.backends.mkldnn.matmul.fp32_precision = "bf16" if mode == "fpmath" else "ieee"
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "autocast"):
            hidden = model(input_ids=ids, attention_mask=att).last_hidden_state  # (B, L, H)
        head(hidden.float()).pow(2).mean().backward()
        torch.backends.mkldnn.matmul.fp32_precision = "ieee"

    best = {m: float("inf") for m in modes}
    for m in modes:  # warm-up
        step(m)
    for _ in range(repeats):
        for m in modes:
            t0 = time.perf_counter()
            step(m)
            best[m] = min(best[m], time.perf_counter() - t0)
    print({m: round(s, 3) for m, s in best.items()}, {m: round(best[modes[0]] / s, 2) for m, s in best.items()})


if __name__ == "__main__":
    main(sys.argv[1].split(","), int(sys.argv[2]))
