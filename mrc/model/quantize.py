"""Fast CPU inference helpers: int8 dynamic quantisation of the encoder, and an ONNX Runtime model that
:func:`mrc.eval.inference.score_windows` drives like a :class:`~mrc.model.span_model.SpanModel`.

int8: ``torch.ao.quantization.quantize_dynamic`` replaces the ``nn.Linear`` layers of the encoder (all but
the feed-forward down-projections, :func:`int8_layers`) by ones whose weights are int8 per output channel
and whose activations are quantised on the fly (per batch); the head, the neck, the embeddings and the
down-projections stay fp32. torch marks ``torch.ao.quantization`` deprecated in favour of ``torchao`` but still
ships it (checked on torch 2.13); its warnings are silenced here.

bf16: the encoder runs under CPU bf16 autocast (:class:`Bf16Encoder`: matrix products in bfloat16, on the
AMX / AVX512-BF16 units of recent x86 CPUs), its hidden states handed back in fp32, so the neck, the head and
decoding are unchanged. On a CPU without such units it runs but is slower than fp32 (a warning says so).

ONNX: :mod:`mrc.serve.export` writes a graph ``inputs -> band (B, L, A)`` (plus ``token_scores`` for the
softmax head) for a fixed ``max_answer_len``; :class:`OnnxSpanModel` runs it. The file is data (a graph
and weights, no code); its metadata names the checkpoint weights it was exported from, and a file from
another checkpoint is refused.
"""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mrc.model.cpu import bf16_units

# ONNX graph inputs, in order (the collated batch keys the span model reads).
ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "span_mask", "question_match")
QUANTIZE = ("int8", "bf16")


class FastModelError(ValueError):
    """An ONNX file that does not fit the checkpoint, or an option that cannot be honoured (one line)."""

    user_facing = True


def int8_layers(encoder: nn.Module) -> list[str]:
    """Names of the encoder's ``nn.Linear`` layers that int8 quantises: all but the down-projections
    (``in_features > out_features``: a transformer's feed-forward output, fed by post-GELU activations whose
    outliers a per-batch activation scale cannot hold). Measured on the trained e5_small GlobalPointer
    checkpoint, 150 in-domain questions: every layer, per-tensor weights 74.15 -> 59.63 F1; per-channel
    66.62; per-channel without the down-projections 73.50 (experiments/inference/README.md)."""
    return [n for n, m in encoder.named_modules() if isinstance(m, nn.Linear) and m.in_features <= m.out_features]


def quantize_int8(model):
    """The span model with its encoder's ``nn.Linear`` layers (except the down-projections, see
    :func:`int8_layers`) dynamically quantised to int8, weights per output channel (CPU only)."""
    model = model.cpu().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        spec = {name: per_channel_dynamic_qconfig for name in int8_layers(model.encoder)}
        model.encoder = quantize_dynamic(model.encoder, spec, dtype=torch.qint8)
    return model


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX, :func:`mrc.model.cpu.bf16_units`) and
    torch's oneDNN can use it. (oneDNN's own check also says yes on any AVX512 core, where bf16 is emulated.)"""
    try:
        usable = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False
    return usable and bool(bf16_units())


class Bf16Encoder(nn.Module):
    """``encoder`` run under CPU bf16 autocast; ``last_hidden_state`` and ``hidden_states`` come back in fp32.
    Exposes what the span model reads from an encoder (``config``, ``get_input_embeddings``)."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.inner, self.config = encoder, encoder.config

    def get_input_embeddings(self):
        return self.inner.get_input_embeddings()

    def forward(self, **kwargs):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = self.inner(**kwargs)
        out["last_hidden_state"] = out["last_hidden_state"].float()
        if out.get("hidden_states") is not None:
            out["hidden_states"] = tuple(h.float() for h in out["hidden_states"])
        return out


def autocast_bf16(model):
    """The span model with its encoder run in bf16 on the CPU (:class:`Bf16Encoder`); warns when this CPU has
    no native bf16 units, where it is slower than fp32."""
    if not cpu_has_bf16():
        warnings.warn("--quantize bf16: this CPU has no AVX512-BF16 / AMX units; bf16 runs emulated, slower "
                      "than fp32", stacklevel=2)
    elif "amx_bf16" not in bf16_units():
        warnings.warn("--quantize bf16: this CPU has AVX512-BF16 but no AMX; on such a Xeon the e5_small encoder ran "
                      "0.67x the fp32 speed in bf16 (experiments/inference/README.md); the int8 ONNX export "
                      "(mrc export --quantize int8) is the faster option here", stacklevel=2)
    model = model.cpu().eval()
    model.encoder = Bf16Encoder(model.encoder)
    return model


