"""Confidence at inference: ``mrc predict`` writes each answer's confidence beside the ``{id: answer}`` file and the
n-best probabilities, the API returns it and says which method, ``--min-confidence`` / ``min_confidence`` withhold
answers below it, and a broken ``calibration.json`` is refused in one line by both commands."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mrc.data.squad import load_squad
from mrc.eval.calibrate import FEATURES, FeatureCalibrator, TemperatureScaler, answer_confidences, features_of
from mrc.eval.confidence import AnswerConfidence, load_confidence
from mrc.eval.predict import load_for_inference, main as predict_main, make_windows, predict
from mrc.model import checkpoint
from mrc.model.manifest import verify_manifest, write_manifest
from tests.conftest import copy_checkpoint
from tests.serve.helpers import CONTEXT, QUESTIONS, squad_file

TEMPERATURE = {"temperature": {"kind": "temperature", "temperature": 2.0}}


def features_calibration() -> dict:
    """A feature calibrator fitted on made-up features (both classes), with a temperature, as plain data."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, len(FEATURES)))
    y = (x[:, 2] + 0.5 * rng.normal(size=60) > 0).astype(float)  # right when the margin over the null is high
    return {"temperature": TemperatureScaler(1.5).to_dict(), "features": FeatureCalibrator().fit(x, y).to_dict()}


def with_calibration(src, tmp_path, text: str, manifest: bool = True):
    """A copy of checkpoint ``src`` holding ``text`` as calibration.json (the manifest written again to list it)."""
    ckpt = copy_checkpoint(src, tmp_path)
    (ckpt / checkpoint.CALIBRATION_FILE).write_text(text, encoding="utf-8")
    if manifest:
        write_manifest(ckpt)
        assert verify_manifest(ckpt)
    return ckpt


@pytest.fixture(scope="module")
def saved_with_features(tiny_checkpoint, tmp_path_factory):
    """The tiny checkpoint saved again by checkpoint.save with feature + temperature calibrators."""
    model, tok, cfg = checkpoint.load(tiny_checkpoint)
    return checkpoint.save(tmp_path_factory.mktemp("feat") / "checkpoint", model, tok, cfg,
                           calibration=features_calibration())


