"""Hydra callbacks: reject a bad config before Hydra creates any output folder."""

from __future__ import annotations

import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from acs.training.config import ConfigError, validate


def _validate_or_exit(config: DictConfig) -> None:
    task = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
    try:
        validate(task)
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
