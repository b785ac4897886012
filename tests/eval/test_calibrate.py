"""Calibrators (mrc.eval.calibrate): temperature recovery, the feature calibrator, and loading saved ones as
plain data only."""
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.special import softmax

from mrc.eval.abstention import brier, ece
from mrc.eval.calibrate import (FEATURES, FeatureCalibrator, TemperatureScaler, answer_confidence, answer_confidences,
                                candidate_scores, features_of, gold_index, temperature_inputs, window_counts)
from mrc.eval.metric import GoldQuestion

# postprocess-shaped n-best entries (text, character offsets, raw score, window)
NBEST = {
    "q1": {"null_score": -1.0, "candidates": [{"text": "北京", "start": 0, "end": 2, "score": 3.0, "window": 0},
                                              {"text": "北京市", "start": 0, "end": 3, "score": 1.0, "window": 1}]},
    "q2": {"null_score": 2.0, "candidates": [{"text": "上海", "start": 5, "end": 7, "score": 0.5, "window": 0}]},
    "q3": {"null_score": 0.0, "candidates": []},
}
GOLD = [GoldQuestion("q1", ("北京市",), False), GoldQuestion("q2", (), True), GoldQuestion("q3", ("广州",), False)]
EXAMPLES = [SimpleNamespace(id="q1", question="首都是哪里？"), SimpleNamespace(id="q2", question="谁？"),
            SimpleNamespace(id="q3", question="Where is it?")]
WINDOWS = [SimpleNamespace(example_index=i) for i in (0, 0, 1, 2, 2, 2)]


def test_candidates_and_gold_index():
    np.testing.assert_array_equal(candidate_scores(NBEST["q1"]), [3.0, 1.0, -1.0])  # spans, then null last
    assert gold_index(NBEST["q1"], GOLD[0]) == 1  # "北京市" has F1 1, "北京" 0.8
    assert gold_index(NBEST["q2"], GOLD[1]) == 1  # unanswerable: the null slot
    assert gold_index(NBEST["q3"], GOLD[2]) is None  # the gold is not among the candidates
    scores, gold = temperature_inputs(NBEST, GOLD)
    assert [len(s) for s in scores] == [3, 2, 1] and gold == [1, 1, None]
    with pytest.raises(ValueError, match="NaN or infinite"):
        candidate_scores({"null_score": float("inf"), "candidates": []})


def synthetic(temperature: float, n: int = 4000, seed: int = 0):
    """Score lists of 3..10 candidates whose labels are drawn from softmax(scores / temperature)."""
    rng = np.random.default_rng(seed)
    scores, labels = [], []
    for _ in range(n):
        s = rng.normal(0.0, 4.0, rng.integers(3, 11))
        scores.append(s)
        labels.append(int(rng.choice(s.size, p=softmax(s / temperature))))
    return scores, labels


def test_temperature_is_recovered():
    scores, labels = synthetic(2.5)
    scaler = TemperatureScaler().fit(scores, labels)
    assert scaler.temperature == pytest.approx(2.5, rel=0.10)
    raw = TemperatureScaler(1.0)
    assert scaler.nll(scores, labels) < raw.nll(scores, labels)

    def top_ece(t):  # confidence = the top candidate's probability, correct = it is the drawn label
        probs = [t.confidence(s) for s in scores]
        return ece([p.max() for p in probs], [float(p.argmax() == y) for p, y in zip(probs, labels)])

    assert top_ece(scaler) < top_ece(raw) / 2


def test_temperature_fit_skips_untargeted_questions_and_refuses_bad_input():
    scores, labels = synthetic(2.5, n=500)
    fitted = TemperatureScaler().fit(scores, labels).temperature
    assert TemperatureScaler().fit(scores + [[1.0, 2.0]], labels + [None]).temperature == pytest.approx(fitted)
    with pytest.raises(ValueError, match="no question"):
        TemperatureScaler().fit([[1.0, 2.0]], [None])
    with pytest.raises(ValueError, match="score lists"):
        TemperatureScaler().fit([[1.0, 2.0]], [0, 1])
    with pytest.raises(ValueError, match="finite"):
        TemperatureScaler().fit([[1.0, float("nan")]], [0])
    with pytest.raises(ValueError, match="gold index"):
        TemperatureScaler().fit([[1.0, 2.0]], [2])
    with pytest.raises(ValueError, match="finite"):
        TemperatureScaler().confidence([])


def test_temperature_round_trip_and_bad_dicts():
    scaler = TemperatureScaler(2.0)
    loaded = TemperatureScaler.from_dict(json.loads(json.dumps(scaler.to_dict())))
    assert loaded.temperature == 2.0
    np.testing.assert_allclose(loaded.confidence([2.0, 0.0]), softmax([1.0, 0.0]))
    for bad in ({"kind": "temperature", "temperature": -1.0}, {"kind": "temperature", "temperature": math.nan},
                {"kind": "temperature", "temperature": math.inf}, {"kind": "temperature", "temperature": "2"},
                {"kind": "temperature", "temperature": True}, {"kind": "temperature"},
                {"kind": "feature_logistic", "temperature": 2.0}, [2.0]):
        with pytest.raises(ValueError):
            TemperatureScaler.from_dict(bad)


