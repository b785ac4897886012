"""Experiment loggers (Hydra ``_target_``s): W&B (offline unless credentials exist) or none."""
from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path

log = logging.getLogger(__name__)


class NullLogger:
    """Logs nothing (``logger=none``)."""

    def __init__(self, **_):
        pass

    def log_config(self, config: dict) -> None:
        """Discard the resolved run config."""

    def log(self, metrics: dict, step: int | None = None) -> None:
        """Discard per-step metrics."""

    def summary(self, metrics: dict) -> None:
        """Discard final metrics."""

    def artifact(self, name: str, kind: str, paths: list[Path]) -> None:
        """Discard files."""

    def finish(self) -> None:
        """Nothing to close."""


def has_wandb_credentials() -> bool:
    """True if an API key is in the environment or ~/.netrc has an entry for the W&B API host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


class WandbLogger(NullLogger):
    """One W&B run per job; ``mode=auto`` is online only with credentials, else offline (no network)."""

    def __init__(self, project: str = "mrc-zh", mode: str = "auto", entity: str | None = None,
                 group: str | None = None, tags: list[str] | None = None, name: str | None = None,
                 dir: str | None = None, job: dict | None = None):
        import wandb

        if mode == "auto":
            mode = os.environ.get("WANDB_MODE") or ("online" if has_wandb_credentials() else "offline")
        job = job or {}
        # a sweep's jobs share a group (the experiment name) and are told apart by tags and name
        group = group or job.get("experiment")
        tags = list(dict.fromkeys([*(tags or []), *job.get("tags", [])]))
        name = name or job.get("name") or None
        self.wandb = wandb
        self.run = wandb.init(project=project, entity=entity, group=group, tags=tags, name=name,
                              dir=dir, mode=mode, reinit="finish_previous")
        log.info("W&B run %s (mode=%s)", getattr(self.run, "id", "?"), mode)

    def log_config(self, config):
        """Record the resolved run config."""
        self.run.config.update(config, allow_val_change=True)

    def log(self, metrics, step=None):
        """Log a dict of scalars at ``step``."""
        self.run.log(metrics, step=step)

    def summary(self, metrics):
        """Put final values in the run summary."""
        self.run.summary.update(metrics)

    def artifact(self, name, kind, paths):
        """Upload files (e.g. predictions) as one artifact."""
        art = self.wandb.Artifact(name, type=kind)
        for p in paths:
            art.add_file(str(p))
        self.run.log_artifact(art)

    def finish(self):
        """Close the run so runs of a multirun never merge."""
        self.run.finish()


def job_info(cfg) -> dict:
    """Who this job is within a sweep: experiment, config-group choices, overrides, W&B tags and name.

    Read from Hydra when running under ``run.py``; outside Hydra (tests, notebooks) only the tags
    derivable from the config itself are filled in.
    """
    from hydra.core.hydra_config import HydraConfig

    info = {"experiment": None, "choices": {}, "overrides": [], "name": None}
    if HydraConfig.initialized():
        hc = HydraConfig.get()
        choices = {k: v for k, v in hc.runtime.choices.items() if not k.startswith("hydra") and v is not None}
        info.update(experiment=choices.get("experiment"), choices=choices, overrides=list(hc.overrides.task),
                    name=hc.job.override_dirname or None)
    head = info["choices"].get("head") or str(cfg.head.get("_target_", "?")).rsplit(".", 1)[-1]
    encoder = (info["choices"].get("encoder") or str(cfg.encoder.get("name_or_path") or "").rsplit("/", 1)[-1]
               or str(cfg.encoder.get("_target_", "?")).rsplit(".", 1)[-1])
    info["tags"] = [f"head={head}", f"encoder={encoder}", f"data={cfg.data.name}", f"stride={cfg.data.doc_stride}",
                    f"seed={cfg.seed}"]
    return info
