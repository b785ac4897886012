"""The training data path (issue 47): batches collated by DataLoader workers (``trainer.num_workers``) are the
batches of the main thread, length grouping (``trainer.group_by_length``) and its padded share, exact resume
with either, and the fp16 GradScaler's state in the resumable state."""
import copy
import json

import pytest
import torch
from omegaconf import OmegaConf

from mrc.data.batching import batches
from mrc.data.features import Window
from mrc.train.distributed import Dist
from mrc.train.loop import (EpochProgress, TrainLoop, batch_stream, build_optimizer, epoch_batches, epoch_padding, num_workers,
                            padded_share)
from mrc.train.precision import FP16, grad_scaler
from mrc.train.resume import Resumer, RunProgress, load_state, rng_state, state_path
from tests.train.test_resume import TRAINER, restored, resumer_cfg, tiny_model, windows
from tests.train.test_loop import OPTIM


def mixed_windows(n: int, seed: int = 0) -> list[Window]:
    """Windows of very different lengths (8 to 120 tokens), each with a gold span."""
    return windows(n, seed, lengths=(8, 121))


def trainer(**kw):
    return OmegaConf.merge(TRAINER, kw)


def epoch(model, ws, tr, **kw):
    opt, sched = build_optimizer(model, OPTIM, 5)
    return TrainLoop(model, opt, sched, tr, 0, "cpu", **kw).run_epoch(ws, epoch=1, step=0)


def test_worker_collated_batches_are_the_main_threads():
    ws = mixed_windows(30)
    _, order = epoch_batches(ws, trainer(batch_size=4), 1)
    main, workers = list(batch_stream(ws, order, 0, "cpu")), list(batch_stream(ws, order, 0, "cpu", workers=2))
    assert len(main) == len(workers) == len(order)
    for a, b in zip(main, workers):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_num_workers_train_the_same_losses_and_weights():
    """Two DataLoader workers: the same losses and weights as collating on the training thread (dropout on, so
    the loader must not draw from torch's global RNG either)."""
    ws = windows(40)
    plain = tiny_model()  # seeds torch
    base, _ = epoch(plain, ws, trainer())
    after = torch.rand(3)  # the global RNG stream after the epoch
    loaded = tiny_model()
    again, steps = epoch(loaded, ws, trainer(num_workers=2))
    assert steps == 5 and torch.equal(torch.rand(3), after)
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in base.items() if k != "seconds"}
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), loaded.state_dict().values()))


@pytest.mark.parametrize("bad", [-1, 1.5, "two", True])
def test_num_workers_values_are_checked(bad):
    with pytest.raises(ValueError, match="trainer.num_workers"):
        num_workers(OmegaConf.create({"num_workers": bad}))
    assert num_workers(OmegaConf.create({})) == 0


def test_the_default_batch_order_is_the_length_grouped_one_it_always_was():
    ws = mixed_windows(200)
    lengths = [len(w.input_ids) for w in ws]
    expected = batches(lengths, 8, shuffle=True, seed=1 * 1000 + 2)  # the order before the switch existed
    tr = OmegaConf.create({"seed": 1, "null_window_keep": 1.0, "batch_size": 8})
    assert epoch_batches(ws, tr, 2)[1] == expected == epoch_batches(ws, OmegaConf.merge(tr, {"group_by_length": True}),
                                                                    2)[1]


def test_group_by_length_lowers_the_padded_share_and_is_deterministic():
    ws = mixed_windows(400)
    grouped, random_ = trainer(batch_size=8, grad_accum=1), trainer(batch_size=8, grad_accum=1, group_by_length=False)
    shares = {}
    for name, tr in (("grouped", grouped), ("random", random_)):
        order = epoch_batches(ws, tr, 1)[1]
        assert sorted(i for b in order for i in b) == list(range(400))  # every window once
        assert order == epoch_batches(ws, tr, 1)[1] and order != epoch_batches(ws, tr, 2)[1]  # seed and epoch
        real, padded = epoch_padding(ws, tr, 1)
        assert real == sum(len(w.input_ids) for w in ws)
        shares[name] = padded_share(real, padded)
    assert shares["grouped"] < 0.1 < 0.3 < shares["random"]
    # a fractional epoch and DDP ranks count the batches they train, padding repeats excluded
    real, _ = epoch_padding(ws, OmegaConf.merge(grouped, {"epochs": 0.5}), 1, world_size=3)
    order = epoch_batches(ws, grouped, 1)[1]
    assert real == sum(len(ws[i].input_ids) for b in order[:3 * 8] for i in b)  # 50 batches: 17 per rank, half = 8


