"""The confidence of every returned answer at inference (``python -m mrc predict``, ``python -m mrc.serve``), from
the calibrators a training run fitted on its held-out calibration split and stored in the checkpoint
(``calibration.json``, :func:`mrc.model.checkpoint.read_calibration`).

The method is the best the checkpoint has: ``features`` (the feature calibrator, :class:`FeatureCalibrator`) >
``temperature`` (softmax over the n-best and the null at the fitted T) > ``raw`` (the same at T = 1: a checkpoint
without calibration.json). The numbers are those of :func:`mrc.eval.selective.confidences`, which the run's
``metrics.json`` reports, so a served confidence means what the abstention figures measured.

``min_confidence`` turns an answer whose confidence is below it into "" (abstaining); its confidence stays that
of the answer withheld, so a caller can see how far below the bar it was.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace

from mrc.eval.calibrate import FEATURES, TemperatureScaler, candidate_scores
from mrc.eval.selective import calibrators_from, confidences
from mrc.model.checkpoint import CALIBRATION_FILE, CheckpointError, read_calibration

METHODS = ("features", "temperature", "raw")  # best first
_EMPTY = {"null_score": 0.0, "candidates": []}  # stands in for a question whose scores are not finite


def _finite(entry: Mapping) -> bool:
    """Whether a question's n-best and null scores are all finite (what the calibrators accept)."""
    try:
        candidate_scores(entry)
    except ValueError:
        return False
    return True


class AnswerConfidence:
    """A checkpoint's calibrators (``{"temperature": ..., "features": ...}``, either or none) and the method they
    give."""

    def __init__(self, calibrators: Mapping | None = None):
        self.calibrators = dict(calibrators or {})
        self.method = next((m for m in METHODS if m in self.calibrators), "raw")

    @property
    def temperature(self) -> float:
        """T of the softmax over a question's candidates (1 without a fitted temperature)."""
        scaler = self.calibrators.get("temperature")
        return scaler.temperature if scaler is not None else 1.0

    def of(self, nbest: Mapping[str, Mapping], examples: Sequence, windows: Sequence,
           predictions: Mapping[str, str]) -> dict[str, float]:
        """Confidence in [0, 1] of each question's returned answer (``predictions``), by :attr:`method`;
        ``examples`` / ``windows``: those the n-best was decoded from (the features count windows)."""
        broken = {qid for qid, entry in nbest.items() if not _finite(entry)}
        # One question with NaN scores (a diverged ONNX graph, an overflow) must not fail the others: it is
        # scored on an empty stand-in and then given confidence 0, so that any min_confidence withholds it.
        safe = {qid: (_EMPTY if qid in broken else entry) for qid, entry in nbest.items()}
        split = SimpleNamespace(examples=examples, windows=windows)
        conf = confidences({"nbest": safe, "predictions": predictions}, split, self.calibrators)[self.method]
        return {qid: 0.0 if qid in broken else min(1.0, max(0.0, float(c))) for qid, c in conf.items()}

    def probabilities(self, entry: Mapping) -> tuple[list[float], float]:
        """(probability of each n-best candidate, of the null answer): softmax over the question's candidate
        scores and null score at :attr:`temperature`; zeros when the scores are not finite."""
        if not _finite(entry):
            return [0.0] * len(entry["candidates"]), 0.0
        scaler = self.calibrators.get("temperature") or TemperatureScaler()
        probs = scaler.confidence(candidate_scores(entry)).tolist()
        return probs[:-1], probs[-1]


def withhold(predictions: Mapping[str, str], conf: Mapping[str, float],
             min_confidence: float) -> tuple[dict[str, str], set[str]]:
    """(answers, ids abstained): each answer whose confidence is below ``min_confidence`` becomes ""."""
    abstained = {qid for qid, a in predictions.items() if a != "" and conf.get(qid, 0.0) < min_confidence}
    return {qid: ("" if qid in abstained else a) for qid, a in predictions.items()}, abstained


def check_min_confidence(value) -> str | None:
    """Why ``value`` is not a valid minimum confidence (a finite number from 0 to 1), or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{value!r} is not a number"
    if not math.isfinite(value) or not 0 <= value <= 1:
        return f"{value!r} is outside 0..1 (0: always answer; 0.5: answer when at least even odds)"
    return None


def load_confidence(path: str | Path) -> AnswerConfidence:
    """The calibrators of the checkpoint at ``path`` (``calibration.json``; raw confidence without one), each
    checked; a broken file is a :class:`CheckpointError` in one line."""
    file = Path(path) / CALIBRATION_FILE
    data = read_calibration(path)  # not JSON, not an object, too large: CheckpointError already
    try:
        calibrators = calibrators_from(data)
        features = calibrators.get("features")
        # A calibrator fitted on another feature list would score columns it was not fitted on.
        if features is not None and features.feature_names != list(FEATURES):
            raise ValueError(f"features: fitted on the features {features.feature_names}, this version computes "
                             f"{list(FEATURES)}")
    except (ValueError, TypeError, AttributeError) as e:
        why = " ".join(str(e).split())[:300]
        raise CheckpointError(f"{file}: {why}; the file was edited or is not from this project: restore it, or "
                              "delete it to serve the raw confidence") from None
    return AnswerConfidence(calibrators)
