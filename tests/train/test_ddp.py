"""Multi-process training: batch sharding, the step count, and a 2-process torchrun (Gloo, CPU) demo run."""
import json
import math
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from omegaconf import OmegaConf

from mrc.train.distributed import Dist, from_env, shard_batches
from mrc.train.loop import steps_per_epoch
from tests.conftest import ROOT
from tests.train.test_e2e import DEMO
from tests.train.test_resume import with_overrides
from tests.train.test_loop import window


def test_shards_are_disjoint_equal_and_cover_every_batch():
    for n, world in ((10, 2), (11, 2), (7, 3), (2, 4), (1, 1)):
        order = [[i] for i in range(n)]
        shards = [shard_batches(order, Dist(r, world)) for r in range(world)]
        assert len({len(mine) for mine, _ in shards}) == 1 and len(shards[0][0]) == math.ceil(n / world)
        real = [b for mine, n_real in shards for b in mine[:n_real]]
        assert sorted(real) == order  # every batch once, padding excluded
        assert sum(n_real for _, n_real in shards) == n
        assert all(b in order for mine, _ in shards for b in mine)  # padding repeats real batches
    assert shard_batches([[0], [1], [2]], Dist(1, 2)) == ([[1], [0]], 1)  # rank r takes r, r+W, ...


def test_env_and_steps_per_epoch_with_world_size():
    assert from_env({}) == Dist() and not Dist().enabled and Dist().is_main
    d = from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    assert d.enabled and not d.is_main and (d.rank, d.world_size, d.local_rank) == (1, 2, 1)
    ws = [window(4, (1, 2))] * 50  # 50 windows / 8 -> 7 batches
    tr = OmegaConf.create({"null_window_keep": 1.0, "batch_size": 8, "grad_accum": 2})
    assert [steps_per_epoch(ws, tr, w) for w in (1, 2, 3)] == [4, 2, 2]  # ceil(ceil(7 / W) / 2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    run_dir = tmp_path / "run"
    overrides = with_overrides(DEMO, ["trainer.grad_accum=2", "head=softmax"])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(ROOT / "run.py"), *overrides,
           f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert list(tmp_path.rglob("metrics.json")) == [run_dir / "metrics.json"]
    assert [p for p in tmp_path.rglob("predictions") if p.is_dir()] == [run_dir / "predictions"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    train = metrics["train"]
    n_batches = math.ceil(train["windows_trained"] / 16)  # the global count: the epoch's sample, once
    assert train["world_size"] == 2 and train["steps"] == math.ceil(math.ceil(n_batches / 2) / 2)
    assert 0.2 * train["windows"] < train["windows_trained"] < train["windows"]
    f1 = metrics["splits"]["in_domain"]["F1"]
    assert isinstance(f1, (int, float)) and 0 <= f1 <= 100 and np.isfinite(metrics["history"][0]["loss"])
    preds = json.loads((run_dir / "predictions" / "in_domain.json").read_text())
    assert len(preds) == 24 and (run_dir / "checkpoint" / "span.safetensors").is_file()
