"""GPU readiness (``pytest -m gpu``, run by ``experiments/gpu/check.sh``): every head a few steps in every
precision, save -> load -> predict, exact resume, the non-finite-loss check and DDP with one process.

On a CUDA machine they run on the GPU. Without one they are skipped, unless ``MRC_GPU_DRY_RUN=1``
(``check.sh --dry-run``) runs them on the CPU: bf16 and fp16 as CPU autocast, fp16 with
``GradScaler("cpu")`` (``MRC_CPU_FP16=1`` lets a run ask for it), so CI keeps every path working.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from heads.globalpointer import EfficientGlobalPointer, GlobalPointer
from heads.softmax import SoftmaxHead
from mrc.model.encoder import tiny_bert
from mrc.model.span_model import SpanModel
from mrc.train import distributed
from mrc.train.loop import TrainLoop, build_optimizer
from mrc.train.pipeline import run
from mrc.train.precision import BY_NAME, grad_scaler
from mrc.train.resume import rng_state, set_rng_state
from tests.train.test_e2e import DEMO, ROOT, compose_cfg
from tests.train.test_resume import windows, with_overrides
from tests.train.test_loop import OPTIM

pytestmark = pytest.mark.gpu
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS, before CUDA starts
HEADS = {"softmax": SoftmaxHead, "globalpointer": GlobalPointer, "efficient_globalpointer": EfficientGlobalPointer}
PRECISIONS = ("fp32", "bf16", "fp16")
TRAINER = OmegaConf.create({"seed": 1, "null_window_keep": 1.0, "batch_size": 4, "grad_accum": 2,
                            "max_grad_norm": 1.0, "log_every": 2, "progress": False, "resume_every": 2})


@pytest.fixture
def device() -> str:
    """cuda when there is one; the CPU under MRC_GPU_DRY_RUN=1; else skip."""
    if torch.cuda.is_available():
        return "cuda"
    if os.environ.get("MRC_GPU_DRY_RUN") == "1":
        return "cpu"
    pytest.skip("no CUDA device (MRC_GPU_DRY_RUN=1 runs the GPU checks on the CPU)")


def need(precision: str, device: str) -> None:
    """Skip bf16 on a GPU without native bf16 (auto picks fp16 there)."""
    if device == "cuda" and precision == "bf16" and torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("this GPU has no native bf16")


def tiny_model(head: str = "softmax", seed: int = 0) -> SpanModel:
    torch.manual_seed(seed)
    enc = tiny_bert(texts=["北京是中国的首都"], layers=1, hidden_size=16, heads=2, intermediate_size=32)
    return SpanModel(enc.model, HEADS[head](16))


def train(model, device, precision, net=None):
    """One epoch of 40 windows (5 optimizer steps) in ``precision``; (stats, steps) and the GradScaler."""
    prec = BY_NAME[precision]
    scaler = grad_scaler(prec, device)
    opt, sched = build_optimizer(model, OPTIM, 5)
    loop = TrainLoop(model, opt, sched, TRAINER, 0, device, amp_dtype=prec.autocast_dtype, net=net, scaler=scaler)
    out = loop.run_epoch(windows(40), epoch=1, step=0)
    return out, scaler


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("head", sorted(HEADS))
def test_every_head_trains_in_every_precision(device, head, precision):
    need(precision, device)
    model = tiny_model(head).to(device)
    before = [p.detach().clone() for p in model.parameters()]
    (stats, steps), scaler = train(model, device, precision)
    assert steps == 5 and torch.isfinite(torch.tensor(stats["loss"])) and stats["windows"] == 40
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert (scaler is not None) == (precision == "fp16") and (scaler is None or scaler.get_scale() > 0)


def test_a_non_finite_loss_stops_the_epoch(device, monkeypatch):
    model = tiny_model().to(device)
    monkeypatch.setattr(SpanModel, "loss", lambda self, batch: self.encoder.embeddings.word_embeddings.weight.sum()
                        * float("nan"))
    with pytest.raises(FloatingPointError, match="non-finite loss .*at epoch 1 batch 0"):
        train(model, device, "fp32")


@pytest.mark.parametrize("precision", PRECISIONS)
def test_train_epoch_resumes_exactly(device, precision):
    """Mid-epoch resume reproduces the uninterrupted epoch (deterministic kernels on CUDA). The GradScaler's
    state is carried by hand here; the run's resumable state stores it too (tests/train/test_data_path.py)."""
    need(precision, device)
    prec, ws, saved = BY_NAME[precision], windows(40), {}
    kw = dict(trainer=TRAINER, pad_id=0, device=device, amp_dtype=prec.autocast_dtype)
    torch.use_deterministic_algorithms(True)
    try:
        model, scaler = tiny_model().to(device), grad_scaler(prec, device)
        opt, sched = build_optimizer(model, OPTIM, 5)

        def capture(step, progress):
            if step == 2:
                saved.update(progress=progress, model=copy.deepcopy(model.state_dict()), rng=rng_state(),
                             opt=copy.deepcopy(opt.state_dict()), sched=copy.deepcopy(sched.state_dict()),
                             scaler=scaler.state_dict() if scaler is not None else None)
        full, _ = TrainLoop(model, opt, sched, scaler=scaler, **kw).run_epoch(ws, epoch=1, step=0,
                                                                             on_resume_point=capture)
        again, scaler2 = tiny_model(seed=1).to(device), grad_scaler(prec, device)
        again.load_state_dict(saved["model"])
        opt2, sched2 = build_optimizer(again, OPTIM, 5)
        opt2.load_state_dict(saved["opt"])
        sched2.load_state_dict(saved["sched"])
        if scaler2 is not None:
            scaler2.load_state_dict(saved["scaler"])
        set_rng_state(saved["rng"])
        rest, steps = TrainLoop(again, opt2, sched2, scaler=scaler2, **kw).run_epoch(ws, epoch=1, step=2,
                                                                                    start=saved["progress"])
        assert steps == 5 and rest["loss"] == full["loss"]
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    finally:
        torch.use_deterministic_algorithms(False)


