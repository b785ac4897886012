"""``python -m mrc abstention``: the pool table, the split table and the plots of a run."""
import json

import numpy as np

from mrc.report.abstention import main, reliability, risk_curve


def test_risk_curve_answers_the_most_confident_first():
    conf, f1 = np.array([0.2, 0.9, 0.5]), np.array([1.0, 0.0, 1.0])
    coverage, risk = risk_curve(conf, f1)
    # order 0.9 (F1 0), 0.5 (1), 0.2 (1): mean F1 0, 1/2, 2/3
    assert np.allclose(coverage, [1 / 3, 2 / 3, 1]) and np.allclose(risk, [1, 0.5, 1 / 3])


def test_reliability_uses_equal_mass_bins():
    conf, f1 = np.array([0.1, 0.2, 0.8, 0.9]), np.array([0.0, 1.0, 1.0, 1.0])
    mean_conf, mean_f1 = reliability(conf, f1, bins=2)
    assert np.allclose(mean_conf, [0.15, 0.85]) and np.allclose(mean_f1, [0.5, 1.0])


def _summary(ece):
    return {"n": 4, "f1": 0.5, "ece": ece, "macro_ce": 0.3, "brier": 0.2, "aurc": 0.25, "coverage_at_80": 0.5,
            "coverage_at_90": 0.25}


def test_report_tables_and_plots(tmp_path):
    run = tmp_path / "egp_neg"
    (run / "confidence").mkdir(parents=True)
    (run / "scores").mkdir()
    metrics = {"splits": {"in_domain": {"F1": 70.0, "EM": 55.0, "HasAns": {"F1": 70.0}, "null_threshold": 1.5,
                                        "null_threshold_tuned_on": "calibration",
                                        "abstention": {"raw": _summary(0.2), "temperature": _summary(0.04)}}},
               "abstention": {"splits": ["in_domain"], "raw": _summary(0.2),
                              "temperature": {**_summary(0.04), "aurc_vs_raw": {"delta": -0.02, "ci_low": -0.03,
                                                                                "ci_high": -0.01, "p_value": 0.004}}}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "scores" / "in_domain.json").write_text(json.dumps({f"q{i}": {"f1": i % 2, "em": i % 2} for i in range(4)}))
    (run / "confidence" / "in_domain.json").write_text(json.dumps(
        {"raw": {f"q{i}": 0.2 * i for i in range(4)}, "temperature": {f"q{i}": 0.1 + 0.2 * i for i in range(4)}}))
    assert main([str(run), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "abstention.md").read_text()
    assert "| egp_neg | temperature | 4 | 50.0 | 0.0400 |" in text and "-0.0200 [-0.0300, -0.0100], p 0.004" in text
    assert "| egp_neg | in_domain | 70.00 | 55.00 | 70.0 | – | 1.500 (calibration) | 0.0400 |" in text
    assert (tmp_path / "out" / "abstention_egp_neg.png").stat().st_size > 1000
