"""Static (calibrated) int8 of an mrc ONNX export: activation scales fixed beforehand from windows of a *training*
file, then the fused attention's Q/K/V projection quantised dynamically (ONNX Runtime has no static Attention).

    python experiments/inference/static_int8.py CHECKPOINT_DIR FP32.onnx OUT.onnx --train TRAIN.json \
        [--questions 64] [--check-questions 32] [--method minmax|percentile|entropy] [--format qoperator|qdq] \
        [--smooth-alpha 0.7] [--keep-down]

Why: dynamic int8 (``python -m mrc export --quantize int8``) computes each activation's scale per batch at run
time; static int8 (ONNX Runtime's ``quantize_static``) computes it once on calibration data, so no run-time
min/max pass and a fixed per-tensor scale, which either helps (no outlier of one batch spreads its scale) or hurts
(a scale that does not fit a new batch) — what this script measures. The weight products (``MatMul``: attention
output, feed-forward input and, unless ``--keep-down``, the down-projections) get static activation scales and
per-channel int8 weights; the fused ``Attention`` nodes are then quantised dynamically (per channel), as the export
does. ``--smooth-alpha`` smooths the down-projections first (``smooth_down_layers.py``, with the maxima from the
same calibration windows).

The calibration windows are those of the first ``--questions`` questions of ``--train`` (no labels, no evaluation
data); the result is compared with the fp32 graph on the windows of the next ``--check-questions`` training
questions (share of windows whose best span cell is fp32's, mean |difference| of the span scores), printed and
written beside OUT as ``OUT.check.json``. ``measure.py --onnx-int8 OUT.onnx`` then measures F1 and speed.
"""
from __future__ import annotations

import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))


class Reader:
    """ONNX Runtime's CalibrationDataReader over a list of feeds."""

    def __init__(self, feeds: list[dict]):
        self.feeds = iter(feeds)

    def get_next(self):
        return next(self.feeds, None)


