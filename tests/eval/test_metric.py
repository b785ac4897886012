"""Tests for mrc.eval.metric and the mrc evaluate CLI, with hand-computed expectations."""
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from mrc.eval.metric import (GoldQuestion, MetricInputError, em_score, evaluate, f1_score,
                        load_references, longest_common_run, normalize, score_question, segment)

REPO = Path(__file__).resolve().parents[2]


def gq(qid, *answers, impossible=False):
    return GoldQuestion(qid, tuple(answers), impossible or not answers)


def squad(*articles):
    """Build a SQuAD doc: articles are lists of paragraphs, paragraphs lists of (id, [texts])."""
    return {"data": [{"title": f"a{i}", "paragraphs": [
        {"context": "ctx", "qas": [{"id": qid, "question": "q?",
                                    "answers": [{"text": t, "answer_start": 0} for t in texts]}
                                   for qid, texts in para]} for para in art]}
        for i, art in enumerate(articles)]}


def write(tmp_path, name, obj):
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False), "utf-8")
    return p


# --- normalization and segmentation -------------------------------------------------

def test_normalize_drops_listed_punct_and_keeps_spaces_and_ellipsis():
    assert normalize("《红楼梦》") == "红楼梦"
    assert normalize("A:b_c`d，。：？！()“”；’《》·、,「」（）－～『』|") == "abcd"
    assert normalize(" Hi There ") == " hi there "
    assert normalize("好……") == "好……"
    assert normalize("a.b-c") == "a.b-c"  # not in the list


def test_segment_mixed():
    assert segment("2019年") == ["2019", "年"]
    assert segment("iphone 11手机") == ["iphone 11", "手", "机"]
    assert segment("a=b") == ["a", "=", "b"]
    assert segment("𠀀x") == ["𠀀", "x"]  # U+20000, CJK extension B
    assert segment("") == []


# --- F1 / EM ------------------------------------------------------------------------

def test_exact_match():
    assert f1_score("北京", ["北京"]) == 1.0
    assert em_score("北京", ["北京"]) == 1.0


def test_chinese_partial_overlap():
    assert f1_score("北京市", ["北京"]) == pytest.approx(0.8)  # P=2/3, R=1
    assert em_score("北京市", ["北京"]) == 0.0


def test_latin_run_is_one_segment():
    assert em_score("iPhone 11", ["iphone 11"]) == 1.0
    assert f1_score("iphone 12", ["iphone 11"]) == 0.0


def test_digits_mixed_with_cjk():
    # segments ["2019","年"] vs ["2019","年","3","月"]: lcs 2, P=1, R=1/2
    assert f1_score("2019年", ["2019年3月"]) == pytest.approx(2 / 3)


def test_punctuation_removed_both_widths():
    assert em_score("《红楼梦》", ["红楼梦"]) == 1.0
    assert em_score("(abc)", ["abc"]) == 1.0
    assert f1_score("“红楼梦”，", ["红楼梦"]) == 1.0


def test_ellipsis_kept():
    assert em_score("好……", ["好"]) == 0.0
    # ["好","……"] vs ["好"]: lcs 1, P=1/2, R=1
    assert f1_score("好……", ["好"]) == pytest.approx(2 / 3)


def test_equals_sign_own_segment():
    # ["x","=","1"] vs ["x","=","2"]: lcs 2, P=R=2/3
    assert f1_score("x=1", ["x=2"]) == pytest.approx(2 / 3)


def test_contiguous_not_subsequence():
    # subsequence would give 2, contiguous run is only 1: P=1/4, R=1/2
    assert f1_score("甲乙丙丁", ["甲丙"]) == pytest.approx(1 / 3)


def test_multi_answer_takes_max():
    assert f1_score("北京市", ["上海", "北京", "北京市"]) == 1.0
    assert f1_score("北京市", ["上海", "北京"]) == pytest.approx(0.8)
    assert em_score("北京", ["上海", "北京"]) == 1.0


def test_empty_prediction_on_answerable_is_zero():
    assert score_question("", gq("q", "北京")) == (0.0, 0.0)


def test_unanswerable():
    assert score_question("", gq("q", impossible=True)) == (1.0, 1.0)
    assert score_question("x", gq("q", impossible=True)) == (0.0, 0.0)
    assert score_question(None, gq("q", impossible=True)) == (0.0, 0.0)


def test_lcs_matches_bruteforce():
    rng = random.Random(0)

    def brute(a, b):
        return max((k for i in range(len(a)) for j in range(len(b)) for k in range(1, 1 + min(len(a) - i, len(b) - j))
                    if a[i:i + k] == b[j:j + k]), default=0)
    for _ in range(300):
        a = [rng.choice("abc") for _ in range(rng.randint(0, 7))]
        b = [rng.choice("abc") for _ in range(rng.randint(0, 7))]
        assert longest_common_run(a, b) == brute(a, b)


