"""Selective answering for a run's scored splits: the confidence of every returned answer (raw, temperature-
scaled, feature-calibrated) and the abstention metrics per split and on a mixed pool of splits.

The calibrators are fitted on the ``calibration`` split only (a slice held out of the *training* questions,
``data.calibration_share``); without one, only the raw confidence (softmax over the n-best and the null at
T = 1) is reported. Never fitted on a split that is then reported: the calibration split itself is left out
of the pool, and its own figures are in-sample.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from mrc.eval.abstention import abstention_summary, aurc, paired_bootstrap
from mrc.eval.calibrate import (FeatureCalibrator, TemperatureScaler, answer_confidences, features_of,
                                temperature_inputs)

log = logging.getLogger(__name__)
CALIBRATION = "calibration"  # the split name of the held-out training slice (mrc.train.inputs)
METHODS = ("raw", "temperature", "features")


def fit_calibrators(result: Mapping, split) -> dict:
    """Temperature and feature calibrators fitted on one scored split (``result``: evaluate_split's output)."""
    scaler = TemperatureScaler().fit(*temperature_inputs(result["nbest"], split.gold))
    ids, x = features_of(result["nbest"], split.examples, split.windows, result["predictions"], scaler)
    target = np.array([result["per_question"][i]["f1"] for i in ids])
    fitted = {"temperature": scaler}
    if 0 < (target >= 0.5).sum() < len(target):  # logistic regression needs both classes
        fitted["features"] = FeatureCalibrator().fit(x, target)
    log.info("calibrators fitted on split %s (%d questions): temperature %.3f%s", split.name, len(ids),
             scaler.temperature, "" if "features" in fitted else "; features: one class only, not fitted")
    return fitted


def confidences(result: Mapping, split, fitted: Mapping) -> dict[str, dict[str, float]]:
    """Per method, the confidence of each returned answer of one split (question id -> [0, 1])."""
    nbest, preds = result["nbest"], result["predictions"]
    out = {"raw": answer_confidences(nbest, preds)}
    if "temperature" in fitted:
        out["temperature"] = answer_confidences(nbest, preds, fitted["temperature"])
    if "features" in fitted:
        ids, x = features_of(nbest, split.examples, split.windows, preds, fitted.get("temperature"))
        out["features"] = dict(zip(ids, fitted["features"].predict_proba(x).tolist()))
    return out


def _arrays(split, result: Mapping, conf: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(confidence, F1, has_answer), each (N,), over the split's gold questions that were scored."""
    gold = [g for g in split.gold if g.id in conf and g.id in result["per_question"]]
    return (np.array([conf[g.id] for g in gold]), np.array([result["per_question"][g.id]["f1"] for g in gold]),
            np.array([not g.is_impossible for g in gold]))


def add_confidences(results: dict, splits: Mapping) -> dict:
    """Fit the calibrators on the calibration split (when scored), then add ``confidence`` (per method) to
    every split's result and ``abstention`` (per method) to its summary; returns the calibrators as plain data
    (``{method: to_dict()}``, {} without a calibration split) for the checkpoint."""
    fitted = fit_calibrators(results[CALIBRATION], splits[CALIBRATION]) if CALIBRATION in results else {}
    for name, r in results.items():
        r["confidence"] = confidences(r, splits[name], fitted)
        r["summary"]["abstention"] = {m: abstention_summary(*_arrays(splits[name], r, c))
                                      for m, c in r["confidence"].items()}
        if "temperature" in fitted:
            r["summary"]["abstention"]["temperature"]["T"] = fitted["temperature"].temperature
        if name == CALIBRATION:
            r["summary"]["abstention"]["in_sample"] = True  # the calibrators were fitted here
    return {method: calibrator.to_dict() for method, calibrator in fitted.items()}


def pool_summary(results: Mapping, splits: Mapping, pool: Sequence[str], seed: int = 0) -> dict | None:
    """The abstention metrics of the mixed pool of splits ``pool`` (the calibration split never counts), per
    method, with a paired bootstrap of each calibrated method's AURC against the raw confidence's; None when
    no pool split was scored (:func:`add_confidences` first)."""
    names = [n for n in pool if n in results and n != CALIBRATION and "confidence" in results[n]]
    if not names:
        return None
    out, per_method = {"splits": names}, {}
    for method in results[names[0]]["confidence"]:
        parts = [_arrays(splits[n], results[n], results[n]["confidence"][method]) for n in names]
        per_method[method] = tuple(np.concatenate(p) for p in zip(*parts))
        out[method] = abstention_summary(*per_method[method])
    raw = per_method["raw"][0]
    for method, (conf, f1, _) in per_method.items():
        if method != "raw":
            test = paired_bootstrap(aurc, (conf, f1), (raw, f1), n=1000, seed=seed)
            out[method]["aurc_vs_raw"] = {k: round(v, 5) if isinstance(v, float) else v for k, v in test.items()}
    return out


def calibrators_from(data: Mapping | None) -> dict:
    """Calibrators rebuilt from a checkpoint's ``calibration.json`` data (each part checked; {} for None)."""
    kinds = {"temperature": TemperatureScaler, "features": FeatureCalibrator}
    if not data:
        return {}
    unknown = sorted(set(data) - set(kinds))
    if unknown:
        raise ValueError(f"unknown calibrators {unknown}; known: {sorted(kinds)}")
    return {method: kinds[method].from_dict(part) for method, part in data.items()}
