"""The HuggingFace peer for ``mrc.bench``: AutoModelForQuestionAnswering trained with ``Trainer``, and
evaluation the way HuggingFace users run it.

Evaluation uses the ``question-answering`` pipeline when the installed transformers has it (it was
removed in transformers 5); otherwise the evaluation path of HuggingFace's question-answering example:
features padded to ``max_length``, ``Trainer.predict`` for the logits, then the example's n-best
post-processing (the top ``n_best`` start and end logits of every feature, every pair checked in Python).
Both are written here from their documented behaviour; the defaults are the example's defaults
(``max_seq_length`` 384, ``doc_stride`` 128, padding to max length, batch size 8, ``n_best_size`` 20,
``max_answer_length`` 30). :func:`train_timed` is the peer of the training-speed bench (:mod:`mrc.bench.train_speed`):
our windows as the example's features, on any device and precision, timed after its warm-up steps.
"""
from __future__ import annotations

import tempfile
import time

import numpy as np
import torch
from transformers import (BertConfig, BertForQuestionAnswering, DataCollatorWithPadding, Trainer, TrainerCallback,
                          TrainingArguments, default_data_collator)

from mrc.bench.measure import memory_probe, peak_memory, reset_peak, sync
from mrc.data.features import Window
from mrc.data.squad import Example
from mrc.model.encoder import attention_implementation
from mrc.train.precision import tf32_scope


def has_qa_pipeline() -> bool:
    """Whether the installed transformers still ships the question-answering pipeline."""
    try:
        from transformers.pipelines import SUPPORTED_TASKS
    except ImportError:
        return False
    return "question-answering" in SUPPORTED_TASKS


def qa_model(encoder, head_proj: torch.nn.Linear | None = None) -> BertForQuestionAnswering:
    """A BertForQuestionAnswering with ``encoder``'s weights (and a softmax head's projection, if given)."""
    config = BertConfig(**encoder.config.to_dict())
    model = BertForQuestionAnswering(config)
    missing = model.bert.load_state_dict(encoder.state_dict(), strict=False)
    if missing.missing_keys and any(not k.startswith("pooler") for k in missing.missing_keys):
        raise RuntimeError(f"encoder weights do not fit BertForQuestionAnswering: {missing.missing_keys}")
    if head_proj is not None:
        model.qa_outputs.load_state_dict(head_proj.state_dict())
    return model


def _tokenize(tokenizer, examples: list[Example], max_len: int, doc_stride: int, pad: bool):
    return tokenizer([e.question for e in examples], [e.context for e in examples], truncation="only_second",
                     max_length=max_len, stride=doc_stride, return_overflowing_tokens=True,
                     return_offsets_mapping=True, padding="max_length" if pad else False)


def train_features(tokenizer, examples: list[Example], max_len: int, doc_stride: int, pad: bool) -> list[dict]:
    """The example's training features: one per window, the answer's token span or [CLS] (0, 0)."""
    enc = _tokenize(tokenizer, examples, max_len, doc_stride, pad)
    feats = []
    for i in range(len(enc["input_ids"])):
        ex = examples[enc["overflow_to_sample_mapping"][i]]
        seq, offsets = enc.sequence_ids(i), enc["offset_mapping"][i]
        ctx = [t for t, s in enumerate(seq) if s == 1]
        start_char = ex.starts[0]
        end_char = start_char + len(ex.answers[0])
        s_tok = e_tok = 0
        if ctx and offsets[ctx[0]][0] <= start_char and offsets[ctx[-1]][1] >= end_char:
            s_tok = next(t for t in ctx if offsets[t][1] > start_char)
            e_tok = next(t for t in reversed(ctx) if offsets[t][0] < end_char)
        feats.append({**_inputs(enc, i), "start_positions": s_tok, "end_positions": e_tok})
    return feats


def _inputs(enc, i: int) -> dict:
    """Model inputs of feature ``i`` as the tokenizer returns them: SentencePiece tokenizers of the XLM-R
    family (e5_small) return no ``token_type_ids``, and the example then passes none."""
    return {k: enc[k][i] for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc}


