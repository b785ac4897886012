"""Tiny checkpoints of every head and sample texts for the serve / explain / export tests."""
from __future__ import annotations

from pathlib import Path

from tests.conftest import FIXTURE_TEXTS

HEAD_TARGETS = {"softmax": ("heads.softmax.SoftmaxHead", {"dropout": 0.1}),
                "globalpointer": ("heads.globalpointer.GlobalPointer", {"head_size": 16, "dropout": 0.1}),
                "efficient_globalpointer": ("heads.globalpointer.EfficientGlobalPointer",
                                            {"head_size": 16, "dropout": 0.1})}
# A context of several windows at max_len=64 and the questions asked about it.
CONTEXT = "".join(FIXTURE_TEXTS) * 2
QUESTIONS = ["《红楼梦》的作者是谁？", "北京的人口是多少？", "Apple公司的电话是多少？", "iPhone 11在哪里发布？"]


def make_checkpoint(path: Path, head: str, *, seed: int = 0) -> Path:
    """An untrained tiny checkpoint (2 layers x 32) with ``head`` (a name of heads.HEADS)."""
    import torch
    from omegaconf import OmegaConf

    from heads import HEADS
    from mrc.model import checkpoint
    from mrc.model.encoder import tiny_bert
    from mrc.model.span_model import SpanModel

    torch.manual_seed(seed)
    enc = tiny_bert(texts=FIXTURE_TEXTS, layers=2, hidden_size=32, heads=2, intermediate_size=64, max_position=128,
                    seed=seed)
    target, options = HEAD_TARGETS[head]
    model = SpanModel(enc.model, HEADS[head](enc.hidden_size, **options))
    cfg = OmegaConf.create({"head": {"_target_": target, **options}, "model": {"match_feature": False},
                            "data": {"max_len": 64, "max_query_len": 16, "doc_stride": 16},
                            "decode": {"max_answer_len": 16, "n_best": 5, "null_threshold": None,
                                       "tune_on": "checklist", "save_nbest": False}})
    return checkpoint.save(path, model, enc.tokenizer, cfg)


def squad_file(path: Path) -> Path:
    """A small SQuAD-format file with answers over the sample texts (for experiments/inference/measure.py)."""
    import json

    def qa(qid, question, context, text):
        return {"id": qid, "question": question, "answers": [{"text": text, "answer_start": context.index(text)}]}

    capital, novel = FIXTURE_TEXTS[1], FIXTURE_TEXTS[2]
    paras = [{"context": capital, "qas": [qa("a", "中国的首都是哪里？", capital, "北京")]},
             {"context": novel, "qas": [qa("b", "《红楼梦》的作者是谁？", novel, "曹雪芹")]},
             {"context": CONTEXT, "qas": [qa("c", "Apple公司的电话是多少？", CONTEXT, "400-666-8800"),
                                          qa("d", "价格是多少？", CONTEXT, "６９９９元")]}]
    path.write_text(json.dumps({"data": [{"paragraphs": paras}]}, ensure_ascii=False), encoding="utf-8")
    return path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a server a test starts)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