# --- loading and aggregation --------------------------------------------------------

def test_load_several_articles_and_paragraphs(tmp_path):
    doc = squad([[("a", ["北京"])], [("b", ["x"]), ("c", [""])]], [[("d", ["y", ""])]])
    doc["data"][0]["paragraphs"][0]["qas"][0]["is_impossible"] = True
    gold = load_references(write(tmp_path, "ref.json", doc))
    assert [q.id for q in gold] == ["a", "b", "c", "d"]
    assert gold[0].is_impossible and gold[0].answers == ()
    assert gold[2].is_impossible  # all answers empty
    assert gold[3].answers == ("y", "") and not gold[3].is_impossible  # the official script keeps an empty gold


def test_evaluate_skip_total_and_ignores_extra_ids():
    gold = [gq("a", "北京"), gq("b", "北京"), gq("c", impossible=True)]
    summary, per_q = evaluate(gold, {"a": "北京", "b": "北京市", "zzz": "x"})
    # a: 1/1, b: 0.8/0, c skipped: 0/0
    assert summary == {"F1": 60.0, "EM": 33.333, "TOTAL": 3, "SKIP": 1}
    assert per_q["c"] == {"f1": 0.0, "em": 0.0} and "zzz" not in per_q


def test_bad_structure_names_file_and_path(tmp_path):
    doc = squad([[("a", ["x"]), ("b", ["y"])]])
    doc["data"][0]["paragraphs"][0]["qas"][1]["answers"] = "y"
    p = write(tmp_path, "bad.json", doc)
    with pytest.raises(MetricInputError, match=r"bad\.json.*qas\[1\].*'b'"):
        load_references(p)


# --- CLI ----------------------------------------------------------------------------

def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "mrc", "evaluate", *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


def test_cli_end_to_end(tmp_path):
    ref = write(tmp_path, "ref.json", squad([[("a", ["北京"]), ("b", ["北京"])]], [[("c", ["x"])]]))
    pred = write(tmp_path, "pred.json", {"a": "北京市", "b": "北京"})
    out = tmp_path / "perq.json"
    res = run_cli(ref, pred, "--per-question", out)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1
    # F1 = (0.8 + 1 + 0)/3 = 60.0; EM = 1/3 -> 33.333
    assert json.loads(lines[0]) == {"F1": 60.0, "EM": 33.333, "TOTAL": 3, "SKIP": 1}
    perq = json.loads(out.read_text("utf-8"))
    assert perq["a"]["f1"] == pytest.approx(0.8) and perq["a"]["em"] == 0
    assert perq["b"] == {"f1": 1.0, "em": 1} and perq["c"] == {"f1": 0.0, "em": 0}


@pytest.mark.parametrize("case", ["missing", "malformed", "nonstring"])
def test_cli_errors_exit_2(tmp_path, case):
    ref = write(tmp_path, "ref.json", squad([[("q1", ["x"])]]))
    pred = {"missing": tmp_path / "nope_pred.json",
            "malformed": write(tmp_path, "broken_pred.json", '{"q1": "x",'),
            "nonstring": write(tmp_path, "typed_pred.json", {"q1": ["x"]})}[case]
    res = run_cli(ref, pred)
    assert res.returncode == 2
    assert pred.name in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and res.stdout == ""
    if case == "nonstring":
        assert "q1" in res.stderr


def test_breakdown_by_type_and_answerability():
    from mrc.eval.metric import GoldQuestion, breakdown, evaluate

    gold = [GoldQuestion("a", ("北京",), False, "vocab"), GoldQuestion("b", ("上海",), False, "vocab"),
            GoldQuestion("c", (), True, "typo"), GoldQuestion("d", (), True, "typo")]
    _, per_q = evaluate(gold, {"a": "北京", "b": "北京", "c": "", "d": "x"})
    out = breakdown(gold, per_q)
    assert out["by_type"] == {"typo": {"F1": 50.0, "EM": 50.0, "TOTAL": 2}, "vocab": {"F1": 50.0, "EM": 50.0, "TOTAL": 2}}
    assert out["HasAns"] == {"F1": 50.0, "EM": 50.0, "TOTAL": 2} and out["NoAns"] == {"F1": 50.0, "EM": 50.0, "TOTAL": 2}
    plain = [GoldQuestion("a", ("北京",), False)]
    assert breakdown(plain, evaluate(plain, {"a": "北"})[1]) == {}
