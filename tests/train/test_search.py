"""experiment=search_demo: a hyper-parameter search by Optuna's TPE sampler (hydra-optuna-sweeper) whose objective is
the F1 on the slice held out of training, run end to end on a tiny demo and read back by mrc.report."""
import csv
import json
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT
from tests.train.test_e2e import DEMO
from tests.train.test_resume import with_overrides
from tests.train.test_sweep import hydra_cfg

optuna = pytest.importorskip("optuna", reason="the search extra (pip install -e '.[search]') is not installed")

TINY_SEARCH = with_overrides([o for o in DEMO if o != "experiment=demo"],
                             ["data.prepare.n_train=400", "trainer.batch_size=8", "data.calibration_share=0.2",
                              "trainer.epochs=2"])  # enough steps for the slice F1 to differ between the trials


def test_search_demo_composes_as_a_tpe_search_on_the_held_out_slice():
    cfg = hydra_cfg(["experiment=search_demo"])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    assert sweeper.direction == "maximize" and sweeper.sampler.seed is not None and sweeper.n_jobs == 1
    assert set(sweeper.params) == {"optim.encoder_lr", "optim.head_lr", "optim.weight_decay"}
    assert cfg.trainer.select_on == "calibration" and cfg.data.calibration_share > 0
    assert cfg.model.match_feature and cfg.encoder.hidden_size == 64  # the demo underneath


@pytest.mark.slow
def test_two_trials_maximise_the_slice_f1_and_the_report_names_the_best(tmp_path):
    sweep, db = tmp_path / "sweep", tmp_path / "study.db"
    cmd = [sys.executable, str(ROOT / "run.py"), "-m", "experiment=search_demo", *TINY_SEARCH,
           "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage=sqlite:///{db}", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(study_name="search_demo", storage=f"sqlite:///{db}")
    trials = sorted(study.trials, key=lambda t: t.number)
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    jobs = [sweep / str(t.number) for t in trials]
    metrics = [json.loads((job / "metrics.json").read_text(encoding="utf-8")) for job in jobs]
    for trial, job, m in zip(trials, jobs, metrics):
        overrides = dict(o.split("=", 1) for o in yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()))
        assert {k: float(overrides[k]) for k in trial.params} == pytest.approx(trial.params)  # the job ran the trial
        # the objective is the held-out slice's F1 at the chosen epoch, never an eval split's
        assert m["selection"]["split"] == "calibration" and m["selected_epoch"] in (1, 2)
        assert trial.value == m["selection"]["f1"] == m["splits"]["calibration"]["F1"]
        assert m["selection"]["f1"] == max(m["selection"]["by_epoch"].values())
    values = [m["selection"]["f1"] for m in metrics]
    assert len(set(values)) == 2, values  # the seeded trials differ: the argmax below means something
    assert any(m["splits"]["in_domain"]["F1"] != m["selection"]["f1"] for m in metrics)
    best = values.index(max(values))  # argmax, the first on a tie (as Optuna keeps its first best)
    assert study.best_trial.number == trials[best].number and study.best_value == max(values)
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_value"] == max(values) and results["best_params"] == pytest.approx(trials[best].params)

    from mrc.report.build import main as report

    out = tmp_path / "report"
    assert report([str(sweep), "--out", str(out), "--bootstrap", "50"]) == 0
    md = (out / "report.md").read_text(encoding="utf-8")
    section = md.split("## Hyper-parameter search", 1)[1].split("\n## ", 1)[0]
    assert f"**Best trial** `{sweep / str(best)}`" in section and f"calibration F1 {max(values):.2f}" in section
    assert "in_domain" not in section.split("**Best trial**")[1].split("\n", 1)[0].split("Results row")[0]
    rows = list(csv.DictReader((out / "search.csv").open(encoding="utf-8")))
    assert [float(r["objective_f1"]) for r in rows] == values and [r["best"] for r in rows].count("True") == 1
    header = (out / "report.csv").read_text(encoding="utf-8").splitlines()[0]
    assert "in_domain/f1_mean" in header and "calibration/" not in header  # eval splits only there


@pytest.mark.slow
def test_an_optuna_search_without_the_slice_objective_stops_at_its_first_trial(tmp_path):
    cmd = [sys.executable, str(ROOT / "run.py"), "-m", "experiment=search_demo", *TINY_SEARCH,
           "trainer.select_on=null", "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "trainer.select_on=calibration" in errors[0]
    assert not list((tmp_path / "sweep").rglob("metrics.json"))


def test_a_missing_sweeper_plugin_names_the_extra(tmp_path):
    import shutil

    from mrc.train.overrides import OverrideError, check_overrides

    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    exp = conf / "experiment" / "search_demo.yaml"
    exp.write_text(exp.read_text(encoding="utf-8").replace("sweeper: optuna", "sweeper: not_installed"), encoding="utf-8")
    with pytest.raises(OverrideError, match=r"Could not find 'hydra/sweeper/not_installed' .*pip install -e '\.\[search\]'"):
        check_overrides(["-m", "experiment=search_demo"], conf)
