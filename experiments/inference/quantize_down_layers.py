"""ONNX Runtime dynamic int8 of an exported fp32 graph, with the down-projections of chosen layers quantised too.

    python experiments/inference/quantize_down_layers.py FP32.onnx OUT.onnx --down-layers 3,8,9,10,11

``FP32.onnx`` is a ``python -m mrc export`` file (optimized, fp32). Quantised: what ``mrc export --quantize int8``
quantises (:func:`mrc.serve.export.encoder_weight_matmuls`) plus the feed-forward down-projections of the listed
encoder layers (pick them on training data: ``down_projection_outliers.py``). The mrc.* metadata is kept, so
``--onnx OUT.onnx`` loads it like an export.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--down-layers", default="", help="comma-separated encoder layer indices")
    args = ap.parse_args(argv)

    import onnx

    from mrc.serve.export import quantize_onnx_int8

    graph = onnx.load(str(args.src), load_external_data=False)
    layers = [int(i) for i in args.down_layers.split(",") if i.strip()]
    down = [f"/model/encoder/encoder/layer.{i}/output/dense/MatMul" for i in layers]
    names = {n.name for n in graph.graph.node}
    missing = [n for n in down if n not in names]
    if missing:
        raise SystemExit(f"error: {args.src} has no node {missing[0]} (an mrc export of a BERT-style encoder?)")
    n = quantize_onnx_int8(args.src, args.out, extra_nodes=down)
    print(f"{n} nodes quantised ({len(down)} down-projections) -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
