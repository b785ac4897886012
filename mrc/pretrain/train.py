"""Masked-LM pretraining of the encoders this project fine-tunes: ``python -m mrc.pretrain [key=value ...]``.

From scratch (a BERT of any size with a WordPiece ``vocab_file``) or continued from any HF masked-LM
checkpoint (``model.init_from``). Corpus lines that overlap the evaluation files are dropped first
(:mod:`mrc.pretrain.eval_text`); masks are dynamic, optionally whole-word (:mod:`mrc.pretrain.masking`). The
vocabulary projection runs only on the hidden states of masked positions. Writes ``<run dir>/encoder``
(HF format: ``config.json``, ``model.safetensors`` of the BertModel, tokenizer files), which
``python run.py encoder=roberta_wwm encoder.name_or_path=<run dir>/encoder`` fine-tunes, and
``<run dir>/pretrain_summary.json``. Rerunning the same command in the same run dir resumes.
"""
from __future__ import annotations

import json
import logging
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from mrc.pretrain import corpus as pd
from mrc.train.cpu_memory import retain_freed_memory
from mrc.pretrain.masking import mask_generator, replacement_ids
from mrc.pretrain.corpus import Corpora, masked_batch, prepare_corpora
from mrc.pretrain.heldout import CONTEXT_MARGIN, autocast, heldout_accuracy, unigram_baseline
from mrc.pretrain.model import (build_model, build_optimizer, freeze_body, lr_factor, mlm_forward, set_attention_dropout,
                             warmup_steps)
from mrc.train.resume import atomic_save, load_state, remove_stale_temps, resume_mode, rng_state, set_rng_state

log = logging.getLogger(__name__)
CONF_DIR = Path(__file__).resolve().parents[2] / "conf" / "pretrain"
STATE = Path("resume") / "pretrain_state.pt"
CORPUS_CACHE = Path("resume") / "corpus.npz"  # tokenized corpus, reused when resuming
VERSION = 1
# Settings a resumed run must share with the interrupted one (everything else may change, e.g. budgets).
RESUME_KEYS = ("seed", "model", "data", "masking", "optim", "train.batch_size", "train.grad_accum",
               "train.max_steps")


@dataclass
class Progress:
    """Where a run stands; saved with the resumable state."""

    step: int = 0
    total_steps: int | None = None
    seconds: float = 0.0
    tokens: int = 0
    acc_before: float | None = None
    mask_acc_before: float | None = None
    mask_loss_before: float | None = None
    loss_curve: list = field(default_factory=list)  # [step, mean loss, mean masked accuracy] per log
    resumed: list = field(default_factory=list)
    heldout_curve: list = field(default_factory=list)  # [step, acc, mask_acc, mask_loss] per train.eval_every


@dataclass
class Pretraining:
    """What one pretraining run shares: its options, the masked-LM model and tokenizer, the tokenized corpora,
    the ids a masked token may be replaced with, the device and the run dir."""

    cfg: DictConfig
    model: torch.nn.Module
    tokenizer: object
    corpora: Corpora
    replacements: object
    device: torch.device
    out_dir: Path

    def heldout(self) -> dict | None:
        """Masked-LM accuracy and loss on the held-out lines (None: no held-out part)."""
        return heldout_accuracy(self.model, self.corpora, self.tokenizer, self.replacements, self.cfg, self.device)


# ----------------------------------------------------------------------------- state


def resume_items(cfg: DictConfig) -> dict:
    """The settings of :data:`RESUME_KEYS`, resolved, as plain values."""
    out = {}
    for key in RESUME_KEYS:
        node = OmegaConf.select(cfg, key)
        out[key] = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    if not out["model"].get("freeze_body", True):
        del out["model"]["freeze_body"]  # states saved before the option existed still resume
    if out["model"].get("attention_dropout", 0) is None:
        del out["model"]["attention_dropout"]  # likewise
    return out


def save_state(path: Path, cfg: DictConfig, model, opt, progress: Progress) -> None:
    """Atomically write everything needed to continue: weights, optimizer, progress, RNG states."""
    atomic_save({"version": VERSION, "config": json.dumps(resume_items(cfg), sort_keys=True, ensure_ascii=False),
                 "model": model.state_dict(), "optimizer": opt.state_dict(),
                 "progress": json.dumps(asdict(progress)), "rng": rng_state()}, path)