def test_ddp_with_one_process_matches_plain_training(device, tmp_path):
    """DDP (NCCL on CUDA, Gloo on the CPU) around the loss, one process: the same weights as without it."""
    import torch.distributed as dist
    backend = "nccl" if device == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        plain = tiny_model().to(device)
        train(plain, device, "fp32")
        wrapped = tiny_model().to(device)
        ids = [torch.cuda.current_device()] if device == "cuda" else None
        net = torch.nn.parallel.DistributedDataParallel(distributed.LossForward(wrapped), device_ids=ids)
        train(wrapped, device, "fp32", net=net)
        for a, b in zip(plain.state_dict().values(), wrapped.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)  # CUDA kernels may differ in the last bits
    finally:
        dist.destroy_process_group()


def demo_overrides(device: str, precision: str) -> list[str]:
    """A demo run on ``device`` in ``precision`` (on the CPU bf16 is cpu_bf16 via autocast)."""
    if device == "cpu" and precision == "bf16":
        return ["trainer.device=cpu", "trainer.cpu_bf16=true", "trainer.cpu_bf16_via=autocast"]
    return [f"trainer.device={device}", f"trainer.precision={precision}"]


@pytest.mark.parametrize("precision", PRECISIONS)
def test_demo_run_saves_loads_and_predicts(device, precision, tmp_path, monkeypatch):
    need(precision, device)
    monkeypatch.setenv("MRC_CPU_FP16", "1")  # used on the CPU only
    cfg = compose_cfg(with_overrides(DEMO, ["head=softmax", "data.prepare.n_train=80"]) +
                      demo_overrides(device, precision), tmp_path)
    run(cfg, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    expected = "bf16-autocast" if device == "cpu" and precision == "bf16" else precision
    assert metrics["train"]["precision"] == expected and metrics["train"]["attention"] == "sdpa"
    preds = json.loads((tmp_path / "predictions" / "in_domain.json").read_text())
    again = tmp_path / "again.json"
    subprocess.run([sys.executable, "-m", "mrc", "predict", str(tmp_path / "checkpoint"),
                    str(tmp_path / "data" / "demo" / "dev.json"), str(again), "--device", device],
                   capture_output=True, text=True, check=True, cwd=ROOT)
    reloaded = json.loads(again.read_text())
    same = sum(reloaded[q] == a for q, a in preds.items()) / len(preds)
    # predict runs fp32; the run evaluated under its autocast dtype, which may flip a near tie
    assert same == 1.0 if expected == "fp32" else same >= 0.8