@pytest.mark.parametrize("group_by_length,workers", [(False, 0), (False, 2), (True, 2)])
def test_mid_epoch_resume_is_exact_with_either_grouping_and_workers(group_by_length, workers):
    ws, saved = mixed_windows(40), {}
    tr = trainer(group_by_length=group_by_length, num_workers=workers)
    model = tiny_model()
    opt, sched = build_optimizer(model, OPTIM, 5)
    kw = dict(trainer=tr, pad_id=0, device="cpu")

    def capture(step, progress):
        if step == 2:
            saved.update(progress=progress, model=copy.deepcopy(model.state_dict()), rng=rng_state(),
                         opt=copy.deepcopy(opt.state_dict()), sched=copy.deepcopy(sched.state_dict()))

    full, _ = TrainLoop(model, opt, sched, **kw).run_epoch(ws, epoch=1, step=0, on_resume_point=capture)
    again, opt2, sched2 = restored(saved)
    rest, steps = TrainLoop(again, opt2, sched2, **kw).run_epoch(ws, epoch=1, step=2, start=saved["progress"])
    assert steps == 5 and rest["loss"] == full["loss"] and rest["windows"] == full["windows"] == 40
    assert rest["padded_share"] == full["padded_share"]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def fp16_parts(seed: int = 0):
    model = tiny_model(seed)
    opt, sched = build_optimizer(model, OPTIM, 5)
    return model, opt, sched, grad_scaler(FP16, "cpu")


def test_the_grad_scaler_state_is_saved_and_restored(tmp_path, caplog):
    model, opt, sched, scaler = fp16_parts()
    scaler.load_state_dict({**scaler.state_dict(), "scale": 512.0, "_growth_tracker": 7})
    Resumer(resumer_cfg(), tmp_path, model, opt, sched, Dist(), scaler=scaler).save(RunProgress(step=3), 1,
                                                                                    EpochProgress(batch=6))
    assert load_state(state_path(tmp_path))["scaler"]["scale"] == 512.0
    model2, opt2, sched2, scaler2 = fp16_parts(seed=1)
    Resumer(resumer_cfg(), tmp_path, model2, opt2, sched2, Dist(), scaler=scaler2).restore()
    assert scaler2.state_dict() == scaler.state_dict()
    # without fp16 no scaler state is written, and a state without one restores a scaler from its initial scale
    Resumer(resumer_cfg(), tmp_path, model, opt, sched, Dist()).save(RunProgress(step=3), 1, EpochProgress(batch=6))
    assert "scaler" not in load_state(state_path(tmp_path))
    model3, opt3, sched3, scaler3 = fp16_parts(seed=1)
    Resumer(resumer_cfg(), tmp_path, model3, opt3, sched3, Dist(), scaler=scaler3).restore()
    assert scaler3.get_scale() == 65536.0 and "holds no GradScaler state" in caplog.text


def test_fp16_training_resumed_from_a_saved_state_is_exact(tmp_path):
    """fp16 autocast + GradScaler("cpu"): a state written mid-epoch by the Resumer, restored into fresh objects,
    finishes the epoch with the weights and loss scale of the uninterrupted run."""
    ws, cfg = windows(40), resumer_cfg()
    kw = dict(trainer=TRAINER, pad_id=0, device="cpu", amp_dtype=torch.float16)
    model, opt, sched, scaler = fp16_parts()
    resumer, run = Resumer(cfg, tmp_path, model, opt, sched, Dist(), scaler=scaler), RunProgress()

    def save_once(step, progress):
        if step == 2:
            run.step = step
            resumer.save(run, 1, progress)

    full, _ = TrainLoop(model, opt, sched, scaler=scaler, **kw).run_epoch(ws, epoch=1, step=0,
                                                                         on_resume_point=save_once)
    model2, opt2, sched2, scaler2 = fp16_parts(seed=1)
    first, progress, run2 = Resumer(cfg, tmp_path, model2, opt2, sched2, Dist(), scaler=scaler2).restore()
    assert (first, progress.batch, run2.step) == (1, 4, 2)
    rest, steps = TrainLoop(model2, opt2, sched2, scaler=scaler2, **kw).run_epoch(ws, epoch=1, step=run2.step,
                                                                                 start=progress)
    assert steps == 5 and rest["loss"] == full["loss"] and scaler2.state_dict() == scaler.state_dict()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model2.state_dict().values()))
    assert json.loads(load_state(state_path(tmp_path))["progress"])["batch"] == 4


@pytest.mark.slow
def test_a_run_records_its_padded_share_grouping_and_workers(tmp_path):
    from mrc.train.pipeline import run
    from tests.train.test_e2e import DEMO, compose_cfg

    cfg = compose_cfg(DEMO + ["head=softmax", "trainer.group_by_length=false", "trainer.num_workers=2"], tmp_path)
    run(cfg, tmp_path)
    train = json.loads((tmp_path / "metrics.json").read_text())["train"]
    assert train["group_by_length"] is False and train["num_workers"] == 2
    assert 0 < train["padded_share"] < 1 and train["tokens_trained"] > train["windows_trained"]
