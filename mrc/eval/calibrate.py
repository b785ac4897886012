"""Confidence calibrators for the returned answers: temperature scaling over a question's candidates and a
logistic regression over per-question features (Kamath et al. 2020's calibrator, a linear one here).

Fit them on a held-out calibration set only (a slice held out of the training data, or a split that is
not reported), never on the evaluation data they are then scored on: the caller guarantees that, and a
calibrator fitted on the split it is reported on is an oracle, not a result. Fit one per model (head).

The inputs are what :func:`mrc.eval.inference.postprocess` produces: per question id an n-best entry
``{"null_score": float, "candidates": [{"text", "start", "end", "score", "window"}, ...]}`` ranked by score,
best first. Both calibrators save as plain data (``to_dict`` -> JSON-ready floats and lists) and load
from it with ``from_dict``, which checks shapes and finiteness: a file from a stranger is read as data,
never unpickled.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp, softmax
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from mrc.eval.metric import GoldQuestion, score_question

# The columns of features_of, in order. The first eight describe the model's n-best; the last two let a
# linear model give abstentions their own slope (an abstention is more likely right the more the null
# score wins, an answer the less), without which one weight on the margin cannot fit both.
FEATURES = ("best_score", "null_score", "margin_null", "margin_second", "p_best", "span_chars", "n_windows",
            "question_chars", "abstained", "abstained_x_margin_null")


def candidate_scores(entry: Mapping) -> np.ndarray:
    """A question's candidate scores (K + 1,): its n-best span scores, best first, then the null score last."""
    scores = np.array([c["score"] for c in entry["candidates"]] + [entry["null_score"]], dtype=float)
    if not np.all(np.isfinite(scores)):
        raise ValueError("candidate scores contain NaN or infinite values (a question without windows?)")
    return scores


def gold_index(entry: Mapping, gold: GoldQuestion) -> int | None:
    """Index into :func:`candidate_scores` of the correct candidate: the span with the best F1 against the
    gold (the higher-ranked on ties), the null slot (last) when unanswerable; None if no candidate scores
    F1 > 0 (the gold is not in the n-best: such a question has no target and is left out of the fit)."""
    f1 = [score_question(c["text"], gold)[0] for c in entry["candidates"]] + [score_question("", gold)[0]]
    best = int(np.argmax(f1))
    return best if f1[best] > 0 else None


def temperature_inputs(nbest: Mapping[str, Mapping], gold: Sequence[GoldQuestion]):
    """(score_lists, gold_indices) for :meth:`TemperatureScaler.fit` from a split's n-best and gold."""
    pairs = [(candidate_scores(nbest[g.id]), gold_index(nbest[g.id], g)) for g in gold if g.id in nbest]
    return [s for s, _ in pairs], [i for _, i in pairs]


