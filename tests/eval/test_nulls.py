"""Unanswerable questions: threshold application and tuning (each head's null slot: tests/model/test_heads.py)."""
from mrc.eval.metric import GoldQuestion
from mrc.eval.nulls import apply_threshold, tune_threshold, tune_threshold_for_loss

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


def test_tune_for_answerable_loss_abstains_as_much_as_the_budget_allows():
    # answerable: diffs 2.0 (F1 0: wrong span), 1.0 (F1 1), -1.0 (F1 1), -3.0 (F1 1); unanswerable: 1.5, 0.5
    nbest = {q: {"null_score": d, "candidates": [{"text": "对", "score": 0.0}]}
             for q, d in {"w": 2.0, "r1": 1.0, "r2": -1.0, "r3": -3.0, "n1": 1.5, "n2": 0.5}.items()}
    nbest["w"]["candidates"][0]["text"] = "错"
    gold = [GoldQuestion(q, ("对",), False) for q in ("w", "r1", "r2", "r3")] + [
        GoldQuestion(q, (), True) for q in ("n1", "n2")]
    # budget 0: giving up "w" (F1 0) is free, "r1" is not: answer iff null - best <= 1.0
    t, lost = tune_threshold_for_loss(nbest, gold, 0.0)
    assert t == 1.0 and lost == 0.0
    assert apply_threshold(nbest, t) == {"w": "", "r1": "对", "r2": "对", "r3": "对", "n1": "", "n2": "对"}
    # 25 points of 4 answerable questions: one correct answer may go too, so n2 (0.5) is abstained as well
    t, lost = tune_threshold_for_loss(nbest, gold, 25.0)
    assert t == -1.0 and lost == 25.0 and apply_threshold(nbest, t)["n2"] == ""
    # the whole budget: abstain on everything
    t, lost = tune_threshold_for_loss(nbest, gold, 100.0)
    assert lost == 75.0 and set(apply_threshold(nbest, t).values()) == {""}
    # no answerable question: always answer
    assert tune_threshold_for_loss(nbest, gold[4:], 1.0) == (None, 0.0)


def test_tune_for_answerable_loss_keeps_ties_together():
    nbest = {q: {"null_score": 1.0, "candidates": [{"text": "x", "score": 0.0}]} for q in "pq"}
    gold = [GoldQuestion("p", ("x",), False), GoldQuestion("q", ("x",), False)]
    t, lost = tune_threshold_for_loss(nbest, gold, 50.0)  # one of the two would fit, but they share a diff
    assert t == 1.0 and lost == 0.0 and apply_threshold(nbest, t) == {"p": "x", "q": "x"}
