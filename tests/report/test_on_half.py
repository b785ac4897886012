"""experiments/abstention/on_half.py: a run scored on all of checklist, restricted to the held-out half that
data=cpu_small_checklist_half scores (the same hash as the config), with HasAns / NoAns F1 and never answering."""
from __future__ import annotations

import importlib.util
import json

import pytest

from mrc.data.subsets import hash_subset
from mrc.report.records import question_key, write_scores
from tests.conftest import ROOT


def script():
    spec = importlib.util.spec_from_file_location("on_half", ROOT / "experiments" / "abstention" / "on_half.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dev_file(path, n=40):
    qas = [{"id": f"q{i}", "question": "问题", "is_impossible": i % 2 == 1,
            "answers": [] if i % 2 else [{"text": "答案", "answer_start": 0}]} for i in range(n)]
    path.write_text(json.dumps({"data": [{"paragraphs": [{"context": "答案在这里", "qas": qas}]}]}), encoding="utf-8")
    return path


def test_restricts_to_the_config_half_and_splits_has_and_no_answer(tmp_path, capsys):
    on_half = script()
    dev = dev_file(tmp_path / "dev.json")
    keys = on_half.held_out_half(dev)
    half, _ = hash_subset(json.loads(dev.read_text()), "eval", 0.5, "cpu_small")
    ids = [q["id"] for q in half["data"][0]["paragraphs"][0]["qas"]]
    assert set(keys) == {question_key(i) for i in ids} and 0 < len(keys) < 40
    # a run that answers every answerable question right and every unanswerable one wrongly
    run = tmp_path / "run"
    (run / "scores").mkdir(parents=True)
    write_scores(run / "scores" / "checklist.tsv",
                 {f"q{i}": {"f1": float(i % 2 == 0), "em": float(i % 2 == 0)} for i in range(40)})
    assert on_half.main([str(dev), str(run)]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    has = sum(1 for i in ids if int(i[1:]) % 2 == 0)
    assert lines[0]["HasAns_F1"] == 100.0 and lines[0]["NoAns_F1"] == 0.0
    assert lines[0]["F1"] == round(100 * has / len(ids), 2)
    assert lines[1]["run"] == "never answer" and lines[1]["F1"] == round(100 * (len(ids) - has) / len(ids), 2)


def test_refuses_a_run_that_misses_held_out_questions(tmp_path):
    on_half = script()
    dev = dev_file(tmp_path / "dev.json")
    run = tmp_path / "run"
    (run / "scores").mkdir(parents=True)
    write_scores(run / "scores" / "checklist.tsv", {"q0": {"f1": 1.0, "em": 1.0}})
    with pytest.raises(SystemExit, match="not scored"):
        on_half.main([str(dev), str(run)])
