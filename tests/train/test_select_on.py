"""trainer.select_on=calibration: the reported epoch is chosen on the slice held out of training (its F1, ties to
the earlier epoch), the final evaluation and checkpoint use that epoch's weights, a resumed run keeps them, and
any other value is refused before the run starts."""
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mrc.train import evaluation, pipeline
from mrc.train.distributed import Dist
from mrc.train.inputs import ConfigError
from mrc.train.resume import Resumer, ResumeError, RunProgress, check_compatible, config_items
from mrc.train.selection import BestWeights, check_sweeper, select_on
from tests.conftest import ROOT
from tests.train.test_e2e import DEMO, compose_cfg
from tests.train.test_resume import with_overrides

SELECT = with_overrides(DEMO, ["trainer.epochs=3", "data.calibration_share=0.2", "trainer.select_on=calibration"])
SCRIPT = {1: 40.0, 2: 60.0, 3: 60.0}  # the slice's F1 per epoch: epoch 2 wins, epoch 3 only ties it
OPTUNA = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"


@pytest.mark.parametrize("value,share,match", [
    ("in_domain", 0.2, r"trainer\.select_on='in_domain': must be null .* or calibration"),
    ("checklist", 0.2, r"trainer\.select_on='checklist': must be null"),
    ("dev", 0.2, r"trainer\.select_on='dev': must be null"),
    ("calibration", 0.0, r"trainer\.select_on=calibration .* data\.calibration_share=0 holds nothing out"),
])
def test_selecting_on_anything_but_the_held_out_slice_is_refused_at_start(tmp_path, value, share, match):
    cfg = compose_cfg(with_overrides(DEMO, [f"trainer.select_on={value}", f"data.calibration_share={share}"]), tmp_path)
    with pytest.raises(ConfigError, match=match) as err:
        pipeline.run(cfg, tmp_path)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "data").exists()  # refused before the demo data was generated


@pytest.mark.slow
def test_run_py_refuses_an_eval_split_in_one_error_line(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), *DEMO, "trainer.select_on=in_domain",
                           "data.calibration_share=0.2", f"hydra.run.dir={tmp_path / 'run'}"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "trainer.select_on='in_domain'" in errors[0] and "Traceback" not in proc.stderr


def test_an_optuna_search_must_return_the_slice_f1(tmp_path):
    plain = compose_cfg(DEMO, tmp_path)
    with pytest.raises(ConfigError, match=r"hydra/sweeper=optuna optimises .* trainer\.select_on=calibration"):
        check_sweeper(OPTUNA, plain)
    check_sweeper("hydra._internal.core_plugins.basic_sweeper.BasicSweeper", plain)  # ignores what jobs return
    check_sweeper(OPTUNA, compose_cfg(SELECT, tmp_path))
    assert select_on(compose_cfg(SELECT, tmp_path)) == "calibration" and select_on(plain) is None


def digest(model) -> str:
    h = hashlib.sha1()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.fixture()
def scripted(monkeypatch):
    """The slice's F1 per epoch follows SCRIPT; returns the digests of the weights scored after each epoch
    (keys 1..3) and in the final evaluation (key ``final``)."""
    seen, now = {}, {"epoch": None}
    real_epoch, real_score = pipeline.evaluate_epoch, evaluation.score_splits

    def evaluate_epoch(*args, **kwargs):
        now["epoch"] = args[2]
        try:
            return real_epoch(*args, **kwargs)
        finally:
            now["epoch"] = None

    def score(run, model, splits, *args, **kwargs):
        results, calibrators = real_score(run, model, splits, *args, **kwargs)
        if now["epoch"] is None:
            seen["final"] = digest(model)
        else:
            seen[now["epoch"]] = digest(model)
            results["calibration"]["summary"]["F1"] = SCRIPT[now["epoch"]]
        return results, calibrators

    monkeypatch.setattr(pipeline, "evaluate_epoch", evaluate_epoch)
    monkeypatch.setattr(evaluation, "score_splits", score)
    return seen


def metrics_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))


def reported(run_dir: Path, drop=("calibration",)) -> dict:
    """The splits' figures without timings (and without ``drop``)."""
    return {n: {k: v for k, v in s.items() if k not in ("seconds", "examples_per_s")}
            for n, s in metrics_of(run_dir)["splits"].items() if n not in drop}


