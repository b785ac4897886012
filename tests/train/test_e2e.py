"""Tiny end-to-end runs: every head through the whole pipeline, the CLIs, and the real data when present."""
import json
import os
import re
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

from mrc.train.pipeline import run
from tests.conftest import ROOT, SHARED_DATA

TINY = ["encoder.layers=1", "encoder.hidden_size=32", "encoder.intermediate_size=64", "encoder.heads=2",
        "data.max_len=64", "data.max_query_len=16", "data.doc_stride=16", "trainer.epochs=1",
        "trainer.batch_size=16", "trainer.progress=false", "logger=none",
        # fp32 pinned: tests compare runs across processes, and auto decides bf16 by timing a product
        "trainer.cpu_bf16=false"]
DEMO = ["experiment=demo", "data.prepare.n_train=160", "data.prepare.n_dev=24", "data.prepare.n_generalization=12",
        "data.prepare.n_checklist=30"] + TINY


def compose_cfg(overrides, out_dir):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[*overrides, f"paths.output_dir={out_dir}"])


@pytest.mark.parametrize("head,match", [("softmax", False), ("globalpointer", False),
                                        ("efficient_globalpointer", True)])
@pytest.mark.slow
def test_demo_run_every_head(tmp_path, head, match):
    cfg = compose_cfg(DEMO + [f"head={head}", f"model.match_feature={match}"], tmp_path)
    f1 = run(cfg, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    split = metrics["splits"]["in_domain"]
    assert split["TOTAL"] == 24 and split["SKIP"] == 0 and f1 == split["F1"]
    assert sum(g["TOTAL"] for g in split["by_type"].values()) == 24  # demo questions carry a relation type
    assert "NoAns" not in split  # every dev question is answerable; the checklist has unanswerable ones
    splits = metrics["splits"]
    assert set(splits) == {"in_domain", "over_sensitivity", "over_stability", "generalization", "checklist"}
    assert [splits[n]["TOTAL"] for n in splits] == [24, 24, 24, 12, 30]
    assert 0 <= splits["over_sensitivity"]["consistency"] <= 100 and "distractor_capture" in splits["over_stability"]
    paired = splits["over_sensitivity"]["paired_by_type"]  # each rewrite rule against the same questions unrewritten
    assert sum(g["TOTAL"] for g in paired.values()) == 24
    assert all(abs(g["F1_original"] - g["F1"] - g["drop"]) < 1e-2 for g in paired.values())
    check = splits["checklist"]
    assert check["NoAns"]["TOTAL"] + check["HasAns"]["TOTAL"] == 30 and check["NoAns"]["TOTAL"] > 0
    assert set(check["by_type"]) <= {"in-domain", "paraphrase", "no_fact", "no_entity"}
    assert metrics["data"]["eval"]["over_sensitivity"]["build"]["changed"] > 0
    assert metrics["job"]["tags"][0] == f"head={cfg.head._target_.rsplit('.', 1)[-1]}"
    used = metrics["train"]["windows_trained"]  # every answer window + a 20 % sample of the others
    assert metrics["best_epoch"] == 1 and metrics["train"]["steps"] == -(-used // 16)
    assert 0.2 * metrics["train"]["windows"] < used < metrics["train"]["windows"]
    preds = json.loads((tmp_path / "predictions" / "in_domain.json").read_text())
    assert len(preds) == 24 and all(isinstance(v, str) for v in preds.values())
    scores = json.loads((tmp_path / "scores" / "in_domain.json").read_text())
    assert sum(s["f1"] for s in scores.values()) / 24 * 100 == pytest.approx(split["F1"], abs=1e-3)
    errors = [json.loads(line) for line in (tmp_path / "errors" / "in_domain.jsonl").read_text().splitlines()]
    assert len(errors) == sum(s["em"] < 1 for s in scores.values())
    assert all(e["predicted"] == preds[e["id"]] and e["type"] and "【" in e["gold_context"] for e in errors)
    # The official scorer CLI agrees with metrics.json.
    ref = tmp_path / "data" / "demo" / "dev.json"
    out = subprocess.run([sys.executable, "-m", "mrc", "evaluate", str(ref), str(tmp_path / "predictions" / "in_domain.json")],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    assert json.loads(out.stdout) == {k: split[k] for k in ("F1", "EM", "TOTAL", "SKIP")}
    # The saved checkpoint reproduces the run's predictions through mrc.predict.
    pred_out = tmp_path / "again.json"
    subprocess.run([sys.executable, "-m", "mrc", "predict", str(tmp_path / "checkpoint"), str(ref), str(pred_out),
                    "--nbest", str(tmp_path / "nbest.json")], capture_output=True, text=True, check=True, cwd=ROOT)
    assert json.loads(pred_out.read_text()) == preds
    nbest = json.loads((tmp_path / "nbest.json").read_text())
    qid, first = next(iter(nbest.items()))
    assert "null_score" in first and preds[qid] in ("", first["candidates"][0]["text"])


@pytest.mark.slow
def test_predict_single_question(tmp_path):
    # decode.null_threshold=null: always answer (a briefly trained model may still prefer the null slot)
    cfg = compose_cfg(DEMO + ["head=softmax", "decode.null_threshold=null"], tmp_path)
    run(cfg, tmp_path)
    out = subprocess.run([sys.executable, "-m", "mrc", "predict", str(tmp_path / "checkpoint"), "--question",
                          "清海村的人口大约是多少？", "--context", "清海村的常住人口约为165万人，近年来略有增长。"],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    answer = json.loads(out.stdout)["answer"]
    assert answer and answer in "清海村的常住人口约为165万人，近年来略有增长。"
    bad = subprocess.run([sys.executable, "-m", "mrc", "predict", str(tmp_path / "nope"), "--question", "a",
                          "--context", "b"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "nope" in bad.stderr


@pytest.mark.slow
def test_run_py_cli_writes_into_hydra_run_dir(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), *DEMO, "head=globalpointer", "logger=wandb",
                           f"hydra.run.dir={run_dir}"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rel in ("metrics.json", "config.yaml", "predictions/in_domain.json", "checkpoint/span.safetensors",
                "checkpoint/encoder/model.safetensors", ".hydra/config.yaml"):
        assert (run_dir / rel).is_file(), rel
    assert list((run_dir / "wandb").glob("offline-run-*")), "W&B offline run files expected"
    assert not (tmp_path / "outputs").exists()
    # the last line says where the run and its checkpoint are (the serve command needs the latter)
    done = [ln for ln in (run_dir / "run.log").read_text(encoding="utf-8").splitlines() if " - done: " in ln]
    assert done and done[-1].endswith(f"checkpoint {run_dir / 'checkpoint'} (serve it: python -m mrc serve "
                                      f"{run_dir / 'checkpoint'})")


@pytest.mark.slow
def test_every_experiment_composes_with_every_head(tmp_path):
    heads = sorted(p.stem for p in (ROOT / "conf" / "head").glob("*.yaml"))
    for exp in sorted((ROOT / "conf" / "experiment").glob("*.yaml")):
        for head in heads:
            cfg = compose_cfg([f"experiment={exp.stem}", f"head={head}"], tmp_path)
            assert cfg.encoder._target_ and cfg.head._target_ and cfg.data.in_domain in cfg.data.eval


def test_experiment_head_specialisation(tmp_path):
    """experiment_head/<experiment>_<head>.yaml applies only to that pair."""
    demo_gp = compose_cfg(["experiment=demo", "head=globalpointer"], tmp_path)
    assert demo_gp.head.rope is False and demo_gp.head.head_size == 64
    assert compose_cfg(["head=globalpointer"], tmp_path).head.rope is True
    assert "rope" not in compose_cfg(["experiment=demo", "head=softmax"], tmp_path).head


@pytest.mark.skipif(not (SHARED_DATA / "dureader_robust" / "dev.json").is_file(),
                    reason="../shared/data (benchmark data) is not present")
@pytest.mark.slow
def test_dureader_robust_smoke(tmp_path):
    """Trains on the real demo_train file and evaluates part of the real dev set (tiny random encoder)."""
    vocab = SHARED_DATA.parent / "vocab" / "bert-base-chinese" / "vocab.txt"
    cfg = compose_cfg(TINY + ["encoder=tiny", "data=dureader_robust", f"data.root={SHARED_DATA}",
                              "data.train=[dureader_robust/demo_train.json]", "data.limit_eval=40",
                              "data.max_len=128", "data.max_query_len=32", "data.doc_stride=32",
                              f"encoder.vocab_file={vocab if vocab.is_file() else 'null'}"], tmp_path)
    run(cfg, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    splits = metrics["splits"]
    assert set(splits) == {"in_domain", "over_sensitivity", "over_stability", "generalization", "checklist"}
    assert all(s["TOTAL"] == 40 for s in splits.values())
    assert 0 <= splits["over_sensitivity"]["consistency"] <= 100 and "distractor_capture" in splits["over_stability"]
    assert metrics["data"]["eval"]["over_stability"]["build"]["total"] == 1417
    assert (tmp_path / "splits" / "over_stability.json").is_file()
    assert metrics["data"]["train"][0]["kept"] == 100
    assert len(json.loads((tmp_path / "predictions" / "in_domain.json").read_text())) == 40


@pytest.mark.slow
def test_fractional_epochs_evaluated_only_at_the_end(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr("mrc.train.loop.PROGRESS_EVERY_S", 0.0)  # every log_every steps, however fast
    cfg = compose_cfg(DEMO + ["head=softmax", "trainer.epochs=1.5", "trainer.eval_each_epoch=false",
                              "trainer.null_window_keep=1.0", "trainer.log_every=2"], tmp_path)
    caplog.set_level("INFO")
    f1 = run(cfg, tmp_path)
    said = caplog.text  # the slow first steps say what they are doing (issue 16.11)
    assert "preparing data under" in said and "building the encoder (tiny_bert)" in said and "tokenizing" in said
    assert "optimizer step 2, loss" in said and "epoch ends in ~" in said  # no bar under pytest: progress lines
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for name, split in metrics["splits"].items():  # evaluation says where it is, split by split
        assert f"scored split {name}: {split['TOTAL']} questions" in said
    first, last = metrics["history"]
    assert set(first) == {"epoch", "loss"} and last["epoch"] == 2 and last["in_domain/F1"] == f1
    assert metrics["best_epoch"] == 2 and metrics["train"]["epochs"] == 1.5
    per_epoch = -(-metrics["train"]["windows"] // 16)  # every window each epoch, batch 16
    assert metrics["train"]["steps"] == per_epoch + round(per_epoch * 0.5)


@pytest.mark.parametrize("mode,units,speedup,expected", [
    ("auto", False, 3.0, "fp32"),     # no native units: fp32, whatever a product measures
    ("auto", True, 0.6, "fp32"),      # units, but bf16 measured slower: fp32
    ("auto", True, 1.7, "bf16-matmul"),
    ("false", True, 2.3, "fp32"), ("true", False, 0.6, "bf16-matmul"), (True, True, 0.6, "bf16-matmul"),
    (False, True, 3.0, "fp32"),
])
def test_cpu_bf16_auto_uses_bf16_where_native_and_faster(monkeypatch, caplog, mode, units, speedup, expected):
    import torch
    from omegaconf import OmegaConf
    from mrc.train.precision import choose_precision
    from mrc.train.precision import Precision
    monkeypatch.setattr("mrc.train.precision.cpu_has_bf16", lambda: units)
    monkeypatch.setattr("mrc.train.precision.bf16_matmul_speedup", lambda via: speedup)
    monkeypatch.setattr("mrc.train.precision.bf16_math_mode_unavailable", lambda: None)
    fake_gpu(monkeypatch, (8, 0))
    caplog.set_level("INFO")
    assert choose_precision(OmegaConf.create({"bf16": True, "cpu_bf16": mode}), "cpu") == Precision(expected)
    assert f"precision {'bf16 via matmul' if expected != 'fp32' else 'fp32'} on the CPU" in caplog.text
    autocast = OmegaConf.create({"bf16": True, "cpu_bf16": "true", "cpu_bf16_via": "autocast"})
    assert choose_precision(autocast, "cpu") == Precision("bf16-autocast", torch.bfloat16)
    assert choose_precision(autocast, "cuda") == Precision("bf16", torch.bfloat16, scaler=False)
    assert choose_precision(OmegaConf.create({"bf16": False, "cpu_bf16": True}), "cuda:1") == Precision("fp32")


def test_cpu_bf16_via_matmul_falls_back_to_autocast_where_the_math_mode_does_nothing(monkeypatch, caplog):
    import torch
    from omegaconf import OmegaConf
    from mrc.model.cpu import bf16_math_mode_unavailable, bf16_math_mode_works
    from mrc.train.precision import Precision, choose_precision
    why = bf16_math_mode_unavailable()  # the real probe runs on this machine
    assert (why is None) == bf16_math_mode_works() and (why is None or "bit-identical to fp32" in why)
    monkeypatch.setattr("mrc.train.precision.cpu_has_bf16", lambda: True)
    monkeypatch.setattr("mrc.train.precision.bf16_matmul_speedup", lambda via: 1.7 if via == "autocast" else 3.0)
    monkeypatch.setattr("mrc.train.precision.bf16_math_mode_unavailable", lambda: "it ignores oneDNN's bf16 math mode")
    caplog.set_level("INFO")
    for mode in ("true", "auto"):  # forced or chosen: never a bf16 run that is fp32 underneath
        assert choose_precision(OmegaConf.create({"cpu_bf16": mode}), "cpu") == Precision("bf16-autocast", torch.bfloat16)
    assert "ignores oneDNN's bf16 math mode" in caplog.text and "precision bf16 via autocast" in caplog.text
    assert choose_precision(OmegaConf.create({"cpu_bf16": "false"}), "cpu") == Precision("fp32")


def fake_gpu(monkeypatch, capability):
    """torch.cuda answers as a GPU of ``capability`` would (bf16 native from 8.0)."""
    import torch
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: capability >= (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: f"fake GPU {capability}")


@pytest.mark.parametrize("capability,trainer,expected", [
    ((9, 0), {}, "bf16"), ((8, 0), {"bf16": True}, "bf16"), ((7, 5), {}, "fp16"), ((7, 0), {}, "fp16"),
    ((6, 1), {}, "fp32"),
    ((9, 0), {"bf16": False}, "fp32"),                          # an old config's bf16: false still means fp32
    ((9, 0), {"bf16": False, "precision": "bf16"}, "bf16"),     # an explicit precision wins over it
    ((9, 0), {"precision": "fp16"}, "fp16"), ((7, 5), {"precision": "fp32"}, "fp32"),
    ((6, 1), {"precision": "fp16"}, "fp16"),
])
def test_cuda_precision_auto_picks_bf16_fp16_or_fp32_by_gpu(monkeypatch, capability, trainer, expected):
    import torch
    from omegaconf import OmegaConf
    from mrc.train.precision import choose_precision
    from mrc.train.precision import Precision
    fake_gpu(monkeypatch, capability)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[expected]
    assert choose_precision(OmegaConf.create(trainer), "cuda") == Precision(expected, dtype, expected == "fp16")


@pytest.mark.parametrize("device,trainer,env,message", [
    ("cuda", {"precision": "bf16"}, None, "trainer.precision=bf16: this GPU (compute capability 7.5) has no native bf16"),
    ("cuda", {"precision": "fp8"}, None, "trainer.precision='fp8': must be one of auto, fp32, bf16, fp16"),
    ("cpu", {"precision": "fp16"}, None, "trainer.precision=fp16 is for CUDA; on the CPU use trainer.precision=auto"),
    ("cpu", {"precision": "bf16"}, None, "(or set trainer.cpu_bf16=true)"),
])
def test_precisions_a_device_cannot_run_are_refused(monkeypatch, device, trainer, env, message):
    from omegaconf import OmegaConf
    from mrc.train.inputs import ConfigError
    from mrc.train.precision import choose_precision
    fake_gpu(monkeypatch, (7, 5))
    monkeypatch.delenv("MRC_CPU_FP16", raising=False)
    with pytest.raises(ConfigError, match=re.escape(message)):
        choose_precision(OmegaConf.create(trainer), device)


def test_cpu_fp16_runs_only_when_asked_for_by_the_env_var_and_fp32_is_forced(monkeypatch):
    import torch
    from omegaconf import OmegaConf
    from mrc.train.precision import choose_precision
    from mrc.train.precision import Precision
    monkeypatch.setenv("MRC_CPU_FP16", "1")
    assert choose_precision(OmegaConf.create({"precision": "fp16"}), "cpu") == Precision("fp16", torch.float16, True)
    assert choose_precision(OmegaConf.create({"precision": "fp32", "cpu_bf16": "true"}), "cpu") == Precision("fp32")


@pytest.mark.parametrize("trainer,message", [
    ({"cpu_bf16": "sometimes"}, "trainer.cpu_bf16='sometimes': must be auto, true or false"),
    ({"cpu_bf16": "true", "cpu_bf16_via": "amx"}, "trainer.cpu_bf16_via='amx': must be one of matmul, autocast"),
])
def test_cpu_bf16_values_are_checked(trainer, message):
    from omegaconf import OmegaConf
    from mrc.train.inputs import ConfigError
    from mrc.train.precision import choose_precision
    with pytest.raises(ConfigError, match=re.escape(message)):
        choose_precision(OmegaConf.create({"bf16": True, **trainer}), "cpu")


@pytest.mark.slow
def test_bf16_matmuls_train_in_fp32_tensors_and_are_switched_off_after_the_run(tmp_path, monkeypatch):
    import torch
    from mrc.model.span_model import SpanModel
    seen, forward = [], SpanModel.forward

    def spy(self, *args, **kwargs):
        seen.append((torch.backends.mkldnn.matmul.fp32_precision, torch.is_autocast_enabled("cpu")))
        return forward(self, *args, **kwargs)
    monkeypatch.setattr(SpanModel, "forward", spy)
    # the wiring of the math mode, on every machine (where this torch build ignores it, the run takes autocast:
    # test_cpu_bf16_via_matmul_falls_back_to_autocast_where_the_math_mode_does_nothing)
    monkeypatch.setattr("mrc.train.precision.bf16_math_mode_unavailable", lambda: None)
    before = torch.backends.mkldnn.matmul.fp32_precision
    run(compose_cfg(DEMO + ["head=softmax", "trainer.cpu_bf16=true"], tmp_path), tmp_path)
    assert set(seen) == {("bf16", False)}  # training and evaluation: bf16 products, no autocast
    assert torch.backends.mkldnn.matmul.fp32_precision == before  # restored for whatever runs next
    assert json.loads((tmp_path / "metrics.json").read_text())["train"]["precision"] == "bf16-matmul"


@pytest.mark.slow
def test_cpu_bf16_trains_and_evaluates_under_autocast(tmp_path, caplog, monkeypatch):
    import torch
    from mrc.model.span_model import SpanModel
    monkeypatch.setattr("mrc.train.precision.cpu_has_bf16", lambda: False)  # the warning, on any CPU
    seen, forward = [], SpanModel.forward

    def spy(self, *args, **kwargs):
        seen.append((self.training, torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        scores = forward(self, *args, **kwargs)
        assert all(t.dtype == torch.float32 for t in (scores if isinstance(scores, tuple) else (scores,)))
        return scores  # the head's scores stay fp32 under bf16 autocast
    monkeypatch.setattr(SpanModel, "forward", spy)
    caplog.set_level("INFO")
    f1 = run(compose_cfg(DEMO + ["head=globalpointer", "trainer.cpu_bf16=true", "trainer.cpu_bf16_via=autocast"],
                         tmp_path), tmp_path)
    assert "bf16 via autocast on the CPU" in caplog.text and "no AVX512-BF16 / AMX units" in caplog.text
    assert {training for training, _, _ in seen} == {True, False}  # training batches and evaluation batches
    assert all(on and dtype == torch.bfloat16 for _, on, dtype in seen)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["splits"]["in_domain"]["F1"] == f1 and metrics["train"]["precision"] == "bf16-autocast"
    from safetensors import safe_open
    files = sorted((tmp_path / "checkpoint").rglob("*.safetensors"))
    assert len(files) == 2  # the encoder's and the span model's
    for file in files:
        with safe_open(str(file), "pt") as f:
            assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}  # the weights stay fp32
