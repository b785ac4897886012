"""``python -m mrc.bench --device ...``: the training-speed bench (ours vs the HF Trainer peer) on the CPU with the tiny
shape, its FLOP arithmetic, its variants and the GPU peak table (no timing assertions)."""
import json

import numpy as np
import pytest

from mrc.bench import ours as bench
from mrc.bench import peer as bench_peer
from mrc.bench import train_speed
from mrc.bench.peaks import PEAK_TFLOPS, gpu_key, peak_flops
from tests.train.test_e2e import fake_gpu

TINY = ["--device", "cpu", "--shape", "tiny", "--windows", "32", "--batch-size", "8", "--warmup-batches", "1"]


@pytest.mark.parametrize("name,precision,tflops", [
    ("NVIDIA H100 80GB HBM3", "bf16", 989.5), ("NVIDIA H100 PCIe", "fp16", 756.5), ("NVIDIA H100 NVL", "tf32", 417.5),
    ("NVIDIA H200", "fp32", 67.0), ("NVIDIA H200 NVL", "bf16", 835.5), ("NVIDIA A100-SXM4-80GB", "tf32", 156.0),
    ("NVIDIA A100 80GB PCIe", "bf16", 312.0), ("NVIDIA A10", "fp16", 125.0), ("NVIDIA L4", "bf16", 121.0),
    ("Tesla T4", "fp16", 65.0), ("Tesla V100-SXM2-16GB", "fp16", 125.0), ("Tesla V100-PCIE-32GB", "fp32", 14.0),
])
def test_peak_table_finds_gpus_by_their_cuda_names(name, precision, tflops):
    peak, source = peak_flops(name, precision)
    assert peak == tflops * 1e12 and "datasheet" in source and "dense" in source


@pytest.mark.parametrize("name", ["NVIDIA A10G", "NVIDIA L40S", "NVIDIA GH200 480GB", "Tesla V100S-PCIE-32GB",
                                  "NVIDIA GeForce RTX 4090"])
def test_an_unknown_gpu_gets_no_peak_and_says_why(name):
    assert gpu_key(name) is None
    peak, why = peak_flops(name, "bf16")
    assert peak is None and "--peak-tflops" in why


def test_peak_table_is_complete_and_dense():
    for key, row in PEAK_TFLOPS.items():
        assert set(row) == {"fp32", "tf32", "bf16", "fp16"}, key
        assert row["fp16"] >= row["fp32"] and all(v is None or v < 1000 for v in row.values()), key  # no sparse rate
    assert peak_flops("Tesla T4", "bf16") == (None, "T4 has no bf16 tensor cores")


def test_rates_count_model_and_attention_flops():
    got = train_speed.rates({"windows": 10, "seconds": 2.0}, np.array([4, 6]), n_params=100, layers=2, hidden=8,
                            peak=1e4)
    # 5 windows/s x mean 5 tokens; 6 x 100 x 25 = 15000 FLOP/s; attention 12 x 2 x 8 x 5 x mean(16, 36) = 24960
    assert got["windows_per_s"] == 5.0 and got["tokens_per_s"] == 25.0
    assert got["mfu"] == 1.5 and got["mfu_with_attention"] == round((15000 + 24960) / 1e4, 4)
    assert train_speed.rates({"windows": 10, "seconds": 2.0}, np.array([4]), 100, 2, 8, None)["mfu"] is None


def test_variants_parse_and_default_by_device(monkeypatch):
    parse = train_speed.parse_variants
    assert parse("fp32, bf16+compile,auto", "cpu") == [train_speed.Variant("fp32"), train_speed.Variant("bf16", True),
                                                        train_speed.Variant("fp32")]
    for bad in ("fp8", "bf16+eager", "tf32"):
        with pytest.raises(SystemExit, match="mrc.bench"):
            parse(bad, "cpu")
    assert train_speed.default_variants("cpu") == "fp32"
    fake_gpu(monkeypatch, (9, 0))
    assert train_speed.default_variants("cuda") == "fp32,bf16,fp16,bf16+compile,fp16+compile"
    assert [v.name for v in parse("auto,auto+compile,tf32", "cuda")] == ["bf16", "bf16+compile", "tf32"]
    fake_gpu(monkeypatch, (7, 5))
    assert train_speed.default_variants("cuda") == "fp32,fp16,fp16+compile"
    assert parse("auto", "cuda")[0].autocast == "fp16" and train_speed.Variant("tf32").autocast == "fp32"


