"""The committed bad-input corpus (tests/bad_inputs/) against every entry point that reads a user file.

Per file and entry point the outcome is stated: ``error`` (exit status 2, one ``error:`` line naming the
file, and the record where one is at fault, raised while reading, before any model exists), ``skip``
(the command goes on and the bad records are counted where the user sees them: the warnings and the
counts that go to metrics.json / the JSON output), or ``ok``. Never a traceback. In-process and small:
the pipeline's data loading, ``mrc evaluate``, ``mrc predict`` (on the session's tiny checkpoint),
``mrc.robustness build`` and the report's job reader.
"""
import json
import re
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from mrc.eval.evaluate import main as evaluate_main
from mrc.eval.predict import main as predict_main
from mrc.report.jobs import find_jobs
from mrc.robustness.__main__ import main as robustness_main
from mrc.errors import exit_on_user_error
from mrc.train.inputs import load_data

CORPUS = Path(__file__).parents[1] / "bad_inputs"
ENTRIES = ("train", "eval", "evaluate", "predict", "robustness")
# file -> expected outcome per entry point (train, eval, evaluate as reference, predict, robustness build);
# the record named in the message where one record is at fault.
EXPECTED = {
    "good.json": ("ok", "ok", "ok", "ok", "ok"),
    "bom.json": ("ok", "ok", "ok", "ok", "ok"),
    "malformed.json": ("error",) * 5,
    "not_utf8.json": ("error",) * 5,
    "top_level_list.json": ("error",) * 5,
    "no_data_key.json": ("error",) * 5,
    "no_paragraphs.json": ("error",) * 5,
    "is_impossible_string.json": ("error",) * 5,
    "bad_records.json": ("skip", "error", "error", "skip", "skip"),  # the official scorer's reference must be whole
    "bad_context.json": ("skip", "skip", "ok", "skip", "skip"),
    "all_records_bad.json": ("error",) * 5,
    "empty_answers.json": ("skip", "skip", "skip", "ok", "ok"),
    # a question with the JSON escape \ud800 (a lone UTF-16 surrogate, no character): the tokenizer would raise;
    # the official scorer reads ids and answers only
    "lone_surrogate.json": ("skip", "skip", "ok", "skip", "skip"),
}
RECORD = {"is_impossible_string.json": "'s2'", "bad_records.json": "qas[1]"}
CASES = [(name, entry, outcome) for name, outcomes in EXPECTED.items() for entry, outcome in zip(ENTRIES, outcomes)]


def data_cfg(root: Path, train: str, dev: str):
    return OmegaConf.create({"data": {"root": str(root), "train": [train], "eval": {"in_domain": dev},
                                      "eval_splits": None, "in_domain": "in_domain", "prepare": None,
                                      "limit_train": None, "limit_eval": None, "check_overlap": False}})


def run_entry(entry, path: Path, tmp_path: Path, checkpoint: Path, capsys, caplog):
    """(exit status, stderr, counts shown to the user) for one entry point on one file."""
    if entry in ("train", "eval"):
        cfg = data_cfg(CORPUS, *((path.name, "good.json") if entry == "train" else ("bom.json", path.name)))
        try:
            _, _, train_stats, splits = exit_on_user_error(lambda: load_data(cfg, tmp_path))
        except SystemExit as e:
            return e.code, capsys.readouterr().err, {}
        split = splits["in_domain"].stats
        stats = train_stats[0] if entry == "train" else split
        return 0, capsys.readouterr().err, {"skipped": stats["skipped_total"], **stats.get("scored_unanswerable", {})}
    if entry == "evaluate":
        ids = re.findall(r'"id": "([^"]+)"', path.read_bytes().decode("utf-8", "replace")) or ["none"]
        preds = tmp_path / "preds.json"
        preds.write_text(json.dumps({i: "" for i in ids}), encoding="utf-8")
        rc = evaluate_main([str(path), str(preds)])
        err = capsys.readouterr().err
        return rc, err, {"warnings": err.count("warning:")}
    if entry == "predict":
        rc = predict_main([str(checkpoint), str(path), str(tmp_path / "out.json"), "--device", "cpu"])
        err = capsys.readouterr().err  # the loader's skip counts are warnings (on stderr outside pytest)
        return rc, err, {"warnings": sum("skipped" in r.getMessage() for r in caplog.records)}
    rc = robustness_main(["build", "--rule", "over_stability", "--src", str(path), "--out", str(tmp_path / "o.json")])
    out = capsys.readouterr()
    return rc, out.err, {"skipped": json.loads(out.out)["source"]["skipped_total"] if rc == 0 else 0}


@pytest.mark.parametrize("name,entry,outcome", CASES, ids=[f"{e}-{n}" for n, e, _ in CASES])
def test_corpus(name, entry, outcome, tmp_path, tiny_checkpoint, capsys, caplog):
    caplog.set_level("WARNING")
    rc, err, counts = run_entry(entry, CORPUS / name, tmp_path, tiny_checkpoint, capsys, caplog)
    assert "Traceback" not in err
    if outcome == "error":
        lines = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
        assert rc == 2 and len(lines) == 1, err
        assert name in lines[0] or "data.train" in lines[0], lines[0]
        if name in RECORD and entry not in ("train",):
            assert RECORD[name] in lines[0] or "id" in lines[0], lines[0]
    else:
        assert rc == 0, err
        counted = sum(counts.values())
        if outcome == "skip":
            assert counted > 0 and (caplog.records or "warning:" in err), (counts, err)
        else:
            assert counted == 0 and "warning:" not in err, (counts, err)


def test_all_records_bad_for_training_names_the_option(tmp_path, capsys):
    with pytest.raises(SystemExit):
        exit_on_user_error(lambda: load_data(data_cfg(CORPUS, "all_records_bad.json", "good.json"), tmp_path))
    assert "error: data.train: no usable training examples in ['all_records_bad.json']" in capsys.readouterr().err


@pytest.mark.parametrize("preds,outcome,needle", [
    ("preds_good.json", "ok", None), ("preds_list.json", "error", "expected an object mapping id -> answer"),
    ("preds_non_string.json", "error", "id 'g1': prediction must be a string"),
    ("preds_other_file.json", "error", "none of its 2 ids is a question of"),
    ("preds_extra_ids.json", "skip", "1 ids are not questions of"),
])
def test_prediction_files(preds, outcome, needle, capsys):
    rc = evaluate_main([str(CORPUS / "good.json"), str(CORPUS / preds)])
    out = capsys.readouterr()
    assert rc == (2 if outcome == "error" else 0) and "Traceback" not in out.err
    if needle:
        assert needle in out.err and preds in out.err
    if outcome != "error":
        assert json.loads(out.out)["TOTAL"] == 2


def test_report_job_reader(tmp_path):
    root = Path(shutil.copytree(CORPUS / "report_jobs", tmp_path / "jobs"))
    jobs = {Path(j.display).name: j for j in find_jobs([str(root)])}
    assert jobs["good"].finished and jobs["bom_metrics"].finished
    assert "corrupt metrics.json" in jobs["corrupt_metrics"].reason
    assert "no 'splits' mapping" in jobs["no_splits"].reason
    assert "not a YAML list" in jobs["overrides_not_list"].reason
    assert "no metrics.json" in jobs["no_metrics"].reason
