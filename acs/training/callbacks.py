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
