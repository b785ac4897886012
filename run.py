"""Train and evaluate one configuration: ``python run.py [group=option ...] [key=value ...]``.

Returns the F1 that chose the reported epoch so Hydra sweepers can optimise it: data.in_domain's, or with
trainer.select_on=calibration the F1 on the slice held out of training (the only objective the Optuna sweeper
accepts: conf/experiment/search_demo.yaml). See docs/configuration.md for every option.
"""
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Hydra entry point: run the pipeline in Hydra's output dir (the working dir is never changed).

    A user mistake (missing file, bad option, refused resume, ...) prints one ``error:`` line and exits
    with status 2; ``MRC_DEBUG=1`` or ``hydra.verbose=true`` shows the traceback (mrc/errors.py)."""
    from mrc.errors import exit_on_user_error
    from mrc.train.pipeline import run
    from mrc.train.record import hydra_record
    from mrc.train.selection import check_sweeper

    hc = HydraConfig.get()

    def job() -> float:
        check_sweeper(hc.sweeper.get("_target_"), cfg)  # an Optuna search never optimises an eval split's F1
        return run(cfg, hc.runtime.output_dir, record=hydra_record(cfg))

    return exit_on_user_error(job, debug=bool(hc.verbose))


if __name__ == "__main__":
    from mrc.errors import exit_on_user_error
    from mrc.train.overrides import check_overrides

    # typos and mistyped values: one error line, exit 2, before Hydra composes or anything runs
    exit_on_user_error(lambda: check_overrides(sys.argv[1:], Path(__file__).resolve().parent / "conf"))
    main()