def restore_state(path: Path, cfg: DictConfig, model, opt) -> Progress | None:
    """Load the state at ``path`` (per ``train.resume``) into model and optimizer; None if starting over."""
    mode = resume_mode(cfg.train.resume)
    remove_stale_temps(path)
    if mode == "false" or not path.is_file():
        if mode == "true":
            raise FileNotFoundError(f"train.resume=true but there is no {path}")
        return None
    state = load_state(path)
    saved, now = json.loads(state["config"]), json.loads(json.dumps(resume_items(cfg), sort_keys=True))
    differ = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
    if state.get("version") != VERSION or differ:
        raise ValueError(f"{path}: written by another configuration ({differ or 'version'}); start over with "
                         "train.resume=false or use another hydra.run.dir")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"])
    progress = Progress(**json.loads(state["progress"]))
    progress.resumed.append({"step": progress.step, "seconds": round(progress.seconds, 1)})
    log.info("RESUMING from %s at optimizer step %d (%.0f s trained)", path, progress.step, progress.seconds)
    return progress


def save_encoder(model, tokenizer, out: Path) -> None:
    """The encoder (BertModel, no MLM head) and tokenizer in HF format, loadable by AutoModel/AutoTokenizer."""
    out.mkdir(parents=True, exist_ok=True)
    model.base_model.save_pretrained(out)
    tokenizer.save_pretrained(out)


# ----------------------------------------------------------------------------- training


@contextmanager
def stop_on_signal():
    """Yields a flag list that SIGINT/SIGTERM set, so the loop can save its state and stop between steps.

    A second signal while the state is being saved falls through to the previous handler. Outside the main
    thread (where Python cannot install handlers) nothing is installed and the flag stays unset."""
    flag: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, frame):
        if flag:  # asked twice: stop at once
            signal.signal(signum, previous[signum])
            signal.raise_signal(signum)
            return
        flag.append(signum)
        log.warning("%s received: saving the state after this step, then stopping (send it again to stop now)",
                    signal.Signals(signum).name)

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _budget_done(cfg: DictConfig, p: Progress) -> str | None:
    if p.total_steps is not None and p.step >= p.total_steps:
        return "max_steps"
    if cfg.train.max_minutes is not None and p.seconds >= 60 * float(cfg.train.max_minutes):
        return "max_minutes"
    return None


def _fix_horizon(cfg: DictConfig, p: Progress) -> None:
    # Time-only budget: after calibrate_steps, the schedule's horizon is the steps that fit in the time left.
    if p.total_steps is None and p.step >= int(cfg.train.calibrate_steps):
        left = 60 * float(cfg.train.max_minutes) - p.seconds
        p.total_steps = p.step + max(0, int(left / (p.seconds / p.step)))
        log.info("time budget: schedule horizon set to %d optimizer steps", p.total_steps)


def train_step(model, opt, corpora: Corpora, tokenizer, replacements, cfg: DictConfig, p: Progress,
               device) -> tuple[float, float, int]:
    """One optimizer step of ``grad_accum`` micro-batches: (mean loss, masked accuracy, tokens seen)."""
    t, accum = cfg.train, int(cfg.train.grad_accum)
    losses, right, masked, tokens = 0.0, 0, 0, 0
    for micro in range(accum):
        draw = p.step * accum + micro
        idx = pd.draw_indices(len(corpora.train), int(t.batch_size), draw, cfg.seed)
        ids, att, labels = masked_batch(corpora.train, idx, tokenizer, replacements, cfg.masking,
                                        mask_generator(cfg.seed, draw))
        with autocast(cfg, device):
            loss, ok, n = mlm_forward(model, ids.to(device), att.to(device), labels.to(device))
        (loss / accum).backward()
        losses, right, masked = losses + loss.item() / accum, right + int(ok), masked + n
        tokens += int(att.sum())
    torch.nn.utils.clip_grad_norm_(model.parameters(), float(cfg.optim.max_grad_norm))
    factor = lr_factor(p.step, warmup_steps(cfg.optim, p.total_steps), p.total_steps)
    for group in opt.param_groups:
        group["lr"] = float(cfg.optim.lr) * factor
    opt.step()
    opt.zero_grad(set_to_none=True)
    return losses, right / max(masked, 1), tokens


