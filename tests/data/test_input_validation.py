"""Issue 16 ("Hardening"), the data items: no bad input silently changes a metric (3), the robustness
builder validates its input like the loader (4), one byte-order-mark rule for every reader (7)."""
import json
import re

import pytest
from omegaconf import OmegaConf

from mrc.data.squad import DataError, load_squad
from mrc.eval import evaluate as evaluate_cli
from mrc.eval.metric import MetricInputError, evaluate, load_references, score_question, GoldQuestion
from mrc.robustness.__main__ import main as robustness_main
from tests.conftest import SHARED_DATA

CTX = "北京是中国的首都，北京很大。"


def squad(*qas, context=CTX):
    return {"data": [{"title": "t", "paragraphs": [{"context": context, "qas": list(qas)}]}]}


def qa(qid, text="首都", start=6, **kw):
    return {"id": qid, "question": "首都是哪里？", "answers": [{"text": text, "answer_start": start}], **kw}


def write(path, obj, bom=False):
    text = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


# ---------------------------------------------------------------- 3. silent changes of meaning

@pytest.mark.parametrize("training", [True, False])
def test_a_non_boolean_is_impossible_is_an_error_in_every_loader(tmp_path, training):
    from mrc.data.squad import clean_squad

    path = write(tmp_path / "d.json", squad(qa("a"), qa("b", is_impossible="false")))
    where = r"d\.json: data\[0\]\.paragraphs\[0\]\.qas\[1\] \(id 'b'\): 'is_impossible' must be true or false"
    with pytest.raises(DataError, match=where):
        load_squad(path, training=training)
    with pytest.raises(DataError, match=where):
        clean_squad(json.loads(path.read_text()), path)
    with pytest.raises(MetricInputError, match="'is_impossible' must be true or false"):
        load_references(path)


def test_questions_scored_as_unanswerable_are_counted_and_reported(tmp_path, capsys):
    from mrc.eval.metric import notes
    from mrc.train.inputs import _eval_split

    ref = write(tmp_path / "ref.json", squad(
        qa("ok"), {"id": "none", "question": "q？", "answers": []}, qa("empty", ""),
        qa("both", is_impossible=True), qa("imp", "", -1, is_impossible=True)))
    gold = load_references(ref)
    assert notes(gold) == {"no_answers": 1, "empty_answers": 1, "impossible_with_answers": 1}
    split = _eval_split(OmegaConf.create({"data": {"limit_eval": None}}), "dev", {}, ref, None)
    assert split.stats["scored_unanswerable"] == notes(gold)
    preds = write(tmp_path / "p.json", {"ok": "首都", "none": "", "empty": "", "both": "", "imp": ""})
    assert evaluate_cli.main([str(ref), str(preds)]) == 0
    err = capsys.readouterr().err
    assert "ref.json: 3 questions are scored as unanswerable" in err and "no_answers" not in err
    assert "'answers' is empty and is_impossible is not set" in err


