"""Abstention metrics (mrc.eval.abstention) against hand-computed cases, edge cases and tie handling."""
import itertools
import json

import numpy as np
import pytest

from mrc.eval.abstention import (abstention_summary, aurc, brier, coverage_at, ece, macro_ce, paired_bootstrap,
                                 risk_coverage)

# The running example: four questions, already sorted by confidence (descending).
CONF = [0.9, 0.8, 0.3, 0.2]
F1 = [1.0, 0.5, 0.0, 1.0]


def test_ece_hand_computed():
    # 2 bins by ascending confidence: {0.2: 1, 0.3: 0} and {0.8: 0.5, 0.9: 1}
    #   |0.25 - 0.5| * 2/4 = 0.125 ;  |0.85 - 0.75| * 2/4 = 0.05  -> 0.175
    assert ece(CONF, F1, n_bins=2) == pytest.approx(0.175)
    # 15 bins > 4 questions: one question per bin: (0.8 + 0.3 + 0.3 + 0.1) / 4 = 0.375
    assert ece(CONF, F1) == pytest.approx(0.375)
    # 5 questions, 2 equal-mass bins of sizes 3 and 2:
    #   {0.1, 0.2, 0.3} vs {0, 0, 1}: |0.2 - 1/3| * 3/5 = 0.08 ;  {0.4, 0.5} vs {1, 1}: |0.45 - 1| * 2/5 = 0.22
    assert ece([0.5, 0.4, 0.3, 0.2, 0.1], [1, 1, 1, 0, 0], n_bins=2) == pytest.approx(0.30)


def test_ece_ties_share_their_mean():
    # Four tied confidences 0.5, two right: the tie group's mean correctness 0.5 fills both bins -> 0,
    # in every input order (sorting the ties by correctness would give 0.5, the input order 0 or 0.5).
    for correct in itertools.permutations([1, 1, 0, 0]):
        assert ece([0.5] * 4, correct, n_bins=2) == pytest.approx(0.0)
    # A tie group cut by the bin edge: confs (0.1, 0.5, 0.5, 0.9), correct (0, 1, 0, 1), 2 bins:
    #   {0.1: 0, 0.5: 0.5} -> |0.3 - 0.25| * 0.5 = 0.025 ; {0.5: 0.5, 0.9: 1} -> |0.7 - 0.75| * 0.5 = 0.025
    assert ece([0.1, 0.5, 0.5, 0.9], [0, 1, 0, 1], n_bins=2) == pytest.approx(0.05)
    assert ece([0.9, 0.5, 0.1, 0.5], [1, 0, 0, 1], n_bins=2) == pytest.approx(0.05)


def test_macro_ce_hand_computed():
    # right (F1 >= 0.5): confs 0.9, 0.8, 0.2 -> ICE_pos = (0.1 + 0.2 + 0.8) / 3 = 0.36667
    # wrong: conf 0.3 -> ICE_neg = 0.3 ;  MacroCE = (0.36667 + 0.3) / 2 = 0.33333
    assert macro_ce(CONF, F1) == pytest.approx(1 / 3)
    # threshold 0.6 makes the 0.5 answer wrong: ICE_pos = (0.1 + 0.8) / 2 = 0.45, ICE_neg = (0.8 + 0.3) / 2 = 0.55
    assert macro_ce(CONF, F1, threshold=0.6) == pytest.approx(0.5)


def test_brier_hand_computed():
    # (0.9-1)^2 + (0.8-0.5)^2 + (0.3-0)^2 + (0.2-1)^2 = 0.01 + 0.09 + 0.09 + 0.64 = 0.83 ; / 4
    assert brier(CONF, F1) == pytest.approx(0.2075)
    assert brier([1, 0], [1, 0]) == 0.0