def quantize_static_int8(src: Path, out: Path, feeds: list[dict], nodes: list[str], method: str, fmt: str) -> None:
    """``src`` with static int8 ``nodes`` (MatMuls), activation scales from ``feeds``, written to ``out``."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    quantize_static(str(src), str(out), Reader(feeds), per_channel=True,
                    quant_format=QuantFormat.QOperator if fmt == "qoperator" else QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=["MatMul"], nodes_to_quantize=nodes,
                    calibrate_method=methods[method],
                    extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "CalibMovingAverage": False})


def declare_float(model, nodes: list[str]) -> int:
    """Declare the float activations around ``nodes`` in ``model``'s value_info. ONNX shape inference stops at the
    fused contrib ops (SkipLayerNormalization, BiasGelu), and ONNX Runtime's calibrator only records tensors with a
    declared float type: without this, static quantisation quantises the weights alone. Returns how many."""
    import onnx

    known = {v.name for v in model.graph.value_info} | {v.name for v in model.graph.input} | \
        {v.name for v in model.graph.output} | {i.name for i in model.graph.initializer}
    wanted = set(nodes)
    added = 0
    for node in model.graph.node:
        if node.name in wanted:
            for name in list(node.input) + list(node.output):
                if name and name not in known:
                    model.graph.value_info.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
                    known.add(name)
                    added += 1
    return added


def quantize_attention(src: Path, out: Path) -> int:
    """The fused Attention nodes of ``src`` quantised dynamically (per channel) into ``out``; returns how many."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    names = [n.name for n in onnx.load(str(src)).graph.node if n.op_type == "Attention"]
    if names:
        quantize_dynamic(str(src), str(out), per_channel=True, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["Attention"], nodes_to_quantize=names,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    else:
        out.write_bytes(src.read_bytes())
    return len(names)


def main(argv: list[str] | None = None) -> int:
    from smooth_down_layers import training_windows_parser

    ap = training_windows_parser(__doc__)
    ap.add_argument("--method", choices=("minmax", "percentile", "entropy"), default="minmax")
    ap.add_argument("--format", choices=("qoperator", "qdq"), default="qoperator")
    ap.add_argument("--smooth-alpha", type=float, default=None, help="smooth the down-projections first")
    ap.add_argument("--keep-down", action="store_true", help="keep the feed-forward down-projections fp32")
    args = ap.parse_args(argv)

    import onnx

    from mrc.serve.export import encoder_weight_matmuls, quiet_root_logger
    from smooth_down_layers import TrainingFeeds, activation_maxima, bands, compare, down_projections, smooth

    if args.smooth_alpha is not None and not 0 <= args.smooth_alpha <= 1:
        raise SystemExit(f"error: --smooth-alpha {args.smooth_alpha}: a value in [0, 1]")
    if args.smooth_alpha is not None and args.keep_down:
        raise SystemExit("error: --smooth-alpha smooths the down-projections that --keep-down keeps fp32: use one")
    model = onnx.load(str(args.src))
    downs = [n.name for n in down_projections(model.graph)]
    if not downs:
        raise SystemExit(f"error: {args.src} has no feed-forward down-projection (an mrc export of a BERT encoder?)")
    feeds = TrainingFeeds(args.checkpoint, args.src, args.train, args.batch_size)
    calib, n_calib = feeds(0, args.questions)
    check, n_check = feeds(args.questions, args.check_questions)
    with tempfile.TemporaryDirectory(dir=args.out.parent) as tmp:
        src = args.src
        if args.smooth_alpha is not None:
            nodes = down_projections(model.graph)
            src = Path(tmp) / "smoothed.onnx"
            onnx.save(smooth(model, args.smooth_alpha, activation_maxima(model, nodes, calib)), str(src))
        typed = onnx.load(str(src))
        graph = typed.graph
        matmuls = [n for n in encoder_weight_matmuls(graph)
                   if any(m.name == n and m.op_type == "MatMul" for m in graph.node)]
        if not args.keep_down:
            matmuls += [n for n in downs if n not in matmuls]
        declare_float(typed, matmuls)
        src = Path(tmp) / "typed.onnx"
        onnx.save(typed, str(src))
        static = Path(tmp) / "static.onnx"
        with quiet_root_logger():
            quantize_static_int8(src, static, calib, matmuls, args.method, args.format)
            n_att = quantize_attention(static, Path(tmp) / "int8.onnx")
        quantised = onnx.load(str(Path(tmp) / "int8.onnx"))
        ops = Counter(n.op_type for n in quantised.graph.node)
        static_ops = ops["QLinearMatMul"] if args.format == "qoperator" else ops["QuantizeLinear"]
        if static_ops == 0:
            raise SystemExit("error: no activation was quantised (the calibrator recorded no range): weights only")
        del quantised.metadata_props[:]
        quantised.metadata_props.extend(model.metadata_props)
        onnx.save(quantised, str(Path(tmp) / "int8.onnx"))
        result = compare(bands(args.src, check), bands(Path(tmp) / "int8.onnx", check))
        (Path(tmp) / "int8.onnx").replace(args.out)
    record = {"ops": {k: ops[k] for k in sorted(ops) if "Quant" in k or k in ("MatMul", "QAttention", "QLinearMatMul")},
              "static_matmuls": len(matmuls), "dynamic_attention": n_att, "method": args.method,
              "format": args.format, "smooth_alpha": args.smooth_alpha, "keep_down": args.keep_down,
              "calibration": {"train": str(args.train), "questions": args.questions, "windows": n_calib},
              "check": {"questions": args.check_questions, "windows": n_check, **result}}
    Path(str(args.out) + ".check.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"{len(matmuls)} MatMuls static int8 ({args.method}, {args.format}, calibrated on {n_calib} windows of "
          f"{args.questions} training questions), {n_att} Attention nodes dynamic int8 -> {args.out}")
    print(f"against fp32 on {n_check} windows of the next {args.check_questions} training questions: {json.dumps(result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
