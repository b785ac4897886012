"""One run per run dir: a second run while the first lives is refused with one line; a lock left by a dead
run is taken over; the lock goes away however the run ends."""
import errno
import json
import logging
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from mrc.train import pipeline, run_lock as run_lock_module
from mrc.train.run_lock import RunDirInUse, run_lock

ROOT = Path(__file__).resolve().parents[2]
HOLD = ("import sys; from mrc.train.run_lock import run_lock\n"
        "with run_lock(sys.argv[1]):\n print('held', flush=True)\n sys.stdin.read()")  # held until stdin closes
CFG = OmegaConf.create({"trainer": {"device": "cpu"}})


@pytest.fixture
def holder(tmp_path):
    """Another process holding ``tmp_path / 'run'``'s lock until the test ends."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "run")], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield proc
    proc.stdin.close()
    proc.wait(timeout=30)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def stub_run(monkeypatch, result=0.5, error=None):
    """Replace the training itself: these tests are about what happens around it."""
    calls = []

    def fake(cfg, run_dir, d, device, record=None):
        calls.append((run_dir / ".lock").exists())
        if error:
            raise error
        return result

    monkeypatch.setattr(pipeline, "_run", fake)
    return calls


@pytest.mark.slow
def test_a_second_run_in_a_busy_run_dir_is_one_line(tmp_path, holder):
    """Before: the second run mixed its metrics.json and checkpoint with the first one's config.yaml."""
    run_dir = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "run.py"), "encoder=tiny", "logger=none", "data.prepare=null",
           f"data.root={tmp_path / 'data'}", f"hydra.run.dir={run_dir}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {run_dir} is in use by another run (pid {holder.pid}, started ")
    assert line.endswith("); wait for it or choose another hydra.run.dir")
    assert not (run_dir / "config.yaml").exists()  # the refused run wrote no record over the live one's
    assert json.loads((run_dir / ".lock").read_text())["pid"] == holder.pid

    holder.stdin.close()  # the first run ends: the same run dir is free again (resume=auto reruns work)
    holder.wait(timeout=30)
    assert not (run_dir / ".lock").exists()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2 and "dureader_robust/train.json not found" in proc.stderr  # got past the lock


def test_a_stale_lock_of_a_dead_run_is_taken_over_with_a_warning(tmp_path, monkeypatch, caplog):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stale = {"pid": dead_pid(), "host": socket.gethostname(), "started": "2024-01-02 03:04:05"}
    (run_dir / ".lock").write_text(json.dumps(stale))
    calls = stub_run(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="mrc.train.run_lock"):
        assert pipeline.run(CFG, run_dir) == 0.5
    assert calls == [True] and not (run_dir / ".lock").exists()
    assert f"taking over the lock of a run that ended without releasing it (pid {stale['pid']}, started " \
           "2024-01-02 03:04:05)" in caplog.text


def test_the_lock_is_released_when_the_run_fails(tmp_path, monkeypatch):
    stub_run(monkeypatch, error=ValueError("boom"))
    with pytest.raises(ValueError, match="boom"):
        pipeline.run(CFG, tmp_path / "run")
    assert not (tmp_path / "run" / ".lock").exists()
    stub_run(monkeypatch)
    assert pipeline.run(CFG, tmp_path / "run") == 0.5  # and the next run takes it


def test_the_lock_names_its_holder_and_refuses_a_second_holder(tmp_path):
    with run_lock(tmp_path):
        held = json.loads((tmp_path / ".lock").read_text())
        assert held["host"] == socket.gethostname() and held["started"]
        with pytest.raises(RunDirInUse, match=rf"is in use by another run \(pid {held['pid']}, started "):
            with run_lock(tmp_path):
                pass
        with run_lock(tmp_path, enabled=False):  # DDP ranks other than 0 take nothing
            pass
    assert not (tmp_path / ".lock").exists()


def test_without_flock_a_live_pid_on_this_host_keeps_the_lock(tmp_path, monkeypatch, holder):
    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(run_lock_module.fcntl, "flock", no_locks)
    with pytest.raises(RunDirInUse, match=f"pid {holder.pid}"):
        with run_lock(tmp_path / "run"):
            pass
    (tmp_path / "run" / ".lock").write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname()}))
    with run_lock(tmp_path / "run"):
        assert json.loads((tmp_path / "run" / ".lock").read_text())["pid"] != holder.pid
