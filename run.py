"""Train and evaluate one configuration: ``python run.py [group=option ...] [key=value ...]``.

Returns the in-domain F1 so Hydra sweepers can optimise it. See README.md for every option.
"""
import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Hydra entry point: run the pipeline in Hydra's output dir (the working dir is never changed)."""
    from mrc.train.pipeline import run

    return run(cfg, HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    main()
