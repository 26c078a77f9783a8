"""Hydra callbacks: reject a bad config before Hydra creates any output folder; under torchrun, one
run folder for all processes; one run per run folder."""

from __future__ import annotations

import os
import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, read_write

from acs.training import distributed
from acs.training.config import ConfigError, validate


def _task(config: DictConfig) -> DictConfig:
    return OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])


def _validate_or_exit(config: DictConfig) -> None:
    try:
        validate(_task(config))
    except ConfigError as error:
        # SystemExit, not an exception: Hydra turns callback exceptions into warnings.
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


class ValidateConfig(Callback):
    """Runs :func:`acs.training.config.validate` when a run or a sweep starts."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _validate_or_exit(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _validate_or_exit(config)


class SweepReport(Callback):
    """At the end of every sweep: the accuracy-vs-compute report (results.csv, results.md,
    pareto.png) in the sweep folder and, when the jobs log to W&B, one summary run in their group."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from pathlib import Path

        from acs.reporting import log_sweep_summary, write_report

        sweep_dir = Path(config.hydra.sweep.dir)
        report = write_report([sweep_dir])
        print(f"sweep report: {report.md_path}", file=sys.stderr)
        if config.logger.name == "wandb":
            options = OmegaConf.to_container(config.logger.wandb, resolve=True)
            group = "/".join(sweep_dir.parts[-2:])
            log_sweep_summary(report.rows, report.png_path, sweep_dir, options, group)


class TorchrunRunFolder(Callback):
    """Under torchrun every process composes the config and Hydra makes a run folder in each. They
    must share rank 0's: ``${now:...}`` in ``hydra.run.dir`` resolves per process, and processes may
    start a second apart. So the processes join their group here, before Hydra creates anything,
    take rank 0's resolved folder, and the others write nothing there (no ``.hydra/``, no log file;
    their warnings go to the console)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not distributed.launched():
            return
        from acs.training.builders import select_device

        distributed.init(select_device(config.trainer.device))
        run_dir = distributed.broadcast(str(config.hydra.run.dir))
        with read_write(config.hydra):
            config.hydra.run.dir = run_dir
            if not distributed.is_main():
                config.hydra.output_subdir = None
                config.hydra.job_logging = _console_warnings(distributed.rank())

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if distributed.launched():
            print("error: torchrun runs one job; sweep with -m without torchrun (e.g. hydra/launcher=slurm)",
                  file=sys.stderr)
            raise SystemExit(2)


class RunFolderGuard(Callback):
    """A run folder belongs to one run (acs.training.run_folder). The folder is claimed here, when the
    run starts and before Hydra writes its ``.hydra/`` and log file into it: refused there, a run
    exits with one line and the folder as it was; accepted, it is locked for the run's life. (A
    check in the job itself would come after Hydra has rewritten the old run's ``.hydra/``.) Before
    a sweep, the job folders already in the sweep folder are checked the same way."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from acs.training.run_folder import RunFolderError, claim_folder

        run_dir = str(config.hydra.run.dir)  # ${now:...} resolves once (Hydra caches it): the job's folder
        task, error = _task(config), None
        try:
            claim_folder(run_dir, task, before_hydra=True)  # held until the job ends (app.execute)
        except RunFolderError as refused:
            error = str(refused)
        error = distributed.broadcast(error)  # torchrun: rank 0 claims for all, and all stop together
        if error:
            if distributed.is_main():
                print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2)
        with read_write(config.hydra):
            config.hydra.run.dir = run_dir
            if task.mode == "eval" and distributed.is_main():
                # An evaluation may share the folder of the run it evaluates: its config and log go
                # beside that run's, not over them.
                if config.hydra.output_subdir is not None:
                    config.hydra.output_subdir = ".hydra-eval"
                handlers = config.hydra.job_logging.get("handlers") if config.hydra.job_logging else None
                if handlers and "file" in handlers and "filename" in handlers.file:
                    handlers.file.filename = os.path.join(os.path.abspath(run_dir), "eval.log")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from acs.training.run_folder import RunFolderError, claim_sweep

        try:
            claim_sweep(str(config.hydra.sweep.dir), _task(config))
        except RunFolderError as error:
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2) from None


def _console_warnings(rank: int) -> dict:
    return {
        "version": 1,
        "formatters": {"rank": {"format": f"[rank {rank}][%(name)s][%(levelname)s] - %(message)s"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "rank", "stream": "ext://sys.stderr"}},
        "root": {"level": "WARNING", "handlers": ["console"]},
        "disable_existing_loggers": False,
    }
