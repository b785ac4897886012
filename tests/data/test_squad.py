"""SQuAD loading: clear errors for unusable files, re-location and counted skips for bad records."""
import json

import pytest

from mrc.data.squad import DataError, load_squad, locate


def write(tmp_path, obj, name="d.json"):
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return p


def squad(*qas, context="北京是中国的首都，北京很大。"):
    return {"data": [{"paragraphs": [{"context": context, "qas": list(qas)}]}]}


def qa(qid, text, start, question="首都是哪里？", **kw):
    return {"id": qid, "question": question, "answers": [{"text": text, "answer_start": start}], **kw}


def test_missing_file_and_malformed_json_name_the_file(tmp_path):
    with pytest.raises(DataError, match="nope.json: file not found"):
        load_squad(tmp_path / "nope.json", training=True)
    bad = write(tmp_path, '{"data": [', "bad.json")
    with pytest.raises(DataError, match=r"bad.json: malformed JSON at line 1"):
        load_squad(bad, training=True)
    with pytest.raises(DataError, match=r"w.json: expected a SQuAD-format object"):
        load_squad(write(tmp_path, {"rows": []}, "w.json"), training=True)
    with pytest.raises(DataError, match=r"p.json: data\[0\] has no 'paragraphs'"):
        load_squad(write(tmp_path, {"data": [{}]}, "p.json"), training=True)


def test_relocation_prefers_nearest_occurrence():
    ctx = "北京是中国的首都，北京很大。"
    assert locate(ctx, "北京", 0) == 0
    assert locate(ctx, "北京", 8) == 9
    assert locate(ctx, "北京", -1) == 0
    assert locate(ctx, "上海", 3) == -1


def test_bad_records_are_relocated_or_skipped_and_counted(tmp_path):
    path = write(tmp_path, {"data": [{"paragraphs": [
        {"context": "北京是中国的首都，北京很大。", "qas": [
            qa("ok", "首都", 6),
            qa("moved", "北京", 8),              # wrong answer_start: re-located to 9
            qa("absent", "上海", 0),             # not in the context
            qa("ok", "首都", 6),                 # duplicate id
            {"id": "noq", "answers": []},        # no question
            qa("imp", "", -1, is_impossible=True),
        ]},
        {"context": "   ", "qas": [qa("empty", "x", 0)]},
    ]}]})
    train, stats = load_squad(path, training=True)
    assert [e.id for e in train] == ["ok", "moved", "imp"]
    assert train[1].starts == [9] and train[2].is_impossible and train[2].answers == []
    assert stats.records == 7 and stats.kept == 3 and stats.relocated == 1
    assert dict(stats.skipped) == {"answer_not_in_context": 1, "duplicate_id": 1, "missing_question": 1,
                                   "empty_context": 1}
    assert stats.as_dict()["skipped_total"] == 4
    # Evaluation keeps a question whose answer text is absent: scoring is by text only.
    evals, estats = load_squad(path, training=False)
    assert [e.id for e in evals] == ["ok", "moved", "absent", "imp"]
    assert evals[2].references == ["上海"] and evals[2].answers == []


def test_multiple_answers_and_type_kept(tmp_path):
    path = write(tmp_path, squad({"id": "m", "question": "哪里？", "type": "vocab", "answers": [
        {"text": "北京", "answer_start": 0}, {"text": "中国的首都", "answer_start": 3}]}))
    (ex,), _ = load_squad(path, training=True)
    assert ex.answers == ["北京", "中国的首都"] and ex.starts == [0, 3] and ex.qtype == "vocab"


def test_answerable_without_answers_is_skipped_for_training(tmp_path):
    path = write(tmp_path, squad({"id": "n", "question": "哪里？", "answers": []}))
    train, stats = load_squad(path, training=True)
    assert train == [] and stats.skipped["no_answer"] == 1
