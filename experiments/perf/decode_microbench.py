"""Per-batch timings of the decode pieces on one eval-sized batch (64 windows x 384 tokens, A = 30).

    python experiments/perf/decode_microbench.py

Prints milliseconds per call (mean of 5 after one warm-up) for the figures in README.md.
"""
import time

import torch

import math

from heads.base import NEG, band_of, masked_pair_scores, span_band, top_spans, valid_spans
from heads.globalpointer import EfficientGlobalPointer, GlobalPointer, log_normaliser

B, L, A = 64, 384, 30


def mask_grid(grid, span_mask):
    """The previous grid mask (three broadcast in-place fills), kept here to time it against the folded one."""
    upper = torch.ones(L, L, dtype=torch.bool).triu_()
    upper[0, 1:] = False
    return grid.masked_fill_(~upper, NEG).masked_fill_(~span_mask[:, :, None], NEG).masked_fill_(
        ~span_mask[:, None, :], NEG)


def timed(name, fn, n=5):
    fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    print(f"{name:42s} {(time.perf_counter() - t0) / n * 1000:7.1f} ms")


def main():
    torch.manual_seed(0)
    grid = torch.randn(B, L, L)
    mask = torch.rand(B, L) > 0.2
    mask[:, 0] = True
    timed("copy of the grid (baseline for masks)", lambda: grid.clone())
    timed("old mask: masked_fill(~valid_spans)", lambda: grid.masked_fill(~valid_spans(mask), NEG))
    timed("mask_grid (3 broadcast in-place fills)", lambda: mask_grid(grid.clone(), mask))
    g = mask_grid(grid.clone(), mask)
    flat = g.reshape(B, L * L)
    timed("torch.logsumexp over the grid", lambda: flat.logsumexp(1))
    timed("log_softmax over the grid", lambda: flat.log_softmax(1))
    timed("log_normaliser", lambda: log_normaliser(flat))
    timed("old top-k over the full grid", lambda: flat.clone().topk(20, 1))
    timed("band_of + span_band + top_spans", lambda: top_spans(band_of(g, A).masked_fill_(~span_band(mask, A), NEG), 20))
    q, k, bias = torch.randn(B, L, 64), torch.randn(B, L, 64), torch.randn(B, L, 2)
    timed("GP grid before: q@k/sqrt(d) + mask_grid", lambda: mask_grid(q @ k.transpose(1, 2) / 8.0, mask))
    timed("EGP grid before: + start/end bias passes", lambda: mask_grid(
        q @ k.transpose(1, 2) / 8.0 + bias[:, :, None, 0] + bias[:, None, :, 1], mask))
    timed("GP grid after: masked_pair_scores", lambda: masked_pair_scores(q / 8.0, k, mask))
    timed("EGP grid after: masked_pair_scores + biases", lambda: masked_pair_scores(q / 8.0, k, mask, bias[..., 0], bias[..., 1]))
    for cls in (GlobalPointer, EfficientGlobalPointer):
        head = cls(256, head_size=64, rope=False).eval()
        hidden = torch.randn(B, L, 256)
        with torch.inference_mode():
            timed(f"{cls.__name__}: forward + span_scores (after)", lambda: head.span_scores(head(hidden, mask), mask, A))
    assert math.isfinite(float(log_normaliser(flat)[0]))


if __name__ == "__main__":
    main()