def _number(value, name: str, positive: bool = False) -> float:
    """A finite float from loaded data (bools and strings refused), or a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{name}: must be > 0, got {value!r}")
    return float(value)


def _vector(value, name: str, length: int | None = None) -> np.ndarray:
    """A finite 1-D float array (length,) from loaded data, or a ValueError naming ``name``."""
    if not isinstance(value, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise ValueError(f"{name}: expected a list of numbers")
    arr = np.asarray(value, dtype=float)
    if arr.size == 0 or (length is not None and arr.size != length):
        raise ValueError(f"{name}: expected {length or 'some'} values, got {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return arr


def _kind(data, kind: str) -> None:
    """Check that ``data`` is a dict saved by the calibrator named ``kind``."""
    if not isinstance(data, Mapping) or data.get("kind") != kind:
        found = data.get("kind") if isinstance(data, Mapping) else type(data).__name__
        raise ValueError(f"expected a saved {kind!r} calibrator, got {found!r}")


class TemperatureScaler:
    """Softmax over a question's candidates (n-best spans + null) with the scores divided by T > 0."""

    KIND = "temperature"

    def __init__(self, temperature: float = 1.0):
        self.temperature = _number(temperature, "temperature", positive=True)

    @staticmethod
    def _padded(score_lists, gold_index) -> tuple[np.ndarray, np.ndarray]:
        """Scores (Q, K_max) padded with -inf and gold indices (Q,), questions without a target dropped."""
        if len(score_lists) != len(gold_index):
            raise ValueError(f"{len(score_lists)} score lists but {len(gold_index)} gold indices")
        rows = [(np.asarray(s, dtype=float), g) for s, g in zip(score_lists, gold_index) if g is not None]
        if not rows:
            raise ValueError("no question with a correct candidate to fit on")
        width = max(s.size for s, _ in rows)
        scores = np.full((len(rows), width), -np.inf)
        for q, (s, g) in enumerate(rows):
            if s.ndim != 1 or not np.all(np.isfinite(s)) or not 0 <= g < s.size:
                raise ValueError(f"question {q}: scores must be finite and 1-D with gold index {g} inside them")
            scores[q, :s.size] = s
        return scores, np.array([g for _, g in rows])

    @staticmethod
    def _nll(scores: np.ndarray, gold: np.ndarray, temperature: float) -> float:
        """Mean negative log-likelihood (nats) of the gold candidates at ``temperature``."""
        z = scores / temperature  # (Q, K_max); padding stays -inf and gets probability 0
        return float(np.mean(logsumexp(z, axis=1) - z[np.arange(len(gold)), gold]))

    def fit(self, score_lists: Sequence[Sequence[float]], gold_index: Sequence[int | None],
            bounds: tuple[float, float] = (0.01, 100.0)) -> TemperatureScaler:
        """Set T to the maximum-likelihood temperature in ``bounds`` (bounded search over log T)."""
        scores, gold = self._padded(score_lists, gold_index)
        res = minimize_scalar(lambda log_t: self._nll(scores, gold, float(np.exp(log_t))),
                              bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded",
                              options={"xatol": 1e-6})
        self.temperature = float(np.exp(res.x))
        return self

    def nll(self, score_lists: Sequence[Sequence[float]], gold_index: Sequence[int | None]) -> float:
        """Mean negative log-likelihood (nats) of the gold candidates at the current temperature."""
        return self._nll(*self._padded(score_lists, gold_index), self.temperature)

    def confidence(self, score_list: Sequence[float]) -> np.ndarray:
        """Probabilities (K,) of a question's candidates: softmax(scores / T)."""
        s = np.asarray(score_list, dtype=float)
        if s.ndim != 1 or s.size == 0 or not np.all(np.isfinite(s)):
            raise ValueError("score_list must be a non-empty 1-D list of finite scores")
        return softmax(s / self.temperature)

    def to_dict(self) -> dict:
        """Plain JSON-ready data."""
        return {"kind": self.KIND, "temperature": self.temperature}

    @classmethod
    def from_dict(cls, data: Mapping) -> TemperatureScaler:
        """Rebuild from :meth:`to_dict` output, checking it (ValueError on anything else)."""
        _kind(data, cls.KIND)
        return cls(_number(data.get("temperature"), "temperature", positive=True))


def answer_confidence(entry: Mapping, answer: str, probs: np.ndarray) -> float:
    """Probability that ``answer`` is returned: the summed probability of candidates with that text (the
    same text may sit at several offsets), plus the null slot's when ``answer`` is "" (abstaining)."""
    texts = [c["text"] for c in entry["candidates"]] + [""]
    return float(sum(p for t, p in zip(texts, probs) if t == answer))


def answer_confidences(nbest: Mapping[str, Mapping], predictions: Mapping[str, str] | None = None,
                       scaler: TemperatureScaler | None = None) -> dict[str, float]:
    """Temperature-scaled confidence of each question's returned answer (the best span without
    ``predictions``), for :func:`mrc.eval.abstention.abstention_summary`."""
    scaler = scaler or TemperatureScaler()
    out = {}
    for qid, entry in nbest.items():
        default = entry["candidates"][0]["text"] if entry["candidates"] else ""
        answer = predictions.get(qid, default) if predictions is not None else default
        out[qid] = answer_confidence(entry, answer, scaler.confidence(candidate_scores(entry)))
    return out


def window_counts(examples: Sequence, windows: Sequence) -> dict[str, int]:
    """Windows per question id (``examples[i].id``; each window's ``example_index``)."""
    counts = Counter(w.example_index for w in windows)
    return {ex.id: counts.get(i, 0) for i, ex in enumerate(examples)}


def features_of(nbest: Mapping[str, Mapping], examples: Sequence, windows: Sequence,
                predictions: Mapping[str, str] | None = None,
                scaler: TemperatureScaler | None = None) -> tuple[list[str], np.ndarray]:
    """(ids, X (N, len(FEATURES))) for a split's questions in ``examples`` order, from ``postprocess``'s
    n-best, the split's examples (``.id``, ``.question``) and windows (``.example_index``), the returned
    ``predictions`` (None: always the best span) and a fitted ``scaler`` for ``p_best`` (None: T = 1).

    Scores are the head's raw span scores (logits); with no span candidate the best score is the null
    score (margins 0, p_best 0, span_chars 0); with one candidate margin_second is 0.
    """
    scaler = scaler or TemperatureScaler()
    counts = window_counts(examples, windows)
    ids, rows = [], []
    for ex in examples:
        if ex.id not in nbest:
            raise ValueError(f"question {ex.id!r} has no n-best entry")
        entry = nbest[ex.id]
        cands, null = entry["candidates"], float(entry["null_score"])
        probs = scaler.confidence(candidate_scores(entry))  # (K + 1,), null last
        best = float(cands[0]["score"]) if cands else null
        second = float(cands[1]["score"]) if len(cands) > 1 else best
        default = cands[0]["text"] if cands else ""
        abstained = float((predictions.get(ex.id, default) if predictions is not None else default) == "")
        rows.append([best, null, best - null, best - second, probs[0] if cands else 0.0,
                     len(default), counts[ex.id], len(ex.question), abstained, abstained * (best - null)])
        ids.append(ex.id)
    return ids, np.array(rows, dtype=float).reshape(len(rows), len(FEATURES))


