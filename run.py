"""ACS experiment entry point: `python run.py [group=option ...] [key=value ...]`, `-m` to sweep."""

import logging
import signal
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
    from acs.training.app import USER_ERRORS, Terminated, error_line, execute

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        summary = execute(cfg, hydra_cfg.runtime.output_dir, list(hydra_cfg.overrides.task), multirun)
        if "optuna" in str(hydra_cfg.sweeper.get("_target_", "")):
            # The multi-objective search (hparams_search=pareto) maximises accuracy, minimises FLOPs.
            return summary["final"]["test/acc1"], summary["final"]["test/flops"]
        return summary
    except Terminated as error:  # recorded as an interrupted run; the exit status a killed process has
        print(f"error: {error}", file=sys.stderr)
        sys.exit(128 + signal.SIGTERM)
    except Exception as error:  # the run folder records it: summary.json, and the traceback in run.log
        if multirun:
            # Whatever it was, the rest of the sweep runs and its report lists this job as failed; the
            # sweep then exits non-zero (callbacks.SweepReport).
            log.error("job failed: %s", error_line(error))
            return None
        if not isinstance(error, USER_ERRORS):
            raise  # a bug: Hydra prints the traceback and exits 1
        print(f"error: {error_line(error)}", file=sys.stderr)
        sys.exit(2)
    finally:
        distributed.teardown()  # torchrun: leave the process group (nothing to do in one process)


if __name__ == "__main__":
    main()
