"""What run.py does with a composed config, by ``mode``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from omegaconf import DictConfig

from acs.data import DatasetNotFoundError
from acs.files import write_json
from acs.training.checkpoint import CheckpointError
from acs.training.config import ConfigError, validate
from acs.training.engine import TrainingDiverged
from acs.training.run_folder import RunFolderError, claim_folder

# Failures that are the user's input or environment, reported as one line rather than a traceback.
USER_ERRORS = (ConfigError, DatasetNotFoundError, CheckpointError, TrainingDiverged, RunFolderError)


def execute(cfg: DictConfig, output_dir: str, overrides: List[str], multirun: bool = False) -> Optional[Dict[str, Any]]:
    """Runs ``cfg.mode`` into ``output_dir``, holding the folder for the run's life; returns the
    summary. A job that fails before training starts still leaves a ``summary.json`` (``eval.json``
    for an evaluation) saying so, for the sweep report; a resume that fails before it begins leaves
    the run it tried to resume as it was."""
    run_dir = Path(output_dir)
    folder = claim_folder(run_dir, cfg)  # run.py's claim from before Hydra wrote, or a sweep job's own
    try:
        return _dispatch(cfg, run_dir, overrides, multirun, folder.begin)
    except BaseException as error:
        if not folder.begun:
            folder.abandon()
        elif isinstance(error, USER_ERRORS):
            record = run_dir / ("eval.json" if cfg.mode == "eval" else "summary.json")
            if not record.is_file():
                write_json(record, {"status": "failed", "mode": cfg.mode, "overrides": overrides, "error": str(error)})
        raise
    finally:
        folder.release()


def _dispatch(
    cfg: DictConfig, run_dir: Path, overrides: List[str], multirun: bool, begin: Callable[[], None]
) -> Optional[Dict[str, Any]]:
    validate(cfg)  # sweeps reach here with values the start-of-sweep check has not seen
    group = "/".join(run_dir.parent.parts[-2:]) if multirun else None
    if cfg.mode == "train":
        from acs.training.runner import train

        return train(cfg, run_dir, overrides, group, on_start=begin)
    if cfg.mode == "eval":
        from acs.training.runner import evaluate_checkpoint

        return evaluate_checkpoint(cfg, run_dir, overrides)
    from acs.training import distributed
    from acs.training.benchmark import benchmark

    if distributed.launched():
        raise ConfigError("mode=benchmark measures one process: run it without torchrun")

    return benchmark(cfg, run_dir, overrides)