class FeatureCalibrator:
    """P(returned answer is right) = logistic regression on standardised per-question features."""

    KIND = "feature_logistic"

    def __init__(self, C: float = 1.0, f1_threshold: float = 0.5, feature_names: Sequence[str] | None = FEATURES):
        self.C = _number(C, "C", positive=True)
        self.f1_threshold = _number(f1_threshold, "f1_threshold")
        self.feature_names = list(feature_names) if feature_names is not None else None
        self.model: Pipeline | None = None

    def _matrix(self, features) -> np.ndarray:
        """``features`` as a finite (N, d) float matrix of the expected width, or a ValueError."""
        X = np.asarray(features, dtype=float)
        d = len(self.feature_names) if self.feature_names is not None else None
        if X.ndim != 2 or X.shape[0] == 0 or (d is not None and X.shape[1] != d):
            raise ValueError(f"features: expected an (N, {d or 'd'}) matrix, got shape {X.shape}")
        if not np.all(np.isfinite(X)):
            raise ValueError("features contain NaN or infinite values")
        return X

    def fit(self, features, target) -> FeatureCalibrator:
        """Fit on features (N, d) and per-question F1 or 0/1 (N,): right = target >= ``f1_threshold``."""
        X, y = self._matrix(features), np.asarray(target, dtype=float)
        if y.shape != (X.shape[0],) or not np.all(np.isfinite(y)):
            raise ValueError(f"target: expected {X.shape[0]} finite values, got shape {y.shape}")
        labels = (y >= self.f1_threshold).astype(int)
        if np.unique(labels).size < 2:
            raise ValueError("target: the calibration set needs both right and wrong answers")
        if self.feature_names is None:
            self.feature_names = [f"x{j}" for j in range(X.shape[1])]
        self.model = Pipeline([("scale", StandardScaler()),
                               ("lr", LogisticRegression(C=self.C, max_iter=1000))]).fit(X, labels)
        return self

    def predict_proba(self, features) -> np.ndarray:
        """Probability (N,) that each returned answer is right."""
        if self.model is None:
            raise ValueError("FeatureCalibrator is not fitted")
        return self.model.predict_proba(self._matrix(features))[:, 1]

    def to_dict(self) -> dict:
        """Plain JSON-ready data: the scaler's mean/scale and the regression's weights."""
        if self.model is None:
            raise ValueError("FeatureCalibrator is not fitted")
        scale, lr = self.model.named_steps["scale"], self.model.named_steps["lr"]
        return {"kind": self.KIND, "C": self.C, "f1_threshold": self.f1_threshold,
                "feature_names": list(self.feature_names), "mean": scale.mean_.tolist(),
                "scale": scale.scale_.tolist(), "coef": lr.coef_[0].tolist(), "intercept": float(lr.intercept_[0])}

    @classmethod
    def from_dict(cls, data: Mapping) -> FeatureCalibrator:
        """Rebuild from :meth:`to_dict` output, checking shapes and finiteness (ValueError otherwise)."""
        _kind(data, cls.KIND)
        names = data.get("feature_names")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise ValueError("feature_names: expected a non-empty list of strings")
        d = len(names)
        mean, scale, coef = (_vector(data.get(k), k, d) for k in ("mean", "scale", "coef"))
        if np.any(scale <= 0):
            raise ValueError("scale: every value must be > 0")
        out = cls(_number(data.get("C"), "C", positive=True), _number(data.get("f1_threshold"), "f1_threshold"), names)
        scaler = StandardScaler()
        scaler.mean_, scaler.scale_, scaler.var_ = mean, scale, scale ** 2
        scaler.n_features_in_, scaler.n_samples_seen_ = d, 1
        lr = LogisticRegression(C=out.C)
        lr.coef_, lr.intercept_ = coef[None, :], np.array([_number(data.get("intercept"), "intercept")])
        lr.classes_, lr.n_features_in_, lr.n_iter_ = np.array([0, 1]), d, np.array([0])
        out.model = Pipeline([("scale", scaler), ("lr", lr)])
        return out
