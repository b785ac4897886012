"""Unanswerable questions: threshold application and tuning (each head's null slot: test_heads.py)."""
from mrc.eval.metric import GoldQuestion
from mrc.eval.nulls import apply_threshold, tune_threshold

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