def _check_budget(cfg: DictConfig) -> None:
    if cfg.train.max_steps is None and cfg.train.max_minutes is None:
        raise ValueError("set train.max_steps and/or train.max_minutes")
    warmup_steps(cfg.optim, cfg.train.max_steps)  # a time-only budget needs optim.warmup_steps


def run_pretrain(cfg: DictConfig, out_dir: str | Path, interrupt_at: int | None = None) -> dict:
    """Pretrain per ``cfg`` into ``out_dir``; returns the summary. ``interrupt_at``: stop after that optimizer
    step as if killed right after the state was saved (for tests of resuming)."""
    from hydra.utils import instantiate

    _check_budget(cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.train.device if cfg.train.device != "auto" else
                          ("cuda" if torch.cuda.is_available() else "cpu"))
    model, tokenizer = build_model(cfg.model)
    if cfg.data.max_len > model.config.max_position_embeddings:
        raise ValueError(f"data.max_len={cfg.data.max_len} exceeds the model's "
                         f"{model.config.max_position_embeddings} positions")
    if cfg.model.get("freeze_body"):
        freeze_body(model)
    if cfg.model.get("attention_dropout") is not None:
        set_attention_dropout(model, cfg.model.attention_dropout)
    if device.type == "cpu" and cfg.train.get("retain_freed_memory", True):
        retain_freed_memory()
    model.to(device).train()
    corpora = prepare_corpora(cfg, tokenizer, out_dir, cache=out_dir / CORPUS_CACHE)
    replacements = replacement_ids(tokenizer.get_vocab(), tokenizer.all_special_ids)
    opt = build_optimizer(model, cfg.optim)
    job = Pretraining(cfg, model, tokenizer, corpora, replacements, device, out_dir)
    p = restore_state(out_dir / STATE, cfg, model, opt) or Progress(total_steps=cfg.train.max_steps)
    if p.step == 0 and not p.resumed:
        before = job.heldout() or {}
        p.acc_before, p.mask_acc_before, p.mask_loss_before = before.get("acc"), before.get("mask_acc"), \
            before.get("mask_loss")
    logger = instantiate(cfg.logger, dir=str(out_dir))
    try:
        logger.log_config(OmegaConf.to_container(cfg, resolve=True))
        with stop_on_signal() as signalled:
            stopped = _train_loop(job, opt, p, logger, interrupt_at, signalled)
        if stopped == "interrupted":
            log.info("stopped at optimizer step %d with the state saved in %s; run the same command to resume",
                     p.step, out_dir / STATE)
            return {"interrupted_at": p.step}
        summary = _finish(job, p, stopped)
        logger.summary({k: v for k, v in summary.items() if isinstance(v, (int, float))})
        return summary
    finally:
        logger.finish()