def test_evaluate_reports_extra_ids_and_refuses_predictions_for_another_file(tmp_path, capsys):
    ref = write(tmp_path / "ref.json", squad(qa("a"), qa("b")))
    preds = write(tmp_path / "p.json", {"a": "首都", "zz": "x"})
    assert evaluate_cli.main([str(ref), str(preds)]) == 0
    out = capsys.readouterr()
    assert "p.json: 1 ids are not questions of" in out.err and json.loads(out.out)["SKIP"] == 1
    other = write(tmp_path / "other.json", {"x1": "a", "x2": "b"})
    assert evaluate_cli.main([str(ref), str(other)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "other.json: none of its 2 ids is a question of" in err


def test_an_empty_gold_beside_real_ones_is_scored_as_the_official_script_does(tmp_path):
    # As DuReader-robust dev f130f508024fe021dc755db4407014d5: golds ['双蛇发球机', '双蛇霹雳2', '']
    ref = write(tmp_path / "ref.json", squad({"id": "q", "question": "什么？", "answers": [
        {"text": "双蛇发球机", "answer_start": 0}, {"text": "双蛇霹雳2", "answer_start": 0},
        {"text": "", "answer_start": -1}]}, context="双蛇发球机，双蛇霹雳2。"))
    (gold,) = load_references(ref)
    assert not gold.is_impossible and gold.answers == ("双蛇发球机", "双蛇霹雳2", "")
    assert score_question("", gold) == (0.0, 1.0)  # F1 0 (no common segment), EM 1 (equals the empty gold)
    assert score_question("双蛇发球机", gold) == (1.0, 1.0)
    assert score_question("", GoldQuestion("u", (), True)) == (1.0, 1.0)  # unanswerable: all golds empty


@pytest.mark.skipif(not (SHARED_DATA / "dureader_robust" / "dev.json").is_file(), reason="no ../shared/data")
def test_the_real_dev_question_with_an_empty_gold():
    gold = {q.id: q for q in load_references(SHARED_DATA / "dureader_robust" / "dev.json")}
    q = gold["f130f508024fe021dc755db4407014d5"]
    assert "" in q.answers and not q.is_impossible
    summary, _ = evaluate([q], {q.id: ""})
    assert summary["EM"] == 100.0 and summary["F1"] == 0.0


# ---------------------------------------------------------------- 4. robustness build validates its input

@pytest.mark.parametrize("rule", ["over_sensitivity", "over_stability"])
def test_robustness_build_skips_bad_records_and_writes_located_answer_starts(tmp_path, capsys, caplog, rule):
    src = write(tmp_path / "src.json", squad(
        qa("good", "北京", -1), qa("moved", "首都", 0), {"question": "no id？", "answers": []},
        {"id": "nullq", "question": None, "answers": []}, qa("dictans") | {"answers": {"text": "北京"}},
        qa("good", "北京", 0)))
    out = tmp_path / "out.json"
    assert robustness_main(["build", "--rule", rule, "--src", str(src), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    counts = json.loads(captured.out)
    assert counts["source"]["skipped"] == {"missing_id": 1, "missing_question": 1, "malformed_answers": 1,
                                           "duplicate_id": 1}
    assert "src.json: skipped 4 of 6 question records" in caplog.text
    built = json.loads(out.read_text())
    qas = [(p["context"], q) for a in built["data"] for p in a["paragraphs"] for q in p["qas"]]
    assert sorted(q["id"] for _, q in qas) == ["good", "moved"]
    for context, q in qas:
        for ans in q["answers"]:
            assert context[ans["answer_start"]:ans["answer_start"] + len(ans["text"])] == ans["text"]


@pytest.mark.parametrize("content,message", [
    ([{"data": []}], r"src\.json: expected a SQuAD-format object with a 'data' list"),
    ({"version": "1"}, r"src\.json: expected a SQuAD-format object with a 'data' list"),
    (squad({"id": "x", "question": "q", "answers": []}, context=5), r"src\.json: no usable question among its 1"),
    ('{"data": [', r"src\.json: malformed JSON"),
])
def test_robustness_build_refuses_unusable_files(tmp_path, capsys, content, message):
    src = write(tmp_path / "src.json", content)
    out = tmp_path / "out.json"
    assert robustness_main(["build", "--rule", "over_stability", "--src", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert re.search(message, err) and not out.exists()


# ---------------------------------------------------------------- 7. one rule for a byte-order mark

def test_every_reader_accepts_a_utf8_bom(tmp_path, capsys):
    src = write(tmp_path / "bom.json", squad(qa("a"), qa("b", "北京", 0)), bom=True)
    assert [e.id for e in load_squad(src, training=True)[0]] == ["a", "b"]
    assert [q.id for q in load_references(src)] == ["a", "b"]
    preds = write(tmp_path / "p.json", {"a": "首都", "b": "北京"}, bom=True)
    assert evaluate_cli.main([str(src), str(preds)]) == 0 and json.loads(capsys.readouterr().out)["F1"] == 100.0
    assert robustness_main(["build", "--rule", "over_stability", "--src", str(src),
                            "--out", str(tmp_path / "o.json")]) == 0


