"""Preemption-safe runs: atomic state writes, ``trainer.resume`` modes, exact mid-epoch resumption of the
training loop, and a real run killed with SIGKILL mid-epoch, then resumed to the same results."""
import copy
import json
import random
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from heads.softmax import SoftmaxHead
from mrc.train.distributed import Dist
from mrc.model.encoder import tiny_bert
from mrc.data.features import Window
from mrc.model.span_model import SpanModel
from mrc.train.resume import (Resumer, RunProgress, atomic_save, find_state, load_state, remove_stale_temps, rng_state,
                        set_rng_state, state_path)
from mrc.train.loop import EpochProgress, TrainLoop, build_optimizer
from tests.conftest import ROOT
from tests.train.test_e2e import DEMO
from tests.train.test_loop import OPTIM


def with_overrides(base: list[str], extra: list[str]) -> list[str]:
    """``base`` with the keys of ``extra`` replaced (Hydra rejects a key given twice)."""
    keys = {e.split("=", 1)[0] for e in extra}
    return [o for o in base if o.split("=", 1)[0] not in keys] + extra


RESUME = with_overrides(DEMO, ["data.prepare.n_train=400", "trainer.batch_size=8", "trainer.epochs=2",
                               "trainer.resume_every=3", "head=softmax"])
TRAINER = OmegaConf.create({"seed": 1, "null_window_keep": 1.0, "batch_size": 4, "grad_accum": 2,
                            "max_grad_norm": 1.0, "log_every": 100, "progress": False, "resume_every": 2})


def temps(path):
    return sorted(path.parent.glob(f".{path.name}.*.tmp"))


def test_atomic_save_replaces_and_leaves_no_temp(tmp_path):
    path = tmp_path / "resume" / "state.pt"
    atomic_save({"x": torch.arange(3)}, path)
    atomic_save({"x": torch.arange(5)}, path)
    assert torch.equal(load_state(path)["x"], torch.arange(5)) and temps(path) == []
    with pytest.raises(Exception):
        atomic_save({"x": torch.arange(7), "bad": lambda: 0}, path)  # fails mid-write: cannot be pickled
    assert torch.equal(load_state(path)["x"], torch.arange(5)) and temps(path) == []
    (path.parent / ".state.pt.abc123.tmp").write_bytes(b"half")  # a writer killed mid-write
    assert [p.name for p in remove_stale_temps(path)] == [".state.pt.abc123.tmp"] and temps(path) == []


def test_find_state_modes(tmp_path):
    assert find_state(tmp_path, "auto") is None and find_state(tmp_path, False) is None
    with pytest.raises(FileNotFoundError):
        find_state(tmp_path, True)
    atomic_save({}, state_path(tmp_path))
    assert find_state(tmp_path, "auto") == state_path(tmp_path) == find_state(tmp_path, "true")
    assert find_state(tmp_path, False) is None and find_state(tmp_path, "false") is None
    with pytest.raises(ValueError):
        find_state(tmp_path, "sometimes")


def test_rng_states_round_trip_through_a_state_file(tmp_path):
    atomic_save({"rng": [rng_state()]}, tmp_path / "s.pt")
    first = (random.random(), np.random.rand(), torch.rand(2).tolist())
    set_rng_state(load_state(tmp_path / "s.pt")["rng"][0])
    assert (random.random(), np.random.rand(), torch.rand(2).tolist()) == first


def test_run_progress_json_round_trip():
    best = {"in_domain": {"summary": {"F1": 50.0}, "predictions": {"q": "答"}, "nbest": {"q": {}}}}
    run = RunProgress(step=7, best_f1=50.0, best_epoch=1, best_results=best, history=[{"epoch": 1}])
    assert RunProgress.from_json(run.to_json()) == run
    assert "nbest" not in RunProgress.from_json(run.to_json(keep_nbest=False)).best_results["in_domain"]


def restored(saved: dict, total_steps: int = 5):
    """A fresh tiny model, optimizer and schedule with the ``model`` / ``opt`` / ``sched`` / ``rng`` states of a
    mid-epoch capture put back."""
    model = tiny_model(seed=1)
    opt, sched = build_optimizer(model, OPTIM, total_steps)
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["opt"])
    sched.load_state_dict(saved["sched"])
    set_rng_state(saved["rng"])
    return model, opt, sched


