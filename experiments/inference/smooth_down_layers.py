"""SmoothQuant-style smoothing of the feed-forward down-projections, then ONNX Runtime dynamic int8 of every
encoder weight product (the down-projections included).

    python experiments/inference/smooth_down_layers.py CHECKPOINT_DIR FP32.onnx OUT.onnx --train TRAIN.json \
        [--alpha 0.5 | --alpha 0.3,0.5,0.7,0.85] [--questions 64] [--check-questions 32] [--keep-fp32 4,0,5]

Why: the down-projections' inputs (post-GELU activations) carry a few channels up to ~50x larger than the rest
(``down_projection_outliers.py``), so one per-batch int8 scale for the activation loses the other channels
(-1.96 F1 when they are quantised plainly, experiments/inference/README.md). Smoothing (Xiao et al., SmoothQuant,
ICML 2023) divides input channel j of the activation by s_j and multiplies row j of the weight by s_j, which
leaves the product unchanged in exact arithmetic and moves the outliers into the weights, quantised per output
channel:

    s_j = max|X_j| ** alpha / max|W_j,:| ** (1 - alpha)

GELU is not linear, so 1/s cannot be folded into the op before; a ``Mul`` by 1/s is inserted in front of each
down-projection (an element-wise op on the 1536-wide activation, kept fp32).

``max|X_j|`` is taken over the real (non-padding) tokens of the windows of the first ``--questions`` questions of a
*training* file; no evaluation data and no labels are read. With several ``--alpha`` values, each is quantised and
compared with the fp32 graph on the windows of the next ``--check-questions`` training questions (the share of
windows whose best span cell is the fp32 graph's, then the mean absolute difference of the span scores); the best
is written to OUT. ``--keep-fp32`` names encoder layers whose down-projection stays fp32 and unsmoothed (those with
the heaviest outliers on training data). ``FP32.onnx`` is a ``python -m mrc export`` file (optimized, fp32) of
CHECKPOINT_DIR; the mrc.* metadata is kept, so ``measure.py --onnx-int8 OUT.onnx`` and ``--onnx`` load it like an export.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def down_projections(graph) -> list:
    """The down-projection nodes of ``graph`` (:func:`mrc.serve.export.down_projection_matmuls`)."""
    from mrc.serve.export import down_projection_matmuls

    names = set(down_projection_matmuls(graph))
    return [n for n in graph.node if n.name in names]


class TrainingFeeds:
    """Numpy feeds of the exported graph for windows of a training file's questions; the tokenizer, config and
    questions are loaded once."""

    def __init__(self, checkpoint: Path, onnx_path: Path, train: Path, batch_size: int):
        from mrc.data.squad import load_squad
        from mrc.eval.predict import load_for_inference

        model, self.tokenizer, self.cfg = load_for_inference(checkpoint, "cpu", onnx=onnx_path)
        self.inputs, self.train, self.batch_size = model.inputs, train, batch_size
        self.examples, _ = load_squad(train, training=False)

    def __call__(self, first: int, count: int) -> tuple[list[dict], int]:
        """(batches, windows) of questions [first, first + count)."""
        import numpy as np

        from mrc.data.batching import collate
        from mrc.eval.predict import make_windows

        if first + count > len(self.examples):
            raise SystemExit(f"error: {self.train} has {len(self.examples)} usable questions; asked for {first + count}")
        windows = make_windows(self.examples[first:first + count], self.tokenizer, self.cfg)
        out = []
        for k in range(0, len(windows), self.batch_size):
            b = collate(windows[k:k + self.batch_size], self.tokenizer.pad_token_id)
            out.append({name: b[name].numpy().astype(np.bool_ if name == "span_mask" else np.int64)
                        for name in self.inputs})
        return out, len(windows)


def bands(path: Path, feeds) -> list:
    """The graph's span scores (``band``) for each feed."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [session.run(["band"], feed)[0] for feed in feeds]


