"""experiments/inference/measure.py on a tiny checkpoint: every variant measured, the table and JSON written."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mrc.serve.export import export_onnx
from tests.conftest import ROOT
from tests.serve.helpers import make_checkpoint, squad_file


@pytest.mark.slow
def test_measure_fp32_int8_bf16_onnx_and_onnx_int8(tmp_path):
    ckpt = make_checkpoint(tmp_path / "ckpt", "efficient_globalpointer")
    onnx = tmp_path / "m.onnx"
    export_onnx(ckpt, onnx)
    dev = squad_file(tmp_path / "dev.json")
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "experiments/inference/measure.py", str(ckpt), "--input", str(dev),
                           "--threads", "1", "--runs", "1", "--repeats", "20", "--limit", "3", "--onnx", str(onnx),
                           "--variants", "fp32,int8,bf16,onnx,onnx_int8", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    rows = {r["variant"]: r for r in results["variants"]}
    assert set(rows) == {"fp32", "int8", "bf16", "onnx", "onnx_int8"} and results["meta"]["threads"] == 1
    assert (out / "model_int8.onnx").is_file()  # exported with --quantize int8 for the onnx_int8 row
    for r in rows.values():
        assert "error" not in r and r["questions"] == 3 and r["latency_repeats"] == 20
        assert 0 <= r["F1"] <= 100 and r["examples_per_s"] > 0 and r["latency_ms_p95"] >= r["latency_ms_p50"] > 0
        assert r["peak_rss_mb"] > 0 and r["threads"] == 1 and r["latency_context_chars"] == 500
    assert rows["fp32"]["agreement"] == 100 and rows["fp32"]["speedup"] == 1
    assert rows["onnx"]["agreement"] >= 95 and rows["int8"]["agreement"] >= 95  # 3 questions: all agree
    assert rows["onnx_int8"]["agreement"] >= 66
    md = (out / "results.md").read_text()
    assert md.count("\n| ") == 6 and "agreement with fp32" in md  # header + 5 variants
