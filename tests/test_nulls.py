"""Unanswerable questions: threshold application and tuning, and each head's null slot."""
import pytest
import torch

from heads.base import top_spans
from heads.globalpointer import EfficientGlobalPointer, GlobalPointer
from heads.softmax import SoftmaxHead
from mrc.metric import GoldQuestion
from mrc.nulls import apply_threshold, tune_threshold

NBEST = {
    "a": {"null_score": -5.0, "candidates": [{"text": "北京", "score": -1.0}]},   # diff -4
    "b": {"null_score": -0.5, "candidates": [{"text": "上海", "score": -2.0}]},   # diff 1.5
    "c": {"null_score": -1.0, "candidates": [{"text": "广州", "score": -1.5}]},   # diff 0.5
    "d": {"null_score": 0.0, "candidates": []},
}
GOLD = [GoldQuestion("a", ("北京",), False), GoldQuestion("b", (), True), GoldQuestion("c", ("广州",), False),
        GoldQuestion("d", (), True)]


def test_apply_threshold():
    assert apply_threshold(NBEST, None) == {"a": "北京", "b": "上海", "c": "广州", "d": ""}
    assert apply_threshold(NBEST, 1.0) == {"a": "北京", "b": "", "c": "广州", "d": ""}
    assert apply_threshold(NBEST, 0.0) == {"a": "北京", "b": "", "c": "", "d": ""}


def test_tune_threshold_finds_the_best_cut():
    t, f1 = tune_threshold(NBEST, GOLD)
    assert 0.5 <= t < 1.5 and f1 == 100.0
    assert apply_threshold(NBEST, t) == {"a": "北京", "b": "", "c": "广州", "d": ""}


def test_tune_threshold_handles_ties():
    nbest = {q: {"null_score": 0.0, "candidates": [{"text": "x", "score": 0.0}]} for q in "pq"}
    gold = [GoldQuestion("p", ("x",), False), GoldQuestion("q", (), True)]  # same diff: all or nothing
    t, f1 = tune_threshold(nbest, gold)
    assert f1 == 50.0 and apply_threshold(nbest, t) in ({"p": "x", "q": "x"}, {"p": "", "q": ""})


MASK = torch.tensor([[True, False, False, True, True, True, False]])


@pytest.mark.parametrize("make", [lambda: SoftmaxHead(16), lambda: GlobalPointer(16, head_size=8),
                                  lambda: GlobalPointer(16, head_size=8, loss="multilabel"),
                                  lambda: EfficientGlobalPointer(16, head_size=8)])
def test_every_head_learns_the_null_slot(make):
    """Trained on 'no answer' windows, every head's null score beats its best span (predicts "")."""
    torch.manual_seed(0)
    head = make()
    hidden = torch.randn(4, 7, 16)
    mask = MASK.repeat(4, 1)
    labels = torch.zeros(4, 1, 2, dtype=torch.long)
    opt = torch.optim.Adam(head.parameters(), 0.05)
    for _ in range(60):
        loss = head.loss(head(hidden, mask), mask, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    _, _, scores, null = top_spans(head.span_scores(head(hidden, mask), mask, None), 1)
    assert (null > scores[:, 0]).all()
    nbest = {str(i): {"null_score": float(null[i]), "candidates": [{"text": "x", "score": float(scores[i, 0])}]}
             for i in range(4)}
    assert set(apply_threshold(nbest, 0.0).values()) == {""}
