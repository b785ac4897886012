"""Declared sweeps: experiment and launcher configs compose, W&B identity per job, and a tiny real sweep
reported end to end by mrc.report."""
import csv
import json
import subprocess
import sys
import types

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from mrc.train.loggers import WandbLogger, job_info
from tests.conftest import ROOT

TINY = ["encoder.layers=1", "encoder.hidden_size=32", "encoder.intermediate_size=64", "encoder.heads=2",
        "data.max_len=64", "data.max_query_len=16", "trainer.batch_size=16", "data.prepare.n_train=120",
        "data.prepare.n_dev=16", "data.prepare.n_generalization=8", "data.prepare.n_checklist=16"]


def hydra_cfg(overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[*overrides, "paths.output_dir=/tmp/unused"], return_hydra_config=True)


def test_experiment_files_start_with_their_command():
    for path in sorted((ROOT / "conf" / "experiment").glob("*.yaml")):
        lines = path.read_text(encoding="utf-8").splitlines()
        assert lines[0] == "# @package _global_", path.name
        assert lines[1].startswith("# python run.py") and f"experiment={path.stem}" in lines[1], path.name
        if "sweeper" in path.read_text(encoding="utf-8"):
            assert " -m " in lines[1], f"{path.name}: a sweep needs -m in its command"


@pytest.mark.parametrize("experiment,axes", [
    ("head_x_stride", {"head": 3, "data.doc_stride": 3, "seed": 3}),
    ("encoder_compare", {"encoder": 4, "head": 3, "seed": 3}),
    ("sweep_cpu", {"head": 3, "data.doc_stride": 2, "seed": 3}),
    ("cpu_small", {"encoder": 3, "head": 3, "seed": 3}),
])
def test_sweep_axes(experiment, axes):
    params = hydra_cfg([f"experiment={experiment}"]).hydra.sweeper.params
    assert {k: len(str(v).split(",")) for k, v in params.items()} == axes
    group_options = {p.stem for g in ("head", "encoder") for p in (ROOT / "conf" / g).glob("*.yaml")}
    for key in ("head", "encoder"):
        if key in params:
            assert set(str(params[key]).split(",")) <= group_options


@pytest.mark.parametrize("launcher,target", [("local_parallel", "JoblibLauncher"), ("slurm", "SlurmLauncher")])
def test_launcher_configs_compose(launcher, target):
    cfg = hydra_cfg(["experiment=head_x_stride", f"hydra/launcher={launcher}"])
    assert cfg.hydra.launcher._target_.endswith(target)
    if launcher == "slurm":
        assert cfg.hydra.launcher.gpus_per_node == 1 and cfg.hydra.launcher.timeout_min > 0
    else:
        assert cfg.hydra.launcher.n_jobs == 2


def test_wandb_logger_groups_by_experiment_and_tags(monkeypatch):
    calls = []

    class Run:
        id = "x"

        def finish(self):
            calls.append("finish")

    fake = types.SimpleNamespace(init=lambda **kw: calls.append(kw) or Run())
    monkeypatch.setitem(sys.modules, "wandb", fake)
    job = {"experiment": "sweep_cpu", "tags": ["head=softmax", "seed=2"], "name": "head=softmax,seed=2"}
    WandbLogger(mode="offline", tags=["mine"], job=job).finish()
    WandbLogger(mode="offline", group="explicit", name="n", job=job)
    first, second = calls[0], calls[2]
    assert first["group"] == "sweep_cpu" and first["tags"] == ["mine", "head=softmax", "seed=2"]
    assert first["name"] == "head=softmax,seed=2" and first["reinit"] == "finish_previous"
    assert second["group"] == "explicit" and second["name"] == "n" and calls[1] == "finish"


def test_job_info_outside_hydra_derives_tags():
    cfg = OmegaConf.create({"head": {"_target_": "heads.globalpointer.GlobalPointer"},
                            "encoder": {"_target_": "mrc.model.encoder.tiny_bert"}, "data": {"name": "demo", "doc_stride": 48},
                            "seed": 3})
    info = job_info(cfg)
    assert info["experiment"] is None and info["overrides"] == []
    assert info["tags"] == ["head=GlobalPointer", "encoder=tiny_bert", "data=demo", "stride=48", "seed=3"]


@pytest.mark.slow
def test_cpu_sweep_end_to_end_and_report(tmp_path):
    """A shrunk experiment=sweep_cpu: 3 heads x 2 strides (seed fixed) through run.py -m, then mrc.report."""
    sweep = tmp_path / "multirun"
    env_cmd = [sys.executable, str(ROOT / "run.py"), "-m", "experiment=sweep_cpu", "seed=1", *TINY,
               "logger=wandb", "logger.mode=offline", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.run(env_cmd, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and (p / ".hydra").is_dir())
    assert len(jobs) == 6
    seen = set()
    for job in jobs:
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["job"]["experiment"] == "sweep_cpu" and metrics["job"]["choices"]["head"] in metrics["job"]["name"]
        seen.add((metrics["job"]["choices"]["head"], metrics["job"]["tags"][3]))
        assert len(metrics["splits"]) == 5
        assert len(list((job / "wandb").glob("offline-run-*"))) == 1  # one W&B run per job, never merged
    assert len(seen) == 6
    # one job "crashes": the report lists it and still reports the others
    (jobs[0] / "metrics.json").unlink()
    out = tmp_path / "report"
    rep = subprocess.run([sys.executable, "-m", "mrc.report", str(sweep), "--out", str(out), "--bootstrap", "200"],
                         capture_output=True, text=True, cwd=ROOT)
    assert rep.returncode == 0, rep.stderr[-3000:]
    rows = list(csv.DictReader((out / "report.csv").open(encoding="utf-8")))
    assert len(rows) == 5 and {r["head"] for r in rows} == {"softmax", "globalpointer", "efficient_globalpointer"}
    assert all(0 <= float(r["in_domain/f1_mean"]) <= 100 for r in rows)
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "python -m mrc.report" in md.splitlines()[0] and str(jobs[0]) in md
    for png in ("f1_vs_stride.png", "robustness_drop.png", "throughput.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