def windows(n: int, seed: int = 0, lengths: tuple[int, int] = (6, 12)) -> list[Window]:
    """``n`` random windows of ``lengths[0]`` to ``lengths[1] - 1`` tokens, each with a gold span."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        L = int(rng.integers(*lengths))
        s = int(rng.integers(1, L - 1))
        out.append(Window(0, rng.integers(5, 12, L), np.zeros(L, np.int64), np.ones(L, bool),
                          np.zeros((L, 2), np.int64), [(s, s + int(rng.integers(0, L - s)))]))
    return out


def tiny_model(seed: int = 0) -> SpanModel:
    torch.manual_seed(seed)
    enc = tiny_bert(texts=["北京是中国的首都"], layers=1, hidden_size=16, heads=2, intermediate_size=32)
    return SpanModel(enc.model, SoftmaxHead(16))  # dropout on: the torch RNG state matters


def resumer_cfg(resume="auto"):
    return OmegaConf.create({"seed": 1, "trainer": {**TRAINER, "epochs": 1, "resume": resume},
                             "decode": {"save_nbest": False}, "data": {"in_domain": "in_domain"}})


def test_train_epoch_resumes_mid_epoch_exactly():
    ws, kw = windows(40), dict(trainer=TRAINER, pad_id=0, device="cpu")
    model = tiny_model()
    opt, sched = build_optimizer(model, OPTIM, 5)
    saved = {}

    def capture(step, progress):
        if step == 2:
            saved.update(step=step, progress=progress, model=copy.deepcopy(model.state_dict()), rng=rng_state(),
                         opt=copy.deepcopy(opt.state_dict()), sched=copy.deepcopy(sched.state_dict()))

    full, steps = TrainLoop(model, opt, sched, **kw).run_epoch(ws, epoch=1, step=0, on_resume_point=capture)
    assert steps == 5 and saved["progress"].batch == 4 and saved["progress"].n_loss == 4
    again, opt2, sched2 = restored(saved)
    rest, steps2 = TrainLoop(again, opt2, sched2, **kw).run_epoch(ws, epoch=1, step=2, start=saved["progress"])
    assert steps2 == 5 and rest["loss"] == full["loss"] and rest["windows"] == full["windows"] == 40
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_resumer_restores_or_starts_over(tmp_path):
    model = tiny_model()
    opt, sched = build_optimizer(model, OPTIM, 5)
    saver = Resumer(resumer_cfg(), tmp_path, model, opt, sched, Dist())
    run = RunProgress(step=3, best_f1=12.5, best_epoch=1, history=[{"epoch": 1}])
    saver.save(run, 2, EpochProgress(batch=6, total_loss=1.5, n_loss=6, windows=24, seconds=2.0))
    assert temps(state_path(tmp_path)) == []
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    fresh = tiny_model(seed=1)
    fopt, fsched = build_optimizer(fresh, OPTIM, 5)
    initial = {k: v.clone() for k, v in fresh.state_dict().items()}
    epoch, progress, got = Resumer(resumer_cfg(False), tmp_path, fresh, fopt, fsched, Dist()).restore()
    assert (epoch, progress, got) == (1, EpochProgress(), RunProgress())  # trainer.resume=false starts over
    assert all(torch.equal(initial[k], v) for k, v in fresh.state_dict().items())
    epoch, progress, got = Resumer(resumer_cfg(), tmp_path, fresh, fopt, fsched, Dist()).restore()
    assert epoch == 2 and progress.batch == 6 and progress.total_loss == 1.5 and got.best_f1 == 12.5
    assert got.resumed == [{"epoch": 2, "batch": 6, "step": 3}]
    assert all(torch.equal(saved[k], v) for k, v in fresh.state_dict().items())
    other = resumer_cfg()
    other.trainer.batch_size = 5
    with pytest.raises(ValueError, match="trainer.batch_size"):
        Resumer(other, tmp_path, fresh, fopt, fsched, Dist()).restore()
    # a current state records every option its run had: one it lacks is a change
    legacy = resumer_cfg()
    legacy.trainer.eval_each_epoch = True
    with pytest.raises(ValueError, match="trainer.eval_each_epoch"):
        Resumer(legacy, tmp_path, fresh, fopt, fsched, Dist()).restore()
    # a version-1 state: an option added while version 1 was current resumes only at the value that reproduces
    # the old behaviour
    edited_state(state_path(tmp_path), lambda state: state.update(version=1))
    assert Resumer(legacy, tmp_path, fresh, fopt, fsched, Dist()).restore()[0] == 2
    legacy.trainer.eval_each_epoch = False
    with pytest.raises(ValueError, match="trainer.eval_each_epoch"):
        Resumer(legacy, tmp_path, fresh, fopt, fsched, Dist()).restore()


def edited_state(path, change):
    state = load_state(path)
    change(state)
    atomic_save(state, path)


def edit_json(key, **values):
    return lambda state: state.update({key: json.dumps({**json.loads(state[key]), **values})})


@pytest.mark.parametrize("change,message", [
    (lambda s: s.update(epoch=-5), r"epoch=-5 must be an integer in 1\.\.2 \(trainer\.epochs=1\)"),
    (lambda s: s.update(epoch=0), r"epoch=0 must be an integer in 1\.\.2"),
    (lambda s: s.update(epoch=3), r"epoch=3 must be an integer in 1\.\.2"),
    (lambda s: s.update(epoch=1.5), r"epoch=1\.5 must be an integer in 1\.\.2"),
    (lambda s: s.update(epoch=True), r"epoch=True must be an integer"),
    (edit_json("progress", batch=-1), r"batch=-1 must be an integer in 0\.\."),
    (edit_json("progress", seconds=float("nan")), r"seconds=nan must be a finite number in 0\.0\.\."),
    (edit_json("progress", total_loss=float("inf")), r"total_loss=inf must be a finite number"),
    (edit_json("run", step=-3), r"step=-3 must be an integer in 0\.\."),
    (edit_json("run", windows_trained="many"), r"windows_trained='many' must be an integer in 0\.\."),
    (edit_json("progress", extra=1), r"its progress cannot be read \(TypeError: .*'extra'"),
    (lambda s: s.update(run="{not json"), r"its progress cannot be read \(JSONDecodeError"),
    (lambda s: s.update(rng=s["rng"] * 2), r"holds RNG states for 2 process\(es\), written by 1"),
])
def test_a_state_out_of_range_is_refused_in_one_line(tmp_path, change, message):
    from mrc.errors import user_error
    from mrc.train.resume import ResumeError

    model = tiny_model()
    opt, sched = build_optimizer(model, OPTIM, 5)
    Resumer(resumer_cfg(), tmp_path, model, opt, sched, Dist()).save(RunProgress(step=3), 1, EpochProgress(batch=6))
    edited_state(state_path(tmp_path), change)
    with pytest.raises(ResumeError, match=message) as err:
        Resumer(resumer_cfg(), tmp_path, model, opt, sched, Dist()).restore()
    text = str(err.value)
    assert text.startswith(f"{state_path(tmp_path)}: ") and "trainer.resume=false" in text and "\n" not in text
    assert user_error(err.value) is err.value


def run_cmd(run_dir) -> list[str]:
    return [sys.executable, str(ROOT / "run.py"), *RESUME, f"hydra.run.dir={run_dir}"]


def outputs(run_dir) -> dict:
    """Everything that must not depend on an interruption: split figures, history, predictions, scores."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    timing = ("seconds", "examples_per_s")
    splits = {n: {k: v for k, v in s.items() if k not in timing} for n, s in metrics["splits"].items()}
    train = {k: metrics["train"][k] for k in ("steps", "windows_trained", "epochs")}
    files = {f"{d}/{p.name}": json.loads(p.read_text()) for d in ("predictions", "scores")
             for p in sorted((run_dir / d).glob("*.json"))}
    return {"splits": splits, "train": train, "history": metrics["history"], "best": metrics["best_epoch"], **files}


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_results(tmp_path):
    killed, log = tmp_path / "killed", (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(run_cmd(killed), cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    state, deadline = state_path(killed), time.monotonic() + 300
    while not state.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    assert proc.returncode == -9, (tmp_path / "first.log").read_text()[-3000:]
    assert not (killed / "metrics.json").exists()
    saved = load_state(state)
    assert json.loads(saved["progress"])["batch"] > 0  # the first save (step 3) is mid-epoch; killed right after

    again = subprocess.run(run_cmd(killed), cwd=tmp_path, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "RESUMING" in again.stdout + again.stderr
    ref = tmp_path / "uninterrupted"
    clean = subprocess.run(run_cmd(ref), cwd=tmp_path, capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr[-3000:]
    assert "RESUMING" not in clean.stdout + clean.stderr
    resumed_metrics = json.loads((killed / "metrics.json").read_text())
    assert resumed_metrics["train"]["resumed"][0]["epoch"] == saved["epoch"] and "resumed" not in json.loads(
        (ref / "metrics.json").read_text())["train"]
    assert outputs(killed) == outputs(ref)
    assert (killed / "checkpoint" / "span.safetensors").is_file() and temps(state) == []


def test_trim_freed_memory_releases_the_heap_after_every_optimizer_step(monkeypatch):
    """trainer.trim_freed_memory: one malloc_trim per optimizer step (not per micro-batch); off: none."""
    from mrc.train import cpu_memory, loop

    assert cpu_memory.release_freed_memory() is sys.platform.startswith("linux")
    calls = []
    monkeypatch.setattr(loop, "release_freed_memory", lambda: calls.append(1) or True)
    for trim, expected in ((True, 5), (False, 0)):
        calls.clear()
        model = tiny_model()
        opt, sched = build_optimizer(model, OPTIM, 5)
        trainer = OmegaConf.merge(TRAINER, {"trim_freed_memory": trim})
        _, steps = TrainLoop(model, opt, sched, trainer, 0, "cpu").run_epoch(windows(40), epoch=1, step=0)
        assert steps == 5 and len(calls) == expected