def _train_loop(job: Pretraining, opt, p: Progress, logger, interrupt_at: int | None,
                signalled: list | None = None) -> str:
    """Optimizer steps until the budget is spent ("max_steps" / "max_minutes") or the run is stopped
    ("interrupted": ``interrupt_at`` reached or a signal came; the state is saved first)."""
    from tqdm.auto import tqdm

    cfg, model, device = job.cfg, job.model, job.device
    t = cfg.train
    bar = tqdm(total=p.total_steps, initial=p.step, disable=not t.progress, desc="pretrain", unit="step")
    window = [0.0, 0.0, 0, 0.0, 0]  # loss sum, accuracy sum, tokens, seconds, steps since the last log
    while (stopped := _budget_done(cfg, p)) is None:
        start = time.perf_counter()
        loss, acc, tokens = train_step(model, opt, job.corpora, job.tokenizer, job.replacements, cfg, p, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        took = time.perf_counter() - start
        p.step, p.seconds, p.tokens = p.step + 1, p.seconds + took, p.tokens + tokens
        window = [window[0] + loss, window[1] + acc, window[2] + tokens, window[3] + took, window[4] + 1]
        if t.max_steps is None:
            _fix_horizon(cfg, p)
        bar.total = p.total_steps
        bar.update(1)
        if p.step % int(t.log_every) == 0 or _budget_done(cfg, p):
            n = window[4]
            metrics = {"train/loss": window[0] / n, "train/mlm_acc": window[1] / n,
                       "train/tokens_per_s": window[2] / max(window[3], 1e-9), "train/lr": opt.param_groups[0]["lr"]}
            logger.log(metrics, step=p.step)
            p.loss_curve.append([p.step, round(metrics["train/loss"], 6), round(metrics["train/mlm_acc"], 6)])
            bar.set_postfix(loss=f"{metrics['train/loss']:.3f}", acc=f"{metrics['train/mlm_acc']:.3f}")
            window = [0.0, 0.0, 0, 0.0, 0]
        if t.get("eval_every") and p.step % int(t.eval_every) == 0:
            held = job.heldout()
            if held is not None:
                logger.log({"heldout/mlm_acc": held["acc"], "heldout/mask_acc": held["mask_acc"],
                            "heldout/mask_loss": held["mask_loss"]}, step=p.step)
                p.heldout_curve.append([p.step] + [round(held[k], 6) for k in ("acc", "mask_acc", "mask_loss")])
        stop = p.step == interrupt_at or bool(signalled)
        if p.step % int(t.save_every) == 0 or _budget_done(cfg, p) or stop:
            save_state(job.out_dir / STATE, cfg, model, opt, p)
        if stop:
            bar.close()
            return "interrupted"
    bar.close()
    return stopped


def _finish(job: Pretraining, p: Progress, stopped: str) -> dict:
    """Score the held-out lines, save the encoder and write ``pretrain_summary.json``; returns the summary."""
    model, tokenizer, corpora, device, out_dir = job.model, job.tokenizer, job.corpora, job.device, job.out_dir
    after = job.heldout() or {}
    unigram = unigram_baseline(corpora, tokenizer, job.replacements, job.cfg) or {}
    encoder_dir = out_dir / "encoder"
    save_encoder(model, tokenizer, encoder_dir)
    summary = {"encoder_dir": str(encoder_dir), "stopped_by": stopped, "steps": p.step, "total_steps": p.total_steps,
               "train_seconds": round(p.seconds, 3), "tokens": p.tokens,
               "tokens_per_s": round(p.tokens / max(p.seconds, 1e-9), 1),
               "heldout_acc_before": p.acc_before, "heldout_acc_after": after.get("acc"),
               "heldout_mask_acc_before": p.mask_acc_before, "heldout_mask_acc_after": after.get("mask_acc"),
               "heldout_mask_loss_before": p.mask_loss_before, "heldout_mask_loss_after": after.get("mask_loss"),
               "heldout_unigram_acc": unigram.get("acc"), "heldout_unigram_loss": unigram.get("loss"),
               "heldout_curve": p.heldout_curve,
               "dropped_lines": corpora.info["eval_overlap"]["dropped"], "corpus": corpora.info,
               "parameters": sum(q.numel() for q in model.base_model.parameters()), "device": str(device),
               "trainable_parameters": sum(q.numel() for q in model.parameters() if q.requires_grad),
               "loss_curve": p.loss_curve, "resumed": p.resumed}
    (out_dir / "pretrain_summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    log.info("pretraining done (%s): %d steps, %.0f tokens/s, held-out masked accuracy %s -> %s; at [MASK] "
             "accuracy %s -> %s, loss %s -> %s (most frequent token: accuracy %s, loss %s); encoder in %s", stopped,
             p.step, summary["tokens_per_s"], p.acc_before, after.get("acc"), p.mask_acc_before, after.get("mask_acc"),
             p.mask_loss_before, after.get("mask_loss"), unigram.get("acc"), unigram.get("loss"), encoder_dir)
    if unigram and after and after["mask_acc"] < unigram["acc"] + CONTEXT_MARGIN:
        log.warning("held-out [MASK] accuracy %.3f is within %.2f of always guessing the most frequent token (%.3f; "
                    "loss %.2f against %.2f nats): the model has hardly learned to use the context yet (the plateau "
                    "early masked-LM training sits on), so fine-tuning it may gain little over random "
                    "initialisation (experiments/pretrain/README.md, 'The unigram plateau').", after["mask_acc"],
                    CONTEXT_MARGIN, unigram["acc"], after["mask_loss"], unigram["loss"])
    return summary


def main() -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
    def main(cfg: DictConfig) -> None:
        run_pretrain(cfg, cfg.paths.output_dir or HydraConfig.get().runtime.output_dir)

    main()
