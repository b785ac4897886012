"""A run's record of what it is: ``config.yaml`` (resolved) and ``.hydra/{config,hydra,overrides}.yaml``.

Hydra would write ``.hydra/`` before the run starts (``hydra.output_subdir`` is null in
``conf/config.yaml`` so it does not); the run writes it here instead, only after a resumed run dir's
state has passed the compatibility check, so a refused resume never relabels a finished run's results.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def hydra_record(cfg: DictConfig) -> dict:
    """What Hydra would have written to ``.hydra/`` for this job (call inside a ``@hydra.main`` function)."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.instance().cfg
    return {"config.yaml": cfg, "hydra.yaml": hydra_cfg, "overrides.yaml": hydra_cfg.hydra.overrides.task}


def write_record(run_dir: Path, cfg: DictConfig, record: dict | None) -> None:
    """``config.yaml`` and, under Hydra, ``.hydra/`` with the files of :func:`hydra_record`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    for name, node in (record or {}).items():
        (run_dir / ".hydra").mkdir(exist_ok=True)
        (run_dir / ".hydra" / name).write_text(OmegaConf.to_yaml(node), encoding="utf-8")
