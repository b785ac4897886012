"""How heavy the outliers are at each feed-forward down-projection's input, on training questions only.

    python experiments/inference/down_projection_outliers.py CHECKPOINT_DIR --train TRAIN.json [--questions 40]

Runs the fp32 checkpoint over the windows of the first ``--questions`` questions of a *training* file (no
evaluation data, no labels used) and prints, per encoder layer, the largest |input| of the down-projection
(the Linear after GELU), its 99.9th percentile and their ratio: a large ratio is a layer whose activations one
per-batch int8 scale cannot hold. ``experiments/inference/README.md`` uses it to pick the layers whose
down-projections are quantised as well.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SAMPLE = 200_000  # activations drawn per batch for the percentile (torch.quantile's input limit is 16 M)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--train", type=Path, required=True, help="a SQuAD-format training file")
    ap.add_argument("--questions", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args(argv)

    import torch

    from mrc.data.batching import collate
    from mrc.data.squad import load_squad
    from mrc.eval.predict import make_windows
    from mrc.model import checkpoint

    torch.manual_seed(0)
    model, tokenizer, cfg = checkpoint.load(args.checkpoint, "cpu")
    examples, _ = load_squad(args.train, training=False)
    windows = make_windows(examples[:args.questions], tokenizer, cfg)
    seen: dict[int, list[tuple[float, float]]] = {}

    def hook(i: int):
        def record(module, inputs, output):
            x = inputs[0].detach().abs().flatten().float()
            sample = x[torch.randperm(len(x))[:SAMPLE]]
            seen.setdefault(i, []).append((x.max().item(), torch.quantile(sample, 0.999).item()))
        return record

    for i, layer in enumerate(model.encoder.encoder.layer):
        layer.output.dense.register_forward_hook(hook(i))
    with torch.inference_mode():
        for k in range(0, len(windows), args.batch_size):
            model(**collate(windows[k:k + args.batch_size], tokenizer.pad_token_id))
    print(f"{len(windows)} windows of {min(args.questions, len(examples))} questions from {args.train}")
    print("layer | max |input| | p99.9 | max / p99.9")
    for i in sorted(seen):
        top = max(m for m, _ in seen[i])
        p999 = sum(q for _, q in seen[i]) / len(seen[i])
        print(f"{i} | {top:.2f} | {p999:.2f} | {top / p999:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
