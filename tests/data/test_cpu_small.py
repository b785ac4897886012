"""The cpu-small protocol's pieces: stable hash subsets, builder chains, the train/eval overlap guard,
the lexical baseline, and a smoke run on ../shared/data when present."""
import json
import subprocess
import sys

import pytest
import yaml
from omegaconf import OmegaConf

from mrc.train.lexical import best_window
from mrc.train.inputs import check_overlap
from mrc.train.pipeline import run
from mrc.train.splits import materialise
from mrc.data.subsets import hash_subset, in_eval_part
from tests.conftest import ROOT, SHARED_DATA
from tests.train.test_e2e import DEMO, TINY, compose_cfg


def _squad(n, shuffle_seed=None):
    qas = [{"id": f"q{i}", "question": "甲是谁？", "answers": [{"text": "乙", "answer_start": 2}]} for i in range(n)]
    if shuffle_seed is not None:
        import random
        random.Random(shuffle_seed).shuffle(qas)
    paras = [{"context": "甲是乙。", "qas": qas[i:i + 3]} for i in range(0, n, 3)]
    return {"version": "t", "data": [{"title": "t", "paragraphs": paras}]}


def _ids(squad):
    return {q["id"] for a in squad["data"] for p in a["paragraphs"] for q in p["qas"]}


def test_hash_subset_parts_are_disjoint_complete_and_order_free():
    squad = _squad(600)
    train, c_train = hash_subset(squad, "train", 0.3, "s")
    evals, c_eval = hash_subset(squad, "eval", 0.3, "s")
    assert not _ids(train) & _ids(evals) and _ids(train) | _ids(evals) == _ids(squad)
    assert c_train["kept"] + c_eval["kept"] == 600 and 140 < c_eval["kept"] < 220
    assert _ids(hash_subset(_squad(600, shuffle_seed=3), "eval", 0.3, "s")[0]) == _ids(evals)
    assert _ids(hash_subset(squad, "eval", 0.3, "other salt")[0]) != _ids(evals)
    assert all(p["qas"] for a in evals["data"] for p in a["paragraphs"])  # no empty paragraphs kept
    assert in_eval_part("q1", 1.0, "s") and not in_eval_part("q1", 0.0, "s")
    with pytest.raises(ValueError, match="part"):
        hash_subset(squad, "dev", 0.5)


def test_builder_chain_applies_in_order(tmp_path):
    (tmp_path / "src.json").write_text(json.dumps(_squad(30)), encoding="utf-8")
    spec = {"source": "src.json", "optional": False, "builder": [
        {"_target_": "mrc.data.subsets.hash_subset", "_partial_": True, "part": "eval", "eval_share": 0.5, "salt": "x"},
        {"_target_": "mrc.data.subsets.hash_subset", "_partial_": True, "part": "train", "eval_share": 0.5, "salt": "y"}]}
    path, counts = materialise("chain", spec, tmp_path, tmp_path / "run")
    assert counts["step0"]["kept"] == counts["step1"]["total"]
    assert _ids(json.loads(path.read_text(encoding="utf-8"))) == {
        f"q{i}" for i in range(30) if in_eval_part(f"q{i}", 0.5, "x") and not in_eval_part(f"q{i}", 0.5, "y")}


@pytest.mark.slow
def test_overlap_between_train_and_eval_is_refused(tmp_path):
    cfg = compose_cfg(DEMO + ["head=softmax", "+data.eval.leak=demo/train.json"], tmp_path)
    with pytest.raises(ValueError, match="'leak'.*shares"):
        run(cfg, tmp_path)
    check_overlap([], {})  # nothing to compare: fine


def test_best_window_prefers_question_characters():
    ctx = "黄河很长。长江全长6300公里，是中国第一长河。"
    win = best_window("长江有多长？", ctx, 4)
    assert len(win) == 4 and sum(c in "长江" for c in win) >= 3
    assert best_window("？", "abc", 10) == "abc" and best_window("x", "", 5) == ""


@pytest.mark.slow
def test_lexical_cli_writes_a_run_the_report_reads(tmp_path):
    out = tmp_path / "lex"
    demo = [o for o in DEMO if not o.startswith(("encoder.", "trainer.", "logger"))]
    proc = subprocess.run([sys.executable, "-m", "mrc", "lexical", *demo, "lexical.width=6", f"hydra.run.dir={out}"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["splits"]) == {"in_domain", "over_sensitivity", "over_stability", "generalization", "checklist"}
    assert 0 < metrics["splits"]["in_domain"]["F1"] < 100 and metrics["baseline"]["width"] == 6
    preds = json.loads((out / "predictions" / "in_domain.json").read_text())
    assert all(len(p) == 6 for p in preds.values())
    assert "head=lexical" in yaml.safe_load((out / ".hydra" / "overrides.yaml").read_text())
    rep = subprocess.run([sys.executable, "-m", "mrc.report", str(out), "--out", str(tmp_path / "rep")],
                         capture_output=True, text=True, cwd=ROOT)
    assert rep.returncode == 0 and "lexical" in (tmp_path / "rep" / "report.csv").read_text()


def test_cpu_small_composes_without_overlap_by_construction(tmp_path):
    cfg = compose_cfg(["experiment=cpu_small", "head=globalpointer"], tmp_path)
    assert cfg.encoder.layers == 4 and cfg.encoder.hidden_size == 256 and cfg.head.rope is False
    assert cfg.data.check_overlap is True and len(cfg.data.train) == 3


@pytest.mark.skipif(not (SHARED_DATA / "dureader_robust" / "dev.json").is_file(),
                    reason="../shared/data (benchmark data) is not present")
@pytest.mark.slow
def test_cpu_small_smoke_on_shared_data(tmp_path):
    cfg = compose_cfg(["experiment=cpu_small", "head=softmax", f"data.root={SHARED_DATA}", *TINY,
                       "data.limit_train=60", "data.limit_eval=12", "data.max_len=64", "data.doc_stride=16"], tmp_path)
    run(cfg, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["splits"]) == {"in_domain", "over_sensitivity", "over_stability", "generalization", "checklist"}
    train_build = [s["build"] for s in metrics["data"]["train"] if "build" in s][0]
    eval_build = metrics["data"]["eval"]["in_domain"]["build"]
    assert train_build["kept"] + eval_build["kept"] == 1417  # the two halves of DuReader-robust dev


def test_cpu_small_per_encoder_settings_and_stable_job_dirs(tmp_path):
    from tests.train.test_sweep import hydra_cfg

    tiny = compose_cfg(["experiment=cpu_small", "encoder=tiny"], tmp_path)
    zh = compose_cfg(["experiment=cpu_small", "encoder=tiny_zh"], tmp_path)
    minilm = compose_cfg(["experiment=cpu_small", "encoder=minilm_zh"], tmp_path)
    assert tiny.optim.encoder_lr == 1e-3 and zh.optim.encoder_lr < tiny.optim.encoder_lr
    assert "layers" not in zh.encoder and zh.encoder.name_or_path.endswith("tiny_zh/encoder")
    assert "layers" not in minilm.encoder and float(minilm.trainer.epochs) < float(tiny.trainer.epochs)
    assert tiny.trainer.eval_each_epoch is False and tiny.trainer.resume_every > 0
    sweep = OmegaConf.to_container(hydra_cfg(["experiment=cpu_small"]).hydra.sweep, resolve=False)
    assert sweep["dir"].endswith("/cpu_small") and sweep["subdir"] == "${hydra.job.override_dirname}"
