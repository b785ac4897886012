"""Over-stability builder: answers stay aligned, distractors say what they should, counts and capture."""
import json
import subprocess
import sys

from hypothesis import given, settings, strategies as st

from mrc.robustness.over_stability import (answer_kind, build_over_stability, distractor_capture,
                                           fake_answer, safe_boundaries)
from tests.conftest import ROOT

import random

CJK = "北京上海中国人民大学年月日发布价格公司作者首都城市人口面积"


def squad(context, *qas):
    return {"data": [{"title": "t", "paragraphs": [{"context": context, "qas": list(qas)}]}]}


def qa(qid, question, text, start):
    return {"id": qid, "question": question, "answers": [{"text": text, "answer_start": start}]}


@st.composite
def cases(draw):
    sentences = draw(st.lists(st.text(CJK + "0123456789", min_size=2, max_size=12), min_size=1, max_size=6))
    context = "".join(s + draw(st.sampled_from("。！？；")) for s in sentences)
    i = draw(st.integers(0, len(context) - 1))
    j = draw(st.integers(i + 1, min(len(context), i + 8)))
    return context, context[i:j], i


@settings(max_examples=200, deadline=None)
@given(cases(), st.integers(0, 3))
def test_gold_answer_stays_aligned_and_is_never_split(case, seed):
    context, text, start = case
    built, counts = build_over_stability(squad(context, qa("q", "北京的人口是多少？", text, start)), seed)
    para = built["data"][0]["paragraphs"][0]
    q = para["qas"][0]
    s = q["answers"][0]["answer_start"]
    assert para["context"][s:s + len(text)] == text
    if "distractor" in q:
        d = q["distractor"]
        assert para["context"][d["start"]:d["start"] + len(d["text"])] == d["text"]
        assert para["context"][:d["start"]] + para["context"][d["start"] + len(d["text"]):] == context
        assert not (s < d["start"] < s + len(text))
        assert counts["changed"] == 1
    else:
        assert counts["unchanged"] == 1 and para["context"] == context


def test_distractor_repeats_question_words_with_a_fake_answer_of_the_same_kind():
    context = "北京是中国的首都。北京的常住人口约为2189万人，面积很大。"
    src = squad(context, qa("q", "北京的常住人口是多少？", "2189万人", 18))
    built, _ = build_over_stability(src, seed=0)
    q = built["data"][0]["paragraphs"][0]["qas"][0]
    d = q["distractor"]
    assert d["kind"] == "number" and d["fake_answer"] != "2189万人" and d["fake_answer"].endswith("万人")
    assert d["fake_answer"] in d["text"] and d["fake_answer"] not in context
    same = sum(a == b for a, b in zip("的常住人口是", d["text"][2:8]))
    assert d["text"].endswith("。") and "多少" not in d["text"] and same >= 5  # one content character changed
    assert build_over_stability(src, seed=0) == (built, _)
    assert build_over_stability(src, seed=5)[0] != built


def test_answer_kinds_and_fakes_keep_their_shape():
    rng = random.Random(0)
    assert answer_kind("1987年") == "date" and answer_kind("75%") == "number" and answer_kind("张三") == "name"
    for gold in ("1987年5月", "172厘米", "ＸＰＥ", "张三丰", "iPhone 11"):
        fake = fake_answer(gold, rng)
        assert fake != gold and len(fake) == len(gold)
        assert [c.isdigit() for c in fake] == [c.isdigit() for c in gold]
    assert fake_answer("1987年5月", rng)[4] == "年"


def test_unbuildable_questions_are_kept_and_counted():
    src = squad("北京是首都。", qa("a", "首都是哪里？", "上海", 0),
                {"id": "b", "question": "有吗？", "answers": [], "is_impossible": True})
    built, counts = build_over_stability(src, seed=0)
    assert counts == {"total": 2, "changed": 0, "unchanged": 2,
                      "by_reason": {"answer_not_in_context": 1, "unanswerable": 1}, "by_kind": {}}
    assert [q["id"] for p in built["data"][0]["paragraphs"] for q in p["qas"]] == ["a", "b"]


def test_safe_boundaries_skip_points_inside_answers():
    assert safe_boundaries("甲乙。丙丁。", [(1, 4)]) == [0, 6]
    assert safe_boundaries("甲乙。丙丁。", []) == [0, 3, 6]


def test_distractor_capture_on_hand_made_predictions():
    built = {"data": [{"paragraphs": [
        {"context": "甲城人口是500万。乙城人口是300万。", "qas": [{"id": "1", "distractor": {"text": "乙城人口是300万。", "start": 10}}]},
        {"context": "丙是2。丁是9。", "qas": [{"id": "2", "distractor": {"text": "丁是9。", "start": 4}}]},
        {"context": "x", "qas": [{"id": "3"}]}]}]}
    assert distractor_capture(built, {"1": "300万", "2": "2", "3": "x"}) == 50.0
    assert distractor_capture(built, {"1": "", "2": "是"}) == 0.0  # empty, or also in the original text


def test_cli_build_writes_the_split(tmp_path):
    src = tmp_path / "src.json"
    src.write_text(json.dumps(squad("北京的人口约为2189万人。", qa("q", "北京的人口是多少？", "2189万人", 6)),
                              ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, "-m", "mrc.robustness", "build", "--rule", "over_stability", "--src",
                           str(src), "--out", str(out), "--seed", "0"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["changed"] == 1 and "distractor" in out.read_text(encoding="utf-8")
    bad = subprocess.run([sys.executable, "-m", "mrc.robustness", "build", "--rule", "over_stability", "--src",
                          str(tmp_path / "nope.json"), "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "nope.json" in bad.stderr
