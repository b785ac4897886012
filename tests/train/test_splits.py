"""The eval split registry: entry forms, optional files, built splits and their metrics."""
import json

import pytest
from omegaconf import OmegaConf

from mrc.train.splits import input_paths, materialise, robustness_metrics, split_specs

BUILDER = {"_target_": "mrc.robustness.over_stability.build_over_stability", "_partial_": True, "seed": 0}


def test_entry_forms_and_validation():
    specs = split_specs(OmegaConf.create({"a": "x.json", "b": {"path": "y.json", "optional": True},
                                          "c": {"source": "x.json", "builder": BUILDER}}))
    assert specs["a"] == {"optional": False, "path": "x.json"} and specs["b"]["optional"] is True
    assert input_paths(specs) == ["x.json", "y.json", "x.json"]
    with pytest.raises(ValueError, match="either 'path' or both"):
        split_specs(OmegaConf.create({"bad": {"source": "x.json"}}))


def test_missing_files(tmp_path):
    assert materialise("b", {"path": "nope.json", "optional": True}, tmp_path, tmp_path) == (None, None)
    with pytest.raises(FileNotFoundError, match=r"data\.eval\.a: .*nope.json not found; point data\.root=DIR"):
        materialise("a", {"path": "nope.json", "optional": False}, tmp_path, tmp_path)


def test_built_split_is_written_and_scored(tmp_path):
    src = {"data": [{"paragraphs": [{"context": "北京的人口约为2189万人。", "qas": [
        {"id": "q", "question": "北京的人口是多少？", "answers": [{"text": "2189万人", "answer_start": 6}]}]}]}]}
    (tmp_path / "dev.json").write_text(json.dumps(src, ensure_ascii=False), encoding="utf-8")
    spec = {"source": "dev.json", "builder": BUILDER, "optional": False, "consistency_with": "in_domain"}
    path, counts = materialise("over_stability", spec, tmp_path, tmp_path / "run")
    assert path == tmp_path / "run" / "splits" / "over_stability.json" and counts["changed"] == 1
    built = json.loads(path.read_text(encoding="utf-8"))
    fake = built["data"][0]["paragraphs"][0]["qas"][0]["distractor"]["fake_answer"]
    preds = {"in_domain": {"q": "2189万人"}, "over_stability": {"q": fake}}
    assert robustness_metrics("over_stability", spec, path, preds) == {"consistency": 0.0, "distractor_capture": 100.0}
    with pytest.raises(ValueError, match="consistency_with"):
        robustness_metrics("x", {"consistency_with": "nope"}, path, {"x": {}})


def test_error_rows_and_snippets():
    from mrc.data.squad import Example
    from mrc.eval.split import Split
    from mrc.train.outputs import error_rows, snippet

    ctx = "甲乙丙丁戊己庚辛壬癸"
    assert snippet(ctx, "丙丁", width=2) == "甲乙【丙丁】戊己"
    assert snippet(ctx, "丁", start=3, width=1) == "丙【丁】戊" and snippet(ctx, "子") == "" and snippet(ctx, "") == ""
    exs = [Example("a", "q1", ctx, ["丙丁"], [2], qtype="t", references=["丙丁"]),
           Example("b", "q2", ctx, ["戊"], [4], qtype="t", references=["戊"])]
    split = Split("s", None, exs, [], {})
    rows = error_rows(split, {"a": "丙丁", "b": "癸"}, {"a": {"f1": 1.0, "em": 1.0}, "b": {"f1": 0.0, "em": 0.0}})
    assert rows == [{"id": "b", "type": "t", "question": "q2", "gold": ["戊"], "predicted": "癸", "f1": 0.0,
                     "gold_context": "甲乙丙丁【戊】己庚辛壬癸", "predicted_context": "甲乙丙丁戊己庚辛壬【癸】"}]
