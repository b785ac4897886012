"""``python -m mrc export CHECKPOINT_DIR --onnx OUT.onnx``: the checkpoint's encoder + head as one ONNX graph
(collated window batch -> band of span scores, plus per-token start/end scores for the softmax head),
checked against torch with ONNX Runtime before the command succeeds.

The graph has dynamic batch and length axes and a fixed ``max_answer_len`` (the checkpoint's
``decode.max_answer_len``). It is exported with torch's TorchScript-based exporter (``dynamo=False``) at
opset 17 (checked on torch 2.13 / onnxruntime 1.32 for every head). Its metadata records the head, the
``max_answer_len`` and a digest of the checkpoint's weights, so ``mrc predict --onnx`` and ``mrc.serve
--onnx`` refuse a file exported from another checkpoint.

By default the graph then goes through ONNX Runtime's transformer optimizer (``--no-optimize``: not): the
encoder is exported with eager attention, whose MatMul / Softmax pattern the optimizer fuses into one
``Attention`` node per layer, with residual + LayerNorm (``SkipLayerNormalization``) and bias + GELU fused
too. The torch SDPA export hides attention behind NaN guards the optimizer does not match, which left ONNX
Runtime fp32 slower than torch (experiments/inference/README.md). The file is written under a temporary name
and renamed only after ONNX Runtime's scores matched torch's.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from mrc.errors import command_error

# torch and the model code are imported where they are used, so that --help answers at once

OPSET = 17
# The encoders' attention (torch's scaled_dot_product_attention) exports from opset 14; 7-13 fail inside the
# exporter with a traceback, so --opset is checked against this and the installed torch before any work.
MIN_OPSET = 14
SAMPLE = ("北京是中华人民共和国的首都，人口约2189万人。《红楼梦》的作者是曹雪芹，成书于18世纪中叶。"
          "2019年iPhone 11在Cupertino发布，价格６９９９元。Apple公司的电话是400-666-8800。")


def opset_range() -> tuple[int, int | None]:
    """(lowest, highest) opset this graph exports at with the installed torch (highest None: unknown)."""
    try:
        from torch.onnx._constants import ONNX_MAX_OPSET  # private: the exporter's own bound (23 on torch 2.13)
    except ImportError:
        return MIN_OPSET, None
    return MIN_OPSET, int(ONNX_MAX_OPSET)


def check_opset(opset: int) -> None:
    """Refuse an opset the graph or the installed exporter cannot use (one line naming the range)."""
    from mrc.model.quantize import FastModelError

    low, high = opset_range()
    if opset < low or (high is not None and opset > high):
        span = f"{low}..{high}" if high is not None else f"{low} or newer"
        raise FastModelError(f"--opset {opset}: this graph exports at opset {span} with the installed torch "
                             f"(default {OPSET}); pick one in that range")


def sample_batches(tokenizer, cfg):
    """Collated batches of different batch sizes and lengths (the verification inputs)."""
    from mrc.data.batching import collate
    from mrc.data.squad import Example
    from mrc.eval.predict import make_windows

    long = Example("a", "红楼梦的作者是谁？", SAMPLE * 4, [], [])
    short = Example("b", "首都？", SAMPLE[:30], [], [])
    tiny = Example("c", "谁？", "曹雪芹。", [], [])  # fewer tokens than max_answer_len
    wins = make_windows([long, short, tiny], tokenizer, cfg)
    pad = tokenizer.pad_token_id
    return [collate(wins[:-1], pad), collate(wins[-2:-1], pad), collate(wins[-1:], pad)]


def export_onnx(checkpoint_dir: str | Path, out: str | Path, *, opset: int = OPSET, atol: float = 1e-3,
                optimize: bool = True) -> dict:
    """Export, add the metadata, fuse (``optimize``: :func:`optimize_onnx`), verify with ONNX Runtime, then move
    into place; returns the largest differences found and the fused operators (``fused``)."""
    import torch

    from mrc.model import checkpoint
    from mrc.model.quantize import ONNX_INPUTS, BandModule, FastModelError, OnnxSpanModel, weights_digest

    try:
        import onnx
        import onnxruntime  # noqa: F401 - the check below runs the graph
    except ModuleNotFoundError as e:
        raise FastModelError(f"mrc export needs {e.name}; install the serve extra: pip install -e '.[serve]'") from None
    checkpoint_dir, out = Path(checkpoint_dir), Path(out)
    model, tokenizer, cfg = checkpoint.load(checkpoint_dir, "cpu")
    if optimize and hasattr(model.encoder, "set_attn_implementation"):
        model.encoder.set_attn_implementation("eager")  # the pattern the optimizer fuses into Attention
    mal = cfg.decode.max_answer_len
    module = BandModule(model, mal).eval()
    batches = sample_batches(tokenizer, cfg)
    args = tuple(batches[0][k] if k != "span_mask" else batches[0][k].bool() for k in ONNX_INPUTS)
    outputs = ["band", "token_scores"] if module.has_tokens else ["band"]
    axes = {k: {0: "batch", 1: "length"} for k in ONNX_INPUTS}
    axes["band"] = {0: "batch", 1: "length", 2: "answer_len"}
    if module.has_tokens:
        axes["token_scores"] = {0: "batch", 1: "length"}
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(out)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about Python values in the graph
            torch.onnx.export(module, args, str(partial), input_names=list(ONNX_INPUTS), output_names=outputs,
                              dynamic_axes=axes, opset_version=opset, dynamo=False, do_constant_folding=True)
        graph = onnx.load(str(partial))
        head = type(model.head).__name__
        for key, value in {"mrc.max_answer_len": "none" if mal is None else str(mal), "mrc.head": head,
                           "mrc.weights_sha256": weights_digest(checkpoint_dir), "mrc.opset": str(opset),
                           "mrc.optimized": str(bool(optimize)).lower()}.items():
            entry = graph.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(graph, str(partial))
        fused = optimize_onnx(partial, model.encoder.config) if optimize else {}
        worst = verify(model, OnnxSpanModel(partial, checkpoint_dir), batches, mal, atol=atol)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return {**worst, "fused": fused}


def partial_path(out: Path) -> Path:
    """Where ``out`` is written before it is checked and renamed: beside it, hidden, so that a failed or
    interrupted export never leaves a file under the final name."""
    return out.with_name(f".{out.name}.partial")


def optimize_onnx(path: Path, config) -> dict[str, int]:
    """ONNX Runtime's transformer optimizer (``model_type="bert"``, the encoder's heads and width) on ``path``,
    in place, the metadata kept; returns the count of each fused operator it made."""
    import onnx
    from onnxruntime.transformers.optimizer import optimize_model

    meta = list(onnx.load(str(path), load_external_data=False).metadata_props)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt = optimize_model(str(path), model_type="bert", num_heads=int(config.num_attention_heads),
                             hidden_size=int(config.hidden_size), opt_level=0)
    fused = {k: int(v) for k, v in (opt.get_fused_operator_statistics() or {}).items() if v}
    del opt.model.metadata_props[:]
    opt.model.metadata_props.extend(meta)
    opt.save_model_to_file(str(path))
    return fused


def down_projection_matmuls(graph) -> list[str]:
    """The encoder's feed-forward down-projections: MatMul nodes under ``/encoder/`` whose weight (initializer) has
    more rows than columns. Their inputs are post-GELU activations with a few outlier channels."""
    weights = {init.name: tuple(init.dims) for init in graph.initializer}
    return [n.name for n in graph.node if n.op_type == "MatMul" and "/encoder/" in n.name
            and any(len(weights.get(i, ())) == 2 and weights[i][0] > weights[i][1] for i in n.input)]


def encoder_weight_matmuls(graph) -> list[str]:
    """The graph's nodes that int8 quantises: MatMul nodes under ``/encoder/`` with a weight (initializer) input,
    and the fused ``Attention`` nodes (their Q/K/V projection) of an optimized graph, except the feed-forward
    down-projections (:func:`down_projection_matmuls`), as :func:`mrc.model.quantize.int8_layers` does in
    torch: one per-batch scale cannot hold their inputs' outliers. Quantising them too cost 1.96 F1 on e5_small
    (experiments/inference/README.md). Attention-score products and the head stay fp32."""
    weights = {init.name for init in graph.initializer}
    down = set(down_projection_matmuls(graph))
    return [n.name for n in graph.node
            if (n.op_type == "Attention" or (n.op_type == "MatMul" and "/encoder/" in n.name))
            and any(i in weights for i in n.input) and n.name not in down]


@contextlib.contextmanager
def quiet_root_logger():
    """ONNX Runtime's quantizer advises pre-processing on the root logger at every call: not the user's concern."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_onnx_int8(src: str | Path, out: str | Path, extra_nodes: Sequence[str] = ()) -> int:
    """ONNX Runtime dynamic int8 (weights per output channel) of the encoder's linear layers of ``src``
    (:func:`encoder_weight_matmuls`: on an optimized graph the fused Attention nodes too) into ``out``, the mrc.*
    metadata kept, written under a temporary name and renamed: int8 inference without torch. Measured results
    per variant: experiments/inference/README.md. ``extra_nodes``: more node names to quantise (e.g. chosen
    down-projections). Returns the number of nodes quantised."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = Path(out)
    graph = onnx.load(str(src))
    nodes = encoder_weight_matmuls(graph.graph) + list(extra_nodes)
    partial = partial_path(out)
    try:
        with warnings.catch_warnings(), quiet_root_logger():
            warnings.simplefilter("ignore")
            # DefaultTensorType: the fused contrib ops (Attention, SkipLayerNormalization) have no shape inference
            quantize_dynamic(str(src), str(partial), per_channel=True, weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul", "Attention"], nodes_to_quantize=nodes,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        quantised = onnx.load(str(partial))
        del quantised.metadata_props[:]
        quantised.metadata_props.extend(graph.metadata_props)
        onnx.save(quantised, str(partial))
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return len(nodes)


def verify(model, onnx_model, batches, max_answer_len, *, atol: float) -> dict:
    """Largest |torch - onnx| over the valid band cells (and token scores) of ``batches``; raises above ``atol``."""
    import numpy as np
    import torch

    from heads.base import NEG
    from mrc.model.quantize import FastModelError

    with torch.inference_mode():
        return _verify(model, onnx_model, batches, max_answer_len, atol, np, NEG, FastModelError)


def _verify(model, onnx_model, batches, max_answer_len, atol, np, NEG, FastModelError) -> dict:
    worst = {"band": 0.0, "token_scores": 0.0}
    for batch in batches:
        out = model(**batch)
        ref = model.head.span_scores(out, batch["span_mask"], max_answer_len).numpy()
        got = onnx_model(**batch)
        band = got["band"].numpy()
        # the graph's band width is max_answer_len even where a window is shorter (the extra cells are invalid)
        if band.shape[:2] != ref.shape[:2] or band.shape[2] < ref.shape[2] or \
                (band[:, :, ref.shape[2]:] > NEG / 2).any():
            raise FastModelError(f"ONNX band shape {band.shape} does not fit torch's {ref.shape}")
        band = band[:, :, :ref.shape[2]]
        valid = ref > NEG / 2
        if not np.array_equal(valid, band > NEG / 2):
            raise FastModelError("ONNX and torch disagree on which span cells are valid")
        worst["band"] = max(worst["band"], float(np.abs(ref[valid] - band[valid]).max()))
        tok = model.head.token_scores(out, batch["span_mask"])
        if tok is not None:
            ok = batch["span_mask"].numpy()
            diff = np.abs(tok.numpy() - got["token_scores"].numpy())[ok]
            worst["token_scores"] = max(worst["token_scores"], float(diff.max()))
    if max(worst.values()) > atol:
        raise FastModelError(f"ONNX Runtime differs from torch by {max(worst.values()):.2e} > {atol}; the "
                             "export is not faithful")
    return worst


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(prog="python -m mrc export", description="Export a checkpoint's encoder + head "
                                 "to ONNX (for mrc predict / mrc.serve --onnx) and check it against torch.")
    ap.add_argument("checkpoint", type=Path, help="directory written by a training run (<run dir>/checkpoint)")
    ap.add_argument("--onnx", type=Path, required=True, help="where to write the .onnx file")
    ap.add_argument("--opset", type=int, default=OPSET,
                    help=f"ONNX opset (default {OPSET}; {MIN_OPSET} up to what the installed torch exports)")
    ap.add_argument("--atol", type=float, default=1e-3,
                    help="largest allowed |torch - ONNX Runtime| score difference (default 1e-3)")
    ap.add_argument("--quantize", choices=["int8"], default=None,
                    help="int8: then quantise the encoder's linear layers with ONNX Runtime (dynamic, per channel)")
    ap.add_argument("--no-optimize", dest="optimize", action="store_false",
                    help="skip ONNX Runtime's transformer optimizer (fused Attention, SkipLayerNormalization, "
                         "bias + GELU); the graph then keeps torch's SDPA export")
    args = ap.parse_args(argv)
    from mrc.serve.out_paths import check_output_file

    try:
        check_opset(args.opset)  # before the checkpoint is loaded: bad options fail in a second
        check_output_file(args.onnx, "--onnx", "model.onnx")
        if args.quantize:
            import tempfile

            with tempfile.TemporaryDirectory(dir=args.onnx.parent if args.onnx.parent.is_dir() else None) as tmp:
                fp32 = Path(tmp) / "fp32.onnx"
                worst = export_onnx(args.checkpoint, fp32, opset=args.opset, atol=args.atol, optimize=args.optimize)
                n = quantize_onnx_int8(fp32, args.onnx)
            print(f"int8: {n} encoder weight products quantised (the fp32 graph was checked against torch before)",
                  file=sys.stderr)
        else:
            worst = export_onnx(args.checkpoint, args.onnx, opset=args.opset, atol=args.atol, optimize=args.optimize)
    except Exception as e:  # noqa: BLE001 - user mistakes get one line, anything else its traceback
        return command_error(e)
    size = args.onnx.stat().st_size / 1e6
    fused = ", ".join(f"{n} {k}" for k, n in worst["fused"].items()) or "none"
    print(f"wrote {args.onnx} ({size:.1f} MB, opset {args.opset}; fused: {fused}); ONNX Runtime vs torch: max |diff| "
          f"{worst['band']:.2e} (span band), {worst['token_scores']:.2e} (token scores)", file=sys.stderr)
    return 0
