"""What run.py does with a composed config, by ``mode``, and how a failed run is recorded."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import torch
from omegaconf import DictConfig

from acs.data import DataFileError, DatasetNotFoundError
from acs.files import write_json
from acs.messages import one_line
from acs.training.checkpoint import CheckpointError
from acs.training.config import ConfigError, validate
from acs.training.engine import TrainingDiverged
from acs.training.run_folder import RunFolderError, claim_folder

# Failures that are the user's input or environment, reported as one line rather than a traceback.
USER_ERRORS = (
    ConfigError, DatasetNotFoundError, DataFileError, CheckpointError, TrainingDiverged, RunFolderError,
    torch.OutOfMemoryError,
)  # fmt: skip


def error_line(error: BaseException) -> str:
    """What the console says of a failed run: a user error's own message, anything else with its type."""
    return " ".join(str(error).split()) if isinstance(error, USER_ERRORS) else one_line(error)


class Terminated(BaseException):
    """SIGTERM (a cluster's time limit or preemption, ``kill``) raised inside the run, so that it ends
    as an interrupted run does: summary.json says so, keep_rates.png is drawn, the checkpoints already
    written stay whole. A BaseException, as KeyboardInterrupt is: a sweep stops rather than going on."""


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Turns SIGTERM into :class:`Terminated` while the block runs. Only the default disposition is
    replaced: a launcher that handles the signal itself (submitit lets it pass to requeue) keeps its
    handler; and Python sets handlers from the main thread only."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise Terminated("stopped by SIGTERM")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def execute(cfg: DictConfig, output_dir: str, overrides: List[str], multirun: bool = False) -> Optional[Dict[str, Any]]:
    """Runs ``cfg.mode`` into ``output_dir``, holding the folder for the run's life; returns the
    summary. A run that fails, however, leaves a ``summary.json`` (``eval.json`` for an evaluation)
    saying so, for the sweep report, and the traceback in its log file; a resume that fails before
    it begins leaves the run it tried to resume as it was."""
    run_dir = Path(output_dir)
    folder = claim_folder(run_dir, cfg)  # run.py's claim from before Hydra wrote, or a sweep job's own
    try:
        with sigterm_raises():
            return _dispatch(cfg, run_dir, overrides, multirun, folder.begin)
    except BaseException as error:
        if not folder.begun:
            folder.abandon()
        else:
            _record_failure(cfg, run_dir, overrides, error)
        raise
    finally:
        folder.release()


def _record_failure(cfg: DictConfig, run_dir: Path, overrides: List[str], error: BaseException) -> None:
    """The failed run's record, unless the run wrote its own, and the traceback in the log file only:
    the console gets one line (run.py)."""
    record_path = run_dir / ("eval.json" if cfg.mode == "eval" else "summary.json")
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        record = {}
    if not isinstance(record, dict) or record.get("status") != "failed":
        # For the report's columns; an evaluation's model comes from its checkpoint, unknown here.
        names = {} if cfg.mode == "eval" else {key: cfg[key].name for key in ("model", "gate", "dataset")}
        write_json(record_path, {**names, "status": "failed", "mode": cfg.mode, "overrides": overrides,
                                 "error": one_line(error)})  # fmt: skip
    failure = logging.LogRecord("acs", logging.ERROR, __file__, 0, "run failed: %s", (one_line(error),), sys.exc_info())
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):  # Hydra's run.log (eval.log for an evaluation)
            handler.handle(failure)


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