def run_predict(ckpt, tmp_path, *extra):
    """(rc, {id: answer}, confidence file, n-best file) of mrc predict on the sample SQuAD file."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    src = squad_file(tmp_path / "in.json")
    out, nbest = tmp_path / "out" / "preds.json", tmp_path / "out" / "nbest.json"
    rc = predict_main([str(ckpt), str(src), str(out), "--nbest", str(nbest), "--device", "cpu", *extra])
    if rc:
        return rc, None, None, None
    conf = tmp_path / "out" / "preds.confidence.json"
    return rc, *(json.loads(p.read_text(encoding="utf-8")) for p in (out, conf, nbest))


def reference(ckpt, tmp_path):
    """(examples, windows, answers, n-best) of mrc.eval.predict.predict on the sample file: what the CLI scored."""
    examples, _ = load_squad(squad_file(tmp_path / "ref.json"), training=False)
    model, tok, cfg = load_for_inference(ckpt)
    windows = make_windows(examples, tok, cfg)
    return (examples, windows, *predict(model, tok, cfg, examples, windows=windows))


@pytest.mark.parametrize("kind", ["raw", "temperature", "features"])
def test_predict_writes_confidences_beside_the_submission_file(kind, tiny_checkpoint, saved_with_features, tmp_path):
    ckpt = ({"raw": tiny_checkpoint, "features": saved_with_features}.get(kind)
            or with_calibration(tiny_checkpoint, tmp_path, json.dumps(TEMPERATURE)))
    rc, preds, conf, nbest = run_predict(ckpt, tmp_path)
    assert rc == 0
    assert all(isinstance(a, str) for a in preds.values())  # still {id: answer} for the official scorers
    assert set(conf) == set(preds) == {"a", "b", "c", "d"}
    examples, windows, ref_preds, ref_nbest = reference(ckpt, tmp_path)
    assert preds == ref_preds
    if kind == "features":
        cal = features_calibration()
        scaler = TemperatureScaler.from_dict(cal["temperature"])
        ids, x = features_of(ref_nbest, examples, windows, ref_preds, scaler)
        expected = dict(zip(ids, FeatureCalibrator.from_dict(cal["features"]).predict_proba(x)))
    else:
        scaler = TemperatureScaler(2.0 if kind == "temperature" else 1.0)
        expected = answer_confidences(ref_nbest, ref_preds, scaler)
    for qid, rec in conf.items():
        assert rec["answer"] == preds[qid] and rec["method"] == kind and rec["abstained"] is False
        assert rec["confidence"] == pytest.approx(expected[qid], abs=1e-5)
        entry = nbest[qid]
        probs = [c["probability"] for c in entry["candidates"]] + [entry["null_probability"]]
        assert sum(probs) == pytest.approx(1.0, abs=1e-4)  # softmax over the candidates and the null
        assert probs == pytest.approx(scaler.confidence([c["score"] for c in entry["candidates"]]
                                                        + [entry["null_score"]]).tolist(), abs=1e-5)


def test_min_confidence_withholds_answers(tiny_checkpoint, tmp_path, capsys):
    ckpt = with_calibration(tiny_checkpoint, tmp_path, json.dumps(TEMPERATURE))
    _, preds, conf, _ = run_predict(ckpt, tmp_path / "all")
    values = sorted(r["confidence"] for r in conf.values())
    assert values[0] < values[-1]
    bar = (values[0] + values[-1]) / 2
    rc, gated, gated_conf, _ = run_predict(ckpt, tmp_path / "gated", "--min-confidence", f"{bar}")
    below = sum(v < bar for v in values)
    assert rc == 0 and f"{below} withheld below --min-confidence" in capsys.readouterr().err
    for qid, rec in gated_conf.items():
        below = conf[qid]["confidence"] < bar
        assert gated[qid] == rec["answer"] == ("" if below else preds[qid])
        assert rec["abstained"] is below and rec["confidence"] == conf[qid]["confidence"]
        assert rec.get("withheld") == (preds[qid] if below else None)
    _, everything, _, _ = run_predict(ckpt, tmp_path / "one", "--min-confidence", "1")
    assert set(everything.values()) == {""}
    _, same, _, _ = run_predict(ckpt, tmp_path / "zero", "--min-confidence", "0")
    assert same == preds


def test_predict_one_question_prints_its_confidence(tiny_checkpoint, capsys):
    assert predict_main([str(tiny_checkpoint), "--question", QUESTIONS[0], "--context", CONTEXT]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == "raw" and 0 <= out["confidence"] <= 1 and out["abstained"] is False
    assert out["answer"] == out["candidates"][0]["text"] and "probability" in out["candidates"][0]


@pytest.mark.parametrize("args", [["--min-confidence", "1.5"], ["--min-confidence", "-0.1"],
                                  ["--min-confidence", "nan"], ["--min-confidence", "high"],
                                  ["--confidence", "OUT"]], ids=" ".join)
def test_predict_refuses_bad_confidence_options(args, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "out.json"
    args = [str(out) if a == "OUT" else a for a in args]
    with pytest.raises(SystemExit) as e:
        predict_main([str(tiny_checkpoint), str(squad_file(tmp_path / "in.json")), str(out), *args])
    errors = [ln for ln in capsys.readouterr().err.splitlines() if "error:" in ln]
    assert e.value.code == 2 and len(errors) == 1 and args[0] in errors[0], errors


BAD_FILES = {
    "nan temperature": ('{"temperature": {"kind": "temperature", "temperature": NaN}}', "expected a finite number"),
    "negative temperature": ('{"temperature": {"kind": "temperature", "temperature": -1}}', "must be > 0"),
    "unknown calibrator": ('{"platt": {"kind": "platt", "a": 1}}', "unknown calibrators ['platt']"),
    "wrong kind": ('{"temperature": {"kind": "feature_logistic"}}', "expected a saved 'temperature' calibrator"),
    "part not an object": ('{"temperature": 2.0}', "expected a saved 'temperature' calibrator"),
    "not json": ('{"temperature": ', "not JSON"),
    "not an object": ("[1, 2]", "not a JSON object"),
    "other features": (None, "fitted on the features"),
}


def bad_text(name: str) -> str:
    text = BAD_FILES[name][0]
    if text is None:  # a feature calibrator fitted on another feature list
        cal = features_calibration()["features"]
        cal["feature_names"] = [f"old_{n}" for n in cal["feature_names"]]
        text = json.dumps({"features": cal})
    return text


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_a_bad_calibration_file_is_refused_in_one_line(name, tiny_checkpoint, tmp_path, capsys):
    from mrc.serve.cli import main as serve_main

    ckpt = with_calibration(tiny_checkpoint, tmp_path, bad_text(name))
    message = BAD_FILES[name][1]
    with pytest.raises(checkpoint.CheckpointError, match="calibration.json"):
        load_confidence(ckpt)
    for main, args in ((predict_main, [str(ckpt), "--question", "谁？", "--context", CONTEXT]),
                       (serve_main, [str(ckpt), "--port", "1"])):  # refused before the server would start
        capsys.readouterr()
        assert main(args) == 2
        err = capsys.readouterr().err
        errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and "calibration.json" in errors[0] and message in errors[0], err
        assert "Traceback" not in err


def test_a_calibration_file_edited_after_the_save_is_refused(saved_with_features, tmp_path, capsys):
    ckpt = copy_checkpoint(saved_with_features, tmp_path)  # the manifest lists calibration.json
    (ckpt / checkpoint.CALIBRATION_FILE).write_text(json.dumps(TEMPERATURE), encoding="utf-8")
    assert predict_main([str(ckpt), "--question", "谁？", "--context", CONTEXT]) == 2
    err = capsys.readouterr().err
    assert "calibration.json: the checkpoint's parts disagree" in err and err.count("error:") == 1


# ------------------------------------------------------------------------------------------------ the HTTP API

pytest.importorskip("fastapi")


@pytest.fixture(scope="module")
def served(tiny_checkpoint):
    return load_for_inference(tiny_checkpoint)


def client(served, confidence=None, **kw):
    from fastapi.testclient import TestClient

    from mrc.serve.app import create_app

    model, tok, cfg = served
    app = create_app(model, tok, cfg, allowed_hosts=["testserver"], confidence=confidence, **kw)
    return TestClient(app, raise_server_exceptions=False)


def test_api_confidence_agrees_with_mrc_predict(served, tiny_checkpoint, saved_with_features, tmp_path):
    from mrc.data.squad import Example
    from mrc.eval.predict import predict_confident

    model, tok, cfg = served
    for ckpt in (tiny_checkpoint, saved_with_features):
        conf = load_confidence(ckpt)
        c = client(served, conf)
        assert c.get("/api/info").json()["confidence"] == conf.method
        r = c.post("/api/predict", json={"context": CONTEXT, "questions": QUESTIONS})
        assert r.status_code == 200, r.text
        examples = [Example(f"q{i}", q, CONTEXT, [], []) for i, q in enumerate(QUESTIONS)]
        _, nbest, records = predict_confident(model, tok, cfg, examples, conf)
        for i, ans in enumerate(r.json()["answers"]):
            assert isinstance(ans["confidence"], float) and 0 <= ans["confidence"] <= 1
            assert ans["confidence"] == pytest.approx(records[f"q{i}"]["confidence"], abs=1e-4)
            assert ans["abstained"] is False and ans["answer"] == records[f"q{i}"]["answer"] != ""
            assert [c["probability"] for c in ans["nbest"]] == \
                pytest.approx([c["probability"] for c in nbest[f"q{i}"]["candidates"]], abs=1e-4)
    assert {"raw", "features"} == {load_confidence(tiny_checkpoint).method, load_confidence(saved_with_features).method}


def test_api_min_confidence_abstains(served):
    conf = AnswerConfidence({"temperature": TemperatureScaler(2.0)})
    c = client(served, conf)
    assert c.get("/api/info").json()["confidence"] == "temperature"
    free = c.post("/api/predict", json={"context": CONTEXT, "questions": QUESTIONS}).json()["answers"]
    r = c.post("/api/predict", json={"context": CONTEXT, "questions": QUESTIONS, "min_confidence": 1})
    for before, ans in zip(free, r.json()["answers"]):
        assert ans["answer"] == "" and ans["abstained"] is True and ans["start"] is None and ans["end"] is None
        assert ans["confidence"] == before["confidence"] and ans["nbest"] == before["nbest"]  # what was withheld
    ex = c.post("/api/explain", json={"context": CONTEXT, "question": QUESTIONS[0], "min_confidence": 0.999}).json()
    assert ex["result"]["abstained"] is True and ex["result"]["answer"] == "" and ex["answer_tokens"] is None
    # the server's --min-confidence is the default a request may replace
    strict = client(served, conf, min_confidence=0.999)
    assert strict.get("/api/info").json()["min_confidence"] == 0.999
    ans = strict.post("/api/predict", json={"context": CONTEXT, "question": QUESTIONS[0]}).json()["answers"][0]
    assert ans["abstained"] is True and ans["answer"] == ""
    ans = strict.post("/api/predict", json={"context": CONTEXT, "question": QUESTIONS[0],
                                            "min_confidence": 0}).json()["answers"][0]
    assert ans["abstained"] is False and ans["answer"] == free[0]["answer"]
    ex = strict.post("/api/explain", json={"context": CONTEXT, "question": QUESTIONS[0]}).json()
    assert ex["result"]["abstained"] is True and "confidence" in ex["result"]


@pytest.mark.parametrize("value", ["-0.1", "1.5", '"0.5"', "true", "NaN", "Infinity", "[0.5]", "1e999"])
def test_api_refuses_invalid_min_confidence(served, value):
    c = client(served)
    bodies = {"/api/predict": f'{{"context": "北京是首都。", "questions": ["谁？"], "min_confidence": {value}}}',
              "/api/explain": f'{{"context": "北京是首都。", "question": "谁？", "min_confidence": {value}}}'}
    for path, body in bodies.items():
        r = c.post(path, content=body.encode(), headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["error"].startswith("min_confidence"), (path, r.text)


def test_create_app_checks_min_confidence(served):
    with pytest.raises(ValueError, match="min_confidence"):
        client(served, min_confidence=1.5)


def test_a_calibration_file_added_after_the_save_is_refused(tiny_checkpoint, tmp_path, capsys):
    """A checkpoint with a manifest that does not list calibration.json: someone added it later."""
    from mrc.eval.predict import main as predict_main
    ckpt = with_calibration(tiny_checkpoint, tmp_path, '{"temperature": {"kind": "temperature", "temperature": 0.01}}',
                            manifest=False)
    if not (ckpt / "manifest.json").is_file():
        write_manifest(ckpt)  # a checkpoint saved before manifests: seal it without the file, then add it back
        (ckpt / checkpoint.CALIBRATION_FILE).unlink()
        write_manifest(ckpt)
        (ckpt / checkpoint.CALIBRATION_FILE).write_text('{"temperature": {"kind": "temperature", "temperature": 0.01}}')
    rc = predict_main([str(ckpt), str(tmp_path / "none.json"), str(tmp_path / "out.json"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "calibration.json: the checkpoint's parts disagree: this file is not in manifest.json" in err