def training_args(out_dir: str, batch_size: int, seed: int, group_by_length: bool, *, device: str = "cpu",
                  precision: str = "fp32", compile: bool = False, workers: int = 0) -> TrainingArguments:
    """TrainingArguments as the example runs them (on the CPU unless ``device`` is CUDA), with nothing saved or
    reported; ``precision`` fp32 / bf16 / fp16 (the Trainer's ``bf16`` / ``fp16`` autocast, fp16 with its loss
    scaler), ``compile``: its ``torch_compile``, ``workers``: ``dataloader_num_workers``. TF32 is left as the caller
    set it (``tf32=None``)."""
    fields = TrainingArguments.__dataclass_fields__
    if "train_sampling_strategy" in fields:  # transformers >= 5 names the length-grouped sampler this way
        grouping = {"train_sampling_strategy": "group_by_length" if group_by_length else "random"}
    else:
        grouping = {"group_by_length": group_by_length}
    return TrainingArguments(output_dir=out_dir, per_device_train_batch_size=batch_size,
                             per_device_eval_batch_size=batch_size, num_train_epochs=1, learning_rate=5e-5,
                             seed=seed, report_to="none", save_strategy="no", logging_strategy="no",
                             disable_tqdm=True, use_cpu=not str(device).startswith("cuda"),
                             dataloader_num_workers=workers, bf16=precision == "bf16", fp16=precision == "fp16",
                             torch_compile=compile, **grouping)


def train(model, tokenizer, examples: list[Example], *, max_len: int, doc_stride: int, batch_size: int,
          pad: bool, group_by_length: bool, seed: int, precision: str = "fp32") -> dict:
    """Train one epoch with Trainer (``precision``: fp32 or bf16, :func:`training_args`); returns timings
    (features and training) and the window count."""
    t0 = time.perf_counter()
    feats = train_features(tokenizer, examples, max_len, doc_stride, pad)
    t1 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        collator = default_data_collator if pad else DataCollatorWithPadding(tokenizer)
        trainer = Trainer(model=model, args=training_args(tmp, batch_size, seed, group_by_length, precision=precision),
                          train_dataset=feats, data_collator=collator)
        trainer.train()
    t2 = time.perf_counter()
    return {"features_s": t1 - t0, "train_s": t2 - t1, "windows": len(feats)}


def _eval_features(tokenizer, examples: list[Example], max_len: int, doc_stride: int, pad: bool):
    enc = _tokenize(tokenizer, examples, max_len, doc_stride, pad)
    feats, meta = [], []
    for i in range(len(enc["input_ids"])):
        seq = enc.sequence_ids(i)
        # offsets of non-context tokens are dropped, as the example does, so they can never be chosen
        offsets = [o if s == 1 else None for o, s in zip(enc["offset_mapping"][i], seq)]
        meta.append((enc["overflow_to_sample_mapping"][i], offsets))
        feats.append(_inputs(enc, i))
    return feats, meta


def postprocess(examples: list[Example], meta, start_logits, end_logits, n_best: int = 20,
                max_answer_len: int = 30, context_only: bool = False) -> dict[str, str]:
    """The example's n-best post-processing: best ``start + end`` logit pair over all features.

    ``context_only`` ranks only context positions (not the example's behaviour): for weights trained
    with our span mask, whose logits outside the context were never trained down.
    """
    best: dict[int, tuple[float, str]] = {}
    for f, (ex_i, offsets) in enumerate(meta):
        s_log, e_log = np.asarray(start_logits[f], np.float64), np.asarray(end_logits[f], np.float64)
        if context_only:
            outside = np.array([o is None for o in offsets] + [True] * (len(s_log) - len(offsets)))[:len(s_log)]
            s_log, e_log = np.where(outside, -np.inf, s_log), np.where(outside, -np.inf, e_log)
        starts = np.argsort(s_log)[-1:-n_best - 1:-1]
        ends = np.argsort(e_log)[-1:-n_best - 1:-1]
        for s in starts:
            for e in ends:
                if s >= len(offsets) or e >= len(offsets) or offsets[s] is None or offsets[e] is None:
                    continue
                if e < s or e - s + 1 > max_answer_len:
                    continue
                score = float(s_log[s] + e_log[e])
                if ex_i not in best or score > best[ex_i][0]:
                    ctx = examples[ex_i].context
                    best[ex_i] = (score, ctx[offsets[s][0]:offsets[e][1]])
    return {ex.id: best.get(i, (0.0, ""))[1] for i, ex in enumerate(examples)}


