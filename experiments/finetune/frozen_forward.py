"""Where does a frozen encoder's training forward lose time? Times the encoder alone on 64 windows of 256
tokens in train vs eval mode, with and without autograd, at micro-batches of 4, 32 and 64.

    OMP_NUM_THREADS=2 python experiments/finetune/frozen_forward.py /root/mrc_out/e5_small
"""
import sys
import time

import torch
from transformers import AutoModel
torch.manual_seed(0)
m = AutoModel.from_pretrained(sys.argv[1] if len(sys.argv) > 1 else "outputs/e5_small")
m.requires_grad_(False)
N, L = 64, 256
ids = torch.randint(1000, 200000, (N, L))
mask = torch.ones(N, L, dtype=torch.long)

def run(train, ctx, bs, label):
    m.train(train)
    m(input_ids=ids[:bs], attention_mask=mask[:bs])  # warm-up
    t = time.perf_counter()
    with ctx():
        for i in range(0, N, bs):
            m(input_ids=ids[i:i + bs], attention_mask=mask[i:i + bs])
    dt = time.perf_counter() - t
    print(f"{label:45s} {N / dt:6.2f} windows/s", flush=True)

run(True, torch.enable_grad, 4, "train mode, grad on, batch 4 (the run)")
run(True, torch.no_grad, 4, "train mode, no_grad, batch 4")
run(False, torch.no_grad, 4, "eval mode, no_grad, batch 4")
run(False, torch.inference_mode, 4, "eval mode, inference_mode, batch 4")
run(False, torch.inference_mode, 64, "eval mode, inference_mode, batch 64 (eval)")
run(True, torch.no_grad, 32, "train mode, no_grad, batch 32")
