"""experiments/gpu/check.sh keeps working without a GPU: its --dry-run runs every path on the CPU."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.train.test_e2e import ROOT


@pytest.mark.slow
def test_gpu_check_dry_run_writes_its_report(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MRC_GPU_DRY_RUN", None)
    proc = subprocess.run(["bash", str(ROOT / "experiments" / "gpu" / "check.sh"), str(tmp_path), "--dry-run"],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:] + (tmp_path / "pytest.log").read_text()[-4000:]
    assert json.loads((tmp_path / "check.json").read_text())["tests_ok"]
    speed = json.loads((tmp_path / "speed.json").read_text())
    runs = {(r["precision"], r["compile"]) for r in speed["runs"]}
    assert runs == {("fp32", False), ("bf16", False), ("fp16", False), ("fp32", True)}
    assert all(r["windows_per_s"] > 0 for r in speed["runs"]) and "| fp16 |" in (tmp_path / "speed.md").read_text()
    assert " passed" in (tmp_path / "pytest.log").read_text() and " failed" not in (tmp_path / "pytest.log").read_text()
    bench = json.loads((tmp_path / "bench_train.json").read_text())  # (c): ours and the HF peer, tiny shape, CPU
    assert {(r["side"], r["variant"]) for r in bench["runs"]} == {(s, v) for s in ("ours", "hf") for v in ("fp32", "fp16")}
    assert all("error" not in r and r["windows_per_s"] > 0 and r["mfu"] is None for r in bench["runs"])
    assert json.loads((tmp_path / "check.json").read_text())["bench_ok"] and (tmp_path / "bench_train.md").is_file()


def test_gpu_check_refuses_a_missing_out_dir():
    proc = subprocess.run(["bash", str(ROOT / "experiments" / "gpu" / "check.sh")], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "usage: bash experiments/gpu/check.sh OUT_DIR [--dry-run]" in proc.stderr


def test_dureader_robust_gpu_experiment_composes(tmp_path):
    from tests.train.test_e2e import compose_cfg
    cfg = compose_cfg(["experiment=dureader_robust_gpu"], tmp_path)
    assert cfg.encoder.name_or_path == "hfl/chinese-roberta-wwm-ext" and list(cfg.data.train) == ["dureader_robust/train.json"]
    assert (cfg.data.max_len, cfg.data.doc_stride, cfg.trainer.batch_size, cfg.trainer.epochs) == (384, 128, 12, 2)
    assert cfg.optim.encoder_lr == cfg.optim.head_lr == 3e-5 and cfg.data.limit_train is None
    assert cfg.trainer.precision == "auto" and cfg.trainer.compile is False and cfg.trainer.device == "cuda"
    assert set(cfg.data.eval) == {"in_domain", "over_sensitivity", "over_stability", "generalization", "checklist"}
    assert cfg.data.eval_splits is None