def weights_digest(checkpoint_dir: str | Path) -> str:
    """sha256 of the checkpoint's ``span.safetensors`` and ``encoder/model.safetensors`` (what an ONNX file
    was exported from)."""
    h = hashlib.sha256()
    for name in ("span.safetensors", "encoder/model.safetensors"):
        file = Path(checkpoint_dir) / name
        if file.is_file():
            with open(file, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


class BandModule(nn.Module):
    """What the ONNX graph computes: the span model's band of span scores for a fixed ``max_answer_len``
    (the same ``head.span_scores`` that :func:`score_windows` calls), plus the per-token start/end scores
    for heads that have them (softmax)."""

    def __init__(self, model, max_answer_len: int | None):
        super().__init__()
        self.model, self.max_answer_len = model, max_answer_len
        self.has_tokens = model.head.token_scores(torch.zeros(1, 2, 2), torch.ones(1, 2, dtype=torch.bool)) is not None

    def forward(self, input_ids, attention_mask, token_type_ids, span_mask, question_match):
        span_mask = span_mask.bool()
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                         span_mask=span_mask, question_match=question_match)
        band = self.model.head.span_scores(out, span_mask, self.max_answer_len)
        if self.has_tokens:
            return band, self.model.head.token_scores(out, span_mask)
        return (band,)


def tokenizer_and_config(checkpoint_dir: str | Path):
    """(tokenizer, cfg) of a checkpoint without its weights: what an ONNX graph exported from it needs beside
    it (the same code-free reading as :func:`mrc.model.checkpoint.load`)."""
    from transformers import AutoTokenizer

    from mrc.model.checkpoint import CheckpointError, read_config

    path = Path(checkpoint_dir)
    cfg = read_config(path)
    if not (path / "tokenizer").is_dir():
        raise CheckpointError(f"{path / 'tokenizer'}: folder missing from the checkpoint; copy the whole "
                              "checkpoint/ folder of the run")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path / "tokenizer", local_files_only=True, use_fast=True)
    except Exception as e:  # noqa: BLE001 - broken tokenizer files
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"{path / 'tokenizer'}: cannot be loaded ({first}); the checkpoint is incomplete "
                              "or damaged, copy it again") from None
    return tokenizer, cfg


class _OnnxHead:
    """Stands in for the head in :func:`score_windows`: the graph already computed the band."""

    def __init__(self, max_answer_len, name: str):
        self.max_answer_len, self.name = max_answer_len, name

    def span_scores(self, scores, span_mask, max_answer_len):
        if max_answer_len != self.max_answer_len:
            raise FastModelError(f"the ONNX file was exported for max_answer_len={self.max_answer_len}, "
                                 f"asked for {max_answer_len}; export again")
        return scores["band"]

    def token_scores(self, scores, span_mask):
        return scores.get("token_scores")


class OnnxSpanModel:
    """An exported span model run by ONNX Runtime on CPU; called with a collated batch like ``SpanModel``."""

    def __init__(self, path: str | Path, checkpoint_dir: str | Path | None = None, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ModuleNotFoundError:
            raise FastModelError("--onnx needs onnxruntime; install the serve extra: pip install -e '.[serve]'") from None
        path = Path(path)
        if not path.is_file():
            raise FastModelError(f"{path}: no such ONNX file; write it with python -m mrc export CHECKPOINT "
                                 "--onnx FILE")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - not an ONNX file, truncated
            raise FastModelError(f"{path}: not a readable ONNX model ({str(e).splitlines()[0][:200]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if "mrc.max_answer_len" not in meta:
            raise FastModelError(f"{path}: not exported by python -m mrc export (no mrc.* metadata)")
        if checkpoint_dir is not None and meta.get("mrc.weights_sha256") != weights_digest(checkpoint_dir):
            raise FastModelError(f"{path}: exported from other weights than {checkpoint_dir}; export this "
                                 "checkpoint again (python -m mrc export)")
        mal = meta["mrc.max_answer_len"]
        self.max_answer_len = None if mal == "none" else int(mal)
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.inputs = [i.name for i in self.session.get_inputs()]  # the exporter drops inputs the graph ignores
        self.head = _OnnxHead(self.max_answer_len, meta.get("mrc.head", "?"))

    def eval(self):
        return self

    def to(self, device):
        return self

    def __call__(self, **batch):
        feeds = {k: batch[k].cpu().numpy().astype(np.bool_ if k == "span_mask" else np.int64) for k in self.inputs}
        out = self.session.run(None, feeds)
        return {name: torch.from_numpy(arr) for name, arr in zip(self.outputs, out)}