def test_answer_confidence():
    probs = softmax([3.0, 1.0, -1.0])
    assert answer_confidence(NBEST["q1"], "北京", probs) == pytest.approx(probs[0])
    assert answer_confidence(NBEST["q1"], "", probs) == pytest.approx(probs[2])  # abstaining: the null slot
    dup = {"null_score": 0.0, "candidates": [{"text": "x", "score": 1.0}, {"text": "x", "score": 1.0}]}
    assert answer_confidence(dup, "x", softmax([1.0, 1.0, 0.0])) == pytest.approx(2 * math.e / (2 * math.e + 1))
    conf = answer_confidences(NBEST, {"q1": "北京", "q2": "", "q3": ""})
    assert conf["q2"] == pytest.approx(softmax([0.5, 2.0])[1]) and conf["q3"] == 1.0
    assert answer_confidences(NBEST)["q2"] == pytest.approx(softmax([0.5, 2.0])[0])  # always answering


def test_features_of_hand_computed():
    assert window_counts(EXAMPLES, WINDOWS) == {"q1": 2, "q2": 1, "q3": 3}
    ids, X = features_of(NBEST, EXAMPLES, WINDOWS, predictions={"q1": "北京", "q2": "", "q3": ""})
    assert ids == ["q1", "q2", "q3"] and X.shape == (3, len(FEATURES))
    p_best = math.exp(3) / (math.exp(3) + math.exp(1) + math.exp(-1))  # = 0.86681, T = 1
    # best, null, best - null, best - 2nd, p_best, span chars, windows, question chars, abstained, abstained * margin
    np.testing.assert_allclose(X[0], [3.0, -1.0, 4.0, 2.0, p_best, 2, 2, 6, 0, 0])
    np.testing.assert_allclose(X[1], [0.5, 2.0, -1.5, 0.0, softmax([0.5, 2.0])[0], 2, 1, 2, 1, -1.5])
    np.testing.assert_allclose(X[2], [0.0, 0.0, 0.0, 0.0, 0.0, 0, 3, 12, 1, 0.0])  # no span candidate
    # without predictions the best span is returned (nothing abstains); a fitted scaler changes p_best only
    _, X2 = features_of(NBEST, EXAMPLES, WINDOWS, scaler=TemperatureScaler(2.0))
    assert X2[0, 4] == pytest.approx(softmax([1.5, 0.5, -0.5])[0]) and X2[1, 8] == 0.0
    with pytest.raises(ValueError, match="no n-best"):
        features_of({}, EXAMPLES, WINDOWS)


def separable(n: int = 600, seed: int = 0):
    """Features (n, 3) whose first two columns decide right (F1 1) or wrong (F1 0), the third is noise."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3)) * [1.0, 3.0, 10.0] + [0.0, 5.0, 0.0]
    f1 = ((X[:, 0] + (X[:, 1] - 5.0) / 3.0) > 0.3).astype(float)
    return X, f1


def test_feature_calibrator_beats_a_constant_and_round_trips():
    X, f1 = separable()
    calib = FeatureCalibrator(feature_names=None).fit(X, f1)
    p = calib.predict_proba(X)
    assert p.shape == (600,) and brier(p, f1) < 0.5 * brier(np.full(600, f1.mean()), f1)
    X_test, f1_test = separable(seed=1)  # and on fresh data from the same distribution
    assert brier(calib.predict_proba(X_test), f1_test) < 0.5 * brier(np.full(600, f1.mean()), f1_test)
    saved = json.loads(json.dumps(calib.to_dict(), allow_nan=False))
    assert saved["feature_names"] == ["x0", "x1", "x2"] and len(saved["coef"]) == 3
    loaded = FeatureCalibrator.from_dict(saved)
    np.testing.assert_array_equal(loaded.predict_proba(X_test), calib.predict_proba(X_test))


def test_feature_calibrator_binarises_f1_at_its_threshold():
    X, f1 = separable()
    soft = np.where(f1 == 1.0, 0.6, 0.4)  # F1 0.6 is right at the default 0.5, wrong at 0.7
    np.testing.assert_allclose(FeatureCalibrator(feature_names=None).fit(X, soft).predict_proba(X),
                               FeatureCalibrator(feature_names=None).fit(X, f1).predict_proba(X))
    with pytest.raises(ValueError, match="both right and wrong"):
        FeatureCalibrator(feature_names=None, f1_threshold=0.7).fit(X, soft)


def test_feature_calibrator_on_the_real_feature_matrix():
    _, X = features_of(NBEST, EXAMPLES, WINDOWS, predictions={"q1": "北京", "q2": "", "q3": ""})
    calib = FeatureCalibrator().fit(X, [0.8, 1.0, 0.0])
    assert FeatureCalibrator.from_dict(calib.to_dict()).feature_names == list(FEATURES)
    with pytest.raises(ValueError, match=r"\(N, 10\)"):
        calib.predict_proba(X[:, :9])
    with pytest.raises(ValueError, match="NaN"):
        calib.predict_proba(np.where(np.eye(3, 10) == 1, np.nan, X))
    with pytest.raises(ValueError, match="not fitted"):
        FeatureCalibrator().predict_proba(X)


@pytest.mark.parametrize("change", [
    {"coef": [1.0, 2.0]},  # wrong shape
    {"mean": [0.0, math.nan, 0.0]},
    {"scale": [1.0, 0.0, 1.0]},
    {"scale": [1.0, math.inf, 1.0]},
    {"intercept": math.inf},
    {"intercept": "0"},
    {"coef": [1.0, "2", 3.0]},
    {"coef": [[1.0, 2.0, 3.0]]},
    {"feature_names": "x0"},
    {"feature_names": []},
    {"kind": "temperature"},
    {"C": -1.0},
])
def test_feature_calibrator_refuses_bad_dicts(change):
    X, f1 = separable(n=100)
    saved = FeatureCalibrator(feature_names=None).fit(X, f1).to_dict()
    with pytest.raises(ValueError):
        FeatureCalibrator.from_dict({**saved, **change})