def evaluate_example_path(model, tokenizer, examples: list[Example], *, max_len: int, doc_stride: int,
                          batch_size: int, pad: bool, context_only: bool = False,
                          precision: str = "fp32") -> tuple[dict[str, str], int]:
    """Features -> Trainer.predict (in ``precision``) -> n-best post-processing; returns (predictions, windows)."""
    feats, meta = _eval_features(tokenizer, examples, max_len, doc_stride, pad)
    with tempfile.TemporaryDirectory() as tmp:
        collator = default_data_collator if pad else DataCollatorWithPadding(tokenizer)
        trainer = Trainer(model=model, args=training_args(tmp, batch_size, 0, False, precision=precision),
                          data_collator=collator)
        start, end = trainer.predict(feats).predictions[:2]
    return postprocess(examples, meta, start, end, context_only=context_only), len(feats)


def evaluate_pipeline(model, tokenizer, examples: list[Example], *, max_len: int, doc_stride: int,
                      batch_size: int) -> tuple[dict[str, str], int]:
    """The question-answering pipeline (transformers < 5); returns (predictions, -1: windows unknown)."""
    from transformers import pipeline

    qa = pipeline("question-answering", model=model, tokenizer=tokenizer, device=-1)
    out = qa(question=[e.question for e in examples], context=[e.context for e in examples],
             doc_stride=doc_stride, max_seq_len=max_len, max_answer_len=30, batch_size=batch_size)
    out = out if isinstance(out, list) else [out]
    return {e.id: o["answer"] for e, o in zip(examples, out)}, -1


class PadCollator:
    """DataCollatorWithPadding's padding without a tokenizer: ids with ``pad_id``, types and mask with 0, to the
    batch's longest window."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, feats: list[dict]) -> dict[str, torch.Tensor]:
        L = max(len(f["input_ids"]) for f in feats)
        out = {}
        for key, fill in (("input_ids", self.pad_id), ("token_type_ids", 0), ("attention_mask", 0)):
            out[key] = torch.tensor([list(f[key]) + [fill] * (L - len(f[key])) for f in feats], dtype=torch.long)
        for key in ("start_positions", "end_positions"):
            out[key] = torch.tensor([f[key] for f in feats], dtype=torch.long)
        return out


def window_features(windows: list[Window]) -> list[dict]:
    """Our windows as the HF example's training features (the first gold span; [CLS] for none)."""
    return [{"input_ids": w.input_ids.tolist(), "token_type_ids": w.token_type_ids.tolist(),
             "attention_mask": [1] * len(w.input_ids), "start_positions": int(w.labels[0][0]),
             "end_positions": int(w.labels[0][1])} for w in windows]


def train_timed(encoder, windows: list[Window], *, device: str, precision: str, tf32: bool, compile: bool,
                batch_size: int, seed: int, warmup_steps: int, workers: int = 0) -> dict:
    """One epoch of ``Trainer`` + BertForQuestionAnswering (``encoder``'s weights) over ``windows`` on ``device``,
    timed from the end of step ``warmup_steps`` to the end of training: the timed windows (every batch full when
    ``len(windows)`` is a multiple of ``batch_size``), seconds, warm-up seconds, loss, attention and peak memory."""
    marks = {}

    class Clock(TrainerCallback):
        def on_step_end(self, targs, state, control, **kw):
            if state.global_step == warmup_steps:
                sync(device)
                reset_peak(device)
                marks["start"], marks["step"] = time.perf_counter(), state.global_step

        def on_train_end(self, targs, state, control, **kw):
            sync(device)
            marks["end"], marks["steps"] = time.perf_counter(), state.global_step

    torch.manual_seed(seed)
    model = qa_model(encoder)
    with tempfile.TemporaryDirectory() as tmp, tf32_scope(tf32, device), memory_probe(device) as rss:
        targs = training_args(tmp, batch_size, seed, True, device=device, precision=precision, compile=compile,
                              workers=workers)
        trainer = Trainer(model=model, args=targs, train_dataset=window_features(windows),
                          data_collator=PadCollator(0), callbacks=[Clock()])
        t0 = time.perf_counter()
        out = trainer.train()
    return {"windows": (marks["steps"] - marks["step"]) * batch_size, "seconds": marks["end"] - marks["start"],
            "warmup_s": round(marks["start"] - t0, 2), "loss": round(float(out.training_loss), 4),
            "attention": attention_implementation(model.bert),
            **dict(zip(("peak_mb", "peak_kind"), peak_memory(device, rss)))}