@pytest.mark.slow
def test_the_slice_chooses_the_epoch_and_the_final_evaluation_uses_its_weights(tmp_path, scripted, caplog):
    caplog.set_level("INFO")
    late = tmp_path / "late"
    f1 = pipeline.run(compose_cfg(SELECT + ["trainer.eval_each_epoch=false"], late), late)
    metrics = metrics_of(late)
    assert f1 == 60.0 and metrics["selected_epoch"] == metrics["best_epoch"] == 2
    assert metrics["selection"] == {"split": "calibration", "metric": "F1", "f1": 60.0,
                                    "by_epoch": {"1": 40.0, "2": 60.0, "3": 60.0}}
    assert scripted["final"] == scripted[2] != scripted[3]  # the tie (epoch 3) kept the earlier epoch's weights
    assert [set(row) for row in metrics["history"]] == [{"epoch", "loss", "calibration/F1", "calibration/EM"}] * 3
    assert set(metrics["splits"]) == {"in_domain", "over_sensitivity", "over_stability", "generalization",
                                      "checklist", "calibration"}
    assert (late / "checkpoint" / "span.safetensors").is_file() and not (late / "resume").exists()
    assert "selected epoch 2 of 3 by calibration F1 60.00" in caplog.text
    # every split scored every epoch: the same epoch, the same figures (the slice's are scripted there)
    each = tmp_path / "each"
    assert pipeline.run(compose_cfg(SELECT, each), each) == 60.0
    assert metrics_of(each)["selected_epoch"] == 2 and reported(each) == reported(late)
    assert "in_domain/F1" in metrics_of(each)["history"][0]


_REFERENCE: dict = {}


def reference(tmp_path_factory, scripted_seen) -> tuple[Path, dict]:
    """One uninterrupted resumable run (shared by the resume tests)."""
    if not _REFERENCE:
        ref = tmp_path_factory.mktemp("reference")
        pipeline.run(compose_cfg(RESUMABLE, ref), ref)
        _REFERENCE.update(dir=ref, weights=dict(scripted_seen))
    return _REFERENCE["dir"], _REFERENCE["weights"]


RESUMABLE = SELECT + ["trainer.eval_each_epoch=false", "trainer.resume_every=5"]


class Preempted(Exception):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("where", ["after_the_state_naming_epoch_2", "after_epoch_2s_weights_before_its_state"])
def test_a_resumed_run_chooses_the_same_epoch_with_the_same_weights(tmp_path, tmp_path_factory, scripted,
                                                                    monkeypatch, where):
    ref, ref_weights = reference(tmp_path_factory, scripted)
    scripted.clear()
    run_dir = tmp_path / "run"
    with monkeypatch.context() as m:
        if where == "after_the_state_naming_epoch_2":
            real = Resumer.epoch_done

            def epoch_done(self, run, epoch):
                real(self, run, epoch)
                if epoch == 2:
                    raise Preempted

            m.setattr(Resumer, "epoch_done", epoch_done)
        else:
            real_keep = BestWeights.keep

            def keep(self, model, epoch):
                real_keep(self, model, epoch)
                if epoch == 2:
                    raise Preempted

            m.setattr(BestWeights, "keep", keep)
        with pytest.raises(Preempted):
            pipeline.run(compose_cfg(RESUMABLE, run_dir), run_dir)
    assert not (run_dir / "metrics.json").exists()
    assert sorted(p.name for p in (run_dir / "resume").glob("best-*.pt")) == ["best-1.pt", "best-2.pt"]
    pipeline.run(compose_cfg(RESUMABLE, run_dir), run_dir)
    metrics, ref_metrics = metrics_of(run_dir), metrics_of(ref)
    assert metrics["train"]["resumed"] and "resumed" not in ref_metrics["train"]
    assert metrics["selected_epoch"] == ref_metrics["selected_epoch"] == 2
    assert metrics["selection"] == ref_metrics["selection"] and metrics["history"] == ref_metrics["history"]
    assert scripted["final"] == ref_weights["final"] == ref_weights[2]
    assert reported(run_dir, drop=()) == reported(ref, drop=())
    assert sorted(p.name for p in (run_dir / "resume").glob("best-*.pt")) == ["best-2.pt"]  # older weights pruned


def test_a_missing_weights_file_refuses_the_resume_in_one_line(tmp_path):
    best = BestWeights(tmp_path, persist=True)
    with pytest.raises(ResumeError, match=r"best-2\.pt: missing; the resumable state chose epoch 2") as err:
        best.restore(2)
    assert "\n" not in str(err.value)
    best.restore(None)  # no epoch chosen yet: nothing to read


def test_a_state_from_before_select_on_resumes_only_without_it(tmp_path):
    cfg = compose_cfg(with_overrides(DEMO, ["data.calibration_share=0.2"]), tmp_path)
    old = {"version": 1, "world_size": 1,
           "config": json.dumps({k: v for k, v in config_items(cfg).items() if k != "trainer.select_on"})}
    check_compatible(old, cfg, Dist(), Path("state.pt"))
    chosen = compose_cfg(with_overrides(DEMO, ["data.calibration_share=0.2", "trainer.select_on=calibration"]),
                         tmp_path)
    with pytest.raises(ResumeError, match=r"trainer\.select_on"):
        check_compatible(old, chosen, Dist(), Path("state.pt"))
    assert RunProgress.from_json('{"step": 3}').selection_f1 == {}  # bookkeeping written before the field