def activation_maxima(model, nodes, feeds) -> dict:
    """Per down-projection: the largest |input| of each input channel over the real tokens of ``feeds``."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    names = [n.input[0] for n in nodes]
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, None) for x in names)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    first = len(session.get_outputs()) - len(names)
    amax = {x: None for x in names}
    for feed in feeds:
        real = feed["attention_mask"].astype(bool)
        for x, act in zip(names, session.run(None, feed)[first:]):
            m = np.abs(act[real]).max(axis=0)
            amax[x] = m if amax[x] is None else np.maximum(amax[x], m)
    return amax


def smooth(model, alpha: float, amax):
    """A copy of ``model`` with the down-projections in ``amax`` smoothed at ``alpha`` (a Mul by 1/s before each,
    its weight's rows x s)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    inits = {init.name: init for init in g.initializer}
    for node in down_projections(g):
        if node.input[0] not in amax:
            continue
        w = numpy_helper.to_array(inits[node.input[1]])
        x = amax[node.input[0]]
        s = np.clip(np.maximum(x, 1e-5) ** alpha / np.maximum(np.abs(w).max(axis=1), 1e-5) ** (1 - alpha),
                    1e-5, None).astype(np.float32)
        inits[node.input[1]].CopyFrom(numpy_helper.from_array((w * s[:, None]).astype(np.float32), node.input[1]))
        inv = node.name + "_smooth_inv"
        g.initializer.append(numpy_helper.from_array((1.0 / s).astype(np.float32), inv))
        smoothed = node.input[0] + "_smoothed"
        mul = onnx.helper.make_node("Mul", [node.input[0], inv], [smoothed], name=node.name + "_smooth_mul")
        node.input[0] = smoothed
        g.node.insert(list(g.node).index(node), mul)
    return out


def compare(reference: list, candidate: list) -> dict:
    """How closely the span scores ``candidate`` reproduce ``reference`` (both from :func:`bands`)."""
    import numpy as np

    same, total, diffs = 0, 0, []
    for a, b in zip(reference, candidate):
        keep = a > -1e3  # cells the head can choose (masked cells hold a large negative)
        diffs.append(np.abs(a - b)[keep].mean())
        flat_a = np.where(keep, a, -np.inf).reshape(len(a), -1)
        flat_b = np.where(keep, b, -np.inf).reshape(len(b), -1)
        same += int((flat_a.argmax(1) == flat_b.argmax(1)).sum())
        total += len(a)
    return {"best_cell_agreement": same / total, "mean_abs_diff": float(np.mean(diffs))}


def training_windows_parser(doc: str) -> argparse.ArgumentParser:
    """The arguments of the scripts that rewrite an export with statistics of training windows: the checkpoint,
    its fp32 export, the output, the training file, how many questions measure and how many check."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("src", type=Path, help="the fp32 export of the checkpoint (python -m mrc export)")
    ap.add_argument("out", type=Path)
    ap.add_argument("--train", type=Path, required=True, help="a SQuAD-format training file")
    ap.add_argument("--questions", type=int, default=64, help="training questions whose windows are measured")
    ap.add_argument("--check-questions", type=int, default=32,
                    help="the next training questions, to compare with fp32 (and choose among several --alpha)")
    ap.add_argument("--batch-size", type=int, default=16)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = training_windows_parser(__doc__)
    ap.add_argument("--alpha", default="0.5", help="migration strength, or a comma-separated list to choose from")
    ap.add_argument("--keep-fp32", default="", help="comma-separated encoder layers whose down-projection stays fp32")
    args = ap.parse_args(argv)

    import onnx

    from mrc.serve.export import quantize_onnx_int8

    alphas = [float(a) for a in args.alpha.split(",") if a.strip()]
    if not alphas or any(not 0 <= a <= 1 for a in alphas):
        raise SystemExit(f"error: --alpha {args.alpha!r}: values in [0, 1]")
    model = onnx.load(str(args.src))
    keep = {f"/encoder/layer.{int(i)}/" for i in args.keep_fp32.split(",") if i.strip()}
    nodes = [n for n in down_projections(model.graph) if not any(k in n.name for k in keep)]
    if not nodes:
        raise SystemExit(f"error: {args.src} has no feed-forward down-projection (an mrc export of a BERT encoder?)")
    feeds = TrainingFeeds(args.checkpoint, args.src, args.train, args.batch_size)
    calib, n_calib = feeds(0, args.questions)
    amax = activation_maxima(model, nodes, calib)
    print(f"activation maxima of {len(nodes)} down-projections over {n_calib} windows of "
          f"{args.questions} training questions ({args.train})")
    for node in nodes:
        x = amax[node.input[0]]
        print(f"  {node.name}: max {x.max():.2f}, median channel max {float(sorted(x)[len(x) // 2]):.2f}")
    names = [n.name for n in nodes]
    with tempfile.TemporaryDirectory(dir=args.out.parent) as tmp:
        check = reference = None
        if len(alphas) > 1:
            check, n_check = feeds(args.questions, args.check_questions)
            reference = bands(args.src, check)
            print(f"choosing alpha on {n_check} windows of the next {args.check_questions} training questions")
        results = {}
        for alpha in alphas:
            smoothed = Path(tmp) / f"smoothed_{alpha}.onnx"
            onnx.save(smooth(model, alpha, amax), str(smoothed))
            quantised = Path(tmp) / f"int8_{alpha}.onnx"
            quantize_onnx_int8(smoothed, quantised, extra_nodes=names)
            if check is not None:
                results[alpha] = compare(reference, bands(quantised, check))
                print(f"  alpha {alpha}: {json.dumps(results[alpha])}")
        best = max(alphas, key=lambda a: (results[a]["best_cell_agreement"], -results[a]["mean_abs_diff"])) \
            if results else alphas[0]
        (Path(tmp) / f"int8_{best}.onnx").replace(args.out)
    kept = f" (down-projections of layers {args.keep_fp32} fp32)" if keep else ""
    print(f"alpha {best}: {len(nodes)} down-projections smoothed; every encoder weight product int8{kept} -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