def test_risk_coverage_and_aurc_hand_computed():
    # top-k mean F1: 1, 0.75, 0.5, 0.625 -> risk 0, 0.25, 0.5, 0.375 ; AURC = 1.125 / 4 = 0.28125
    coverage, risk = risk_coverage(CONF, F1)
    np.testing.assert_allclose(coverage, [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(risk, [0.0, 0.25, 0.5, 0.375])
    assert aurc(CONF, F1) == pytest.approx(0.28125)
    # the input order does not matter
    assert aurc(CONF[::-1], F1[::-1]) == pytest.approx(0.28125)


def test_coverage_at_hand_computed():
    # selective F1 at k = 1..4: 1, 0.75, 0.5, 0.625
    assert coverage_at(CONF, F1, 0.8) == 0.25
    assert coverage_at(CONF, F1, 0.7) == 0.5
    assert coverage_at(CONF, F1, 0.6) == 1.0  # the largest coverage, although k = 3 misses the target
    assert coverage_at(CONF, F1, 1.0) == 0.25
    assert coverage_at(CONF, [0.0] * 4, 0.5) == 0.0


def test_ties_are_grouped_in_the_curve():
    # confs 0.9 | 0.5 0.5 | 0.1 with F1 1 | 1 0 | 0: the tie shares its mean 0.5 ->
    # cumulative 1, 1.5, 2, 2 -> risk 0, 0.25, 1/3, 0.5
    conf, f1 = [0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0]
    np.testing.assert_allclose(risk_coverage(conf, f1)[1], [0, 0.25, 1 / 3, 0.5])
    np.testing.assert_allclose(risk_coverage(conf, [1, 0, 1, 0])[1], [0, 0.25, 1 / 3, 0.5])
    # = the mean over both orders of the tie: risk at k=2 is 0 or 0.5
    brute = np.mean([1 - np.cumsum(order) / np.arange(1, 5) for order in ([1, 1, 0, 0], [1, 0, 1, 0])], axis=0)
    np.testing.assert_allclose(risk_coverage(conf, f1)[1], brute)
    # a threshold cannot split the tie: k = 2 (selective F1 0.75) is not a reachable coverage
    assert coverage_at(conf, f1, 0.7) == 0.25
    assert coverage_at(conf, f1, 0.6) == 0.75


def test_every_metric_is_independent_of_input_order():
    rng = np.random.default_rng(0)
    conf = rng.choice([0.1, 0.3, 0.5, 0.7, 0.9], size=60)  # many ties
    f1 = rng.choice([0.0, 0.4, 0.5, 1.0], size=60)
    ref = abstention_summary(conf, f1)
    for _ in range(20):
        p = rng.permutation(60)
        summary = abstention_summary(conf[p], f1[p])
        assert summary == pytest.approx(ref, rel=1e-12, abs=0)  # plain means differ in the last bit at most
        for key in ("ece", "aurc", "coverage_at_80", "coverage_at_90"):  # the tie-sensitive ones: bit-identical
            assert summary[key] == ref[key]
        np.testing.assert_array_equal(risk_coverage(conf[p], f1[p])[1], risk_coverage(conf, f1)[1])


def test_coverage_at_is_monotone_and_meets_its_target():
    rng = np.random.default_rng(1)
    conf = rng.random(200)
    f1 = (rng.random(200) < conf).astype(float)  # confident answers are right more often
    targets = np.linspace(0, 1, 21)
    covs = [coverage_at(conf, f1, t) for t in targets]
    assert covs[0] == 1.0 and all(a >= b for a, b in zip(covs, covs[1:]))
    order = np.argsort(-conf)
    for t, cov in zip(targets, covs):
        k = round(cov * 200)
        if k:
            assert f1[order[:k]].mean() >= t - 1e-12


@pytest.mark.parametrize("conf, f1, expected", [
    # N = 1
    ([0.7], [1.0], {"ece": 0.3, "brier": 0.09, "macro_ce": 0.3, "aurc": 0.0, "coverage_at_90": 1.0}),
    # all the same confidence: every metric sees the mean only; risk is 1 - mean F1 at every coverage
    ([0.6] * 4, [1, 1, 0, 1], {"ece": 0.15, "brier": (3 * 0.16 + 0.36) / 4, "macro_ce": (0.4 + 0.6) / 2,
                               "aurc": 0.25, "coverage_at_80": 0.0, "coverage_at_90": 0.0}),
    # all right, fully confident
    ([1.0] * 3, [1.0] * 3, {"ece": 0.0, "brier": 0.0, "macro_ce": 0.0, "aurc": 0.0, "coverage_at_90": 1.0}),
    # all wrong, confident: the worst case
    ([1.0] * 3, [0.0] * 3, {"ece": 1.0, "brier": 1.0, "macro_ce": 1.0, "aurc": 1.0, "coverage_at_80": 0.0}),
])
def test_edge_cases(conf, f1, expected):
    summary = abstention_summary(conf, f1)
    for key, value in expected.items():
        assert summary[key] == pytest.approx(value), key


@pytest.mark.parametrize("conf, f1, match", [
    ([0.5, float("nan")], [1, 0], "NaN"),
    ([0.5, 0.5], [1, float("inf")], "NaN or infinite"),
    ([0.5, 1.5], [1, 0], r"\[0, 1\]"),
    ([0.5], [1, 0], "length"),
    ([], [], "non-empty"),
    ([[0.5]], [[1]], "1-D"),
])
def test_bad_inputs_are_refused(conf, f1, match):
    for fn in (ece, macro_ce, brier, aurc, risk_coverage, abstention_summary):
        with pytest.raises(ValueError, match=match):
            fn(conf, f1)
    with pytest.raises(ValueError, match="n_bins"):
        ece([0.5], [1], n_bins=0)


def test_summary_keys_groups_and_json():
    has = np.array([True, True, False, True])
    s = abstention_summary(CONF, F1, has_answer=has)
    assert s["n"] == 4 and s["f1"] == pytest.approx(0.625) and s["aurc"] == pytest.approx(0.28125)
    assert s["coverage_at_80"] == 0.25 and s["coverage_at_90"] == 0.25
    assert s["n_has_ans"] == 3 and s["n_no_ans"] == 1
    assert s["has_ans_f1"] == pytest.approx(2.5 / 3) and s["no_ans_f1"] == 0.0
    json.dumps(s, allow_nan=False)
    assert abstention_summary(CONF, F1, has_answer=[1, 1, 1, 1])["no_ans_f1"] is None  # empty group: null
    with pytest.raises(ValueError, match="has_answer"):
        abstention_summary(CONF, F1, has_answer=[True, False])


def test_paired_bootstrap_hand_computed():
    # metric = mean; A is 1 and B is 0 on every question: every resample differs by exactly 1, so the CI is
    # [1, 1] and no shifted resample reaches |d* - 1| >= 1: p = 1 / (n + 1)
    r = paired_bootstrap(np.mean, ([1.0, 1.0, 1.0],), ([0.0, 0.0, 0.0],), n=99)
    assert (r["delta"], r["ci_low"], r["ci_high"], r["p_value"]) == (1.0, 1.0, 1.0, 0.01)
    # identical methods: delta 0 and p = 1
    r = paired_bootstrap(aurc, (CONF, F1), (CONF, F1), n=50)
    assert r["delta"] == 0.0 and r["p_value"] == 1.0


def test_paired_bootstrap_tells_good_from_bad_confidence():
    rng = np.random.default_rng(2)
    good = rng.random(300)
    f1 = (rng.random(300) < good).astype(float)  # good confidence is calibrated by construction
    bad = rng.random(300)  # unrelated to correctness
    r = paired_bootstrap(brier, (good, f1), (bad, f1), n=300, seed=3)
    assert r["delta"] < 0 and r["ci_high"] < 0 and r["p_value"] < 0.01
    assert r == paired_bootstrap(brier, (good, f1), (bad, f1), n=300, seed=3)  # seeded: reproducible
    assert r["ci_low"] <= r["delta"] <= r["ci_high"]
    with pytest.raises(ValueError, match="same N"):
        paired_bootstrap(brier, (good, f1), (bad[:10], f1[:10]))
