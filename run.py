"""ACS experiment entry point: `python run.py [group=option ...] [key=value ...]`, `-m` to sweep."""

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from acs.training.config import register_schema

register_schema()
log = logging.getLogger("acs")


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig):
    from acs.training import distributed
    from acs.training.app import execute

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        summary = execute(cfg, hydra_cfg.runtime.output_dir, list(hydra_cfg.overrides.task), multirun)
        if "optuna" in str(hydra_cfg.sweeper.get("_target_", "")):
            # The multi-objective search (hparams_search=pareto) maximises accuracy, minimises FLOPs.
            return summary["final"]["test/acc1"], summary["final"]["test/flops"]
        return summary
    except Exception as error:  # one clear line instead of a traceback; the run folder records it too
        from acs.training.app import USER_ERRORS

        if not isinstance(error, USER_ERRORS):
            raise
        if multirun:
            log.error("%s", error)
            return None  # let the rest of the sweep run; the report lists this job as failed
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    finally:
        distributed.teardown()  # torchrun: leave the process group (nothing to do in one process)


if __name__ == "__main__":
    main()