def test_synthetic_windows_mix_lengths_and_label_their_context():
    ws = train_speed.synthetic_windows(200, 64, 500, seed=0)
    lengths = np.array([len(w.input_ids) for w in ws])
    assert lengths.max() == 64 and lengths.min() >= 16 and 0.6 < (lengths == 64).mean() < 0.9
    for w in ws:
        (s, e), = w.labels
        assert w.span_mask[s] and w.span_mask[e] and s <= e < len(w.input_ids) and w.input_ids.max() < 500


def test_pad_collator_pads_like_the_hf_collator():
    ws = train_speed.synthetic_windows(3, 16, 50, seed=1)
    feats = bench_peer.window_features(ws)
    batch = bench_peer.PadCollator(0)(feats)
    L = max(len(w.input_ids) for w in ws)
    assert batch["input_ids"].shape == (3, L) and batch["attention_mask"].sum().item() == sum(len(w.input_ids) for w in ws)
    assert batch["start_positions"].tolist() == [w.labels[0][0] for w in ws]


@pytest.mark.slow
def test_training_speed_bench_runs_ours_and_the_peer_on_the_cpu(tmp_path):
    out = tmp_path / "speed.json"
    assert bench.main(TINY + ["--peak-tflops", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    runs = {(r["side"], r["variant"]): r for r in result["runs"]}
    assert set(runs) == {("ours", "fp32"), ("hf", "fp32")} and result["device"] == "cpu"
    assert runs["ours", "fp32"]["windows"] == 32 and runs["hf", "fp32"]["windows"] == 24  # the peer: 3 of 4 steps timed
    n, mean = result["model"]["matmul_params"], result["inputs"]["mean_length"]
    for r in runs.values():
        assert r["windows_per_s"] > 0 and r["tokens_per_s"] == pytest.approx(r["windows_per_s"] * mean, rel=1e-3)
        assert r["mfu"] == pytest.approx(6 * n * r["tokens_per_s"] / 2e12, rel=1e-2, abs=1e-4)
        assert r["mfu_with_attention"] >= r["mfu"] and r["peak_kind"] == "process RSS" and r["peak_mb"] > 0
        assert r["attention"] == "sdpa" and np.isfinite(r["loss"])
    assert result["model"]["layers"] == 1 and result["model"]["vocab"] == 500 and "fp32" in result["ours_vs_hf"]
    assert "| ours | fp32 |" in out.with_suffix(".md").read_text()
    # without a peak there is no MFU on the CPU, and the reason is recorded
    assert bench.main(TINY + ["--sides", "ours", "--out", str(out)]) == 0
    (row,) = json.loads(out.read_text())["runs"]
    assert row["mfu"] is None and "--peak-tflops" in row["peak_source"]


def test_a_failing_variant_is_a_row_and_a_non_zero_exit(tmp_path, monkeypatch):
    def broken(*args):
        raise RuntimeError("out of memory\nmore")
    monkeypatch.setattr(train_speed, "run_peer", broken)
    out = tmp_path / "speed.json"
    assert bench.main(TINY + ["--out", str(out)]) == 1
    rows = {r["side"]: r for r in json.loads(out.read_text())["runs"]}
    assert rows["hf"]["error"] == "RuntimeError: out of memory" and rows["ours"]["windows_per_s"] > 0


def test_too_few_windows_for_the_warm_up_are_refused():
    with pytest.raises(SystemExit, match="--warmup-batches"):
        bench.main(["--device", "cpu", "--shape", "tiny", "--windows", "8", "--batch-size", "8"])
