"""Confidence of returned answers and abstention metrics wired over a run's splits (mrc/eval/selective.py)."""
from types import SimpleNamespace

import numpy as np
import pytest

from mrc.eval.metric import GoldQuestion
from mrc.eval.selective import CALIBRATION, add_confidences, pool_summary


def fake_split(name: str, n: int, rng, scale: float):
    """n questions, half unanswerable; the model's best-span margin over null tracks answerability (noisy),
    and its scores are ``scale`` times too confident."""
    gold, examples, windows, nbest, preds, per_q = [], [], [], {}, {}, {}
    for i in range(n):
        qid, answerable = f"{name}-{i}", i % 2 == 0
        gold.append(GoldQuestion(qid, ("北京",) if answerable else (), not answerable))
        examples.append(SimpleNamespace(id=qid, question="哪里?"))
        windows.append(SimpleNamespace(example_index=i))
        margin = rng.normal(1.0 if answerable else -1.0, 1.0)
        right = rng.random() < 0.8
        cands = [{"text": "北京" if right else "上海", "score": scale * margin, "start": 0, "end": 1, "window": 0},
                 {"text": "上海" if right else "北京", "score": scale * (margin - 1.0), "start": 2, "end": 3,
                  "window": 0}]
        nbest[qid] = {"null_score": 0.0, "candidates": cands}
        preds[qid] = cands[0]["text"]
        f1 = float(answerable and right)
        per_q[qid] = {"f1": f1, "em": f1}
    split = SimpleNamespace(name=name, gold=gold, examples=examples, windows=windows)
    return split, {"nbest": nbest, "predictions": preds, "per_question": per_q, "summary": {}}


@pytest.fixture()
def scored():
    rng = np.random.default_rng(0)
    pairs = {n: fake_split(n, 200, rng, 6.0) for n in (CALIBRATION, "in_domain", "checklist")}
    return {n: p[1] for n, p in pairs.items()}, {n: p[0] for n, p in pairs.items()}


def test_every_split_gets_each_methods_confidence_and_metrics(scored):
    results, splits = scored
    add_confidences(results, splits)
    for name, r in results.items():
        assert set(r["confidence"]) == {"raw", "temperature", "features"}
        assert set(r["confidence"]["raw"]) == {g.id for g in splits[name].gold}
        assert all(0.0 <= c <= 1.0 for c in r["confidence"]["temperature"].values())
        ab = r["summary"]["abstention"]
        assert {"ece", "macro_ce", "brier", "aurc", "coverage_at_80", "coverage_at_90", "has_ans_f1"} <= set(ab["raw"])
    assert results[CALIBRATION]["summary"]["abstention"]["in_sample"] is True
    assert "in_sample" not in results["in_domain"]["summary"]["abstention"]
    # scores 6x too confident: the fitted temperature is well above 1 and lowers ECE on a split it never saw
    assert results["in_domain"]["summary"]["abstention"]["temperature"]["T"] > 2
    ece = {m: results["in_domain"]["summary"]["abstention"][m]["ece"] for m in ("raw", "temperature")}
    assert ece["temperature"] < ece["raw"]


def test_without_a_calibration_split_only_raw_confidence(scored):
    results, splits = scored
    del results[CALIBRATION], splits[CALIBRATION]
    add_confidences(results, splits)
    assert set(results["in_domain"]["confidence"]) == {"raw"}


def test_calibrators_never_see_evaluation_questions(scored, monkeypatch):
    results, splits = scored
    seen = []
    import mrc.eval.selective as sel
    real = sel.fit_calibrators
    monkeypatch.setattr(sel, "fit_calibrators", lambda r, s: seen.append(s.name) or real(r, s))
    add_confidences(results, splits)
    assert seen == [CALIBRATION]


def test_pool_is_the_named_eval_splits_with_bootstrap_against_raw(scored):
    results, splits = scored
    add_confidences(results, splits)
    pool = pool_summary(results, splits, ["in_domain", "generalization", "checklist", CALIBRATION])
    assert pool["splits"] == ["in_domain", "checklist"]  # unscored and calibration splits never count
    assert pool["raw"]["n"] == 400 and pool["raw"]["n_no_ans"] == 200
    for method in ("temperature", "features"):
        test = pool[method]["aurc_vs_raw"]
        assert 0 < test["p_value"] <= 1 and test["ci_low"] <= test["delta"] <= test["ci_high"]
    assert pool_summary(results, splits, ["generalization"]) is None
