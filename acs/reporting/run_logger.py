"""Experiment loggers for the training loop: a no-op logger and a Weights & Biases logger.

Logging is never allowed to kill training: every W&B failure becomes one warning and the logger
carries on as a no-op. An offline run keeps all of W&B inside the run folder and talks to no host.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from acs.messages import one_line

log = logging.getLogger(__name__)

LOGGERS = ("none", "wandb")
MODES = ("offline", "online", "disabled")
# Offline, W&B's system metrics, machine metadata, git and code capture stay off: they record the
# machine rather than the run, and the metrics sampler probes cloud metadata endpoints.
OFFLINE_SETTINGS = {"x_disable_stats": True, "x_disable_meta": True, "disable_git": True, "disable_code": True}
STEP_METRIC = "epoch"  # a training run logs one history row per epoch, which each row names
SPLITS = ("train", "val", "test")


def training_metrics() -> List[Tuple[str, Dict[str, Any]]]:
    """``define_metric`` calls of a training run: epoch is every chart's x-axis; accuracies keep their
    best and last value in the summary (``test/acc1.max``, ``test/acc1.last``), losses their lowest and
    last; everything else its last. The per-layer keep rates (``test/keep/L00``..., one key per gated
    layer and split) stay in the history but out of the automatic panels: they are drawn as one chart
    per run (:mod:`acs.reporting.wandb_run`)."""
    metrics: List[Tuple[str, Dict[str, Any]]] = [(STEP_METRIC, {}), ("*", {"step_metric": STEP_METRIC})]
    for split in SPLITS:
        metrics += [(f"{split}/{name}", {"summary": "max,last"}) for name in ("acc1", "acc5")]
        metrics += [(f"{split}/{name}", {"summary": "min,last"}) for name in ("loss", "xent")]
        metrics.append((f"{split}/keep/*", {"step_metric": STEP_METRIC, "hidden": True}))
    return metrics


def offline_environment(run_dir: Path) -> Dict[str, str]:
    """The environment of an offline W&B run: W&B's own folders (cache with wandb-core's debug logs,
    data with artifact staging, config, artifacts), by default under the home folder, go inside
    ``run_dir/wandb``, and wandb-core's error reporting, which looks up its server's address even
    offline, is off. wandb-core reads these when it starts, hence environment variables."""
    home = Path(run_dir).resolve() / "wandb"
    folders = {f"WANDB_{name.upper()}_DIR": str(home / name) for name in ("cache", "data", "config", "artifacts")}
    return {**folders, "WANDB_ERROR_REPORTING": "false"}


class RunLogger:
    """Logger interface; used as is, it is the no-op logger behind ``logger=none``."""

    run_id: Optional[str] = None
    log_checkpoints = False  # logger.wandb.log_checkpoints: checkpoints go to W&B as model artifacts

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        pass

    def log_rich(self, build: Callable[[Any], Mapping[str, Any]]) -> None:
        """Logs W&B objects (tables, plots, images) that ``build(wandb)`` returns; a logger without
        W&B never calls ``build``, so callers need no W&B import of their own."""

    def log_artifact(
        self, path: Path, name: str, kind: str, metadata: Mapping[str, Any], aliases: Sequence[str] = ()
    ) -> None:
        """Logs the file ``path`` as artifact ``name`` of type ``kind`` (a copy: the file may change later)."""

    def finish(self, exit_code: int = 0) -> None:
        pass

    def __enter__(self) -> "RunLogger":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        # A crashed run must still be closed (and marked failed) so its files are complete.
        self.finish(exit_code=0 if exc_type is None else 1)
        return False


class WandbLogger(RunLogger):
    """Wraps one W&B run; any W&B error turns the logger into a no-op after a warning."""

    def __init__(self, run: Any, restore: Optional[Dict[str, Optional[str]]] = None) -> None:
        self._run = run
        self._logging = True  # False after a log error: the run is still finished at the end
        self._restore = restore  # offline: the environment before the run, put back when it finishes
        self.run_id = run.id

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        if self._run is None or not self._logging:
            return
        try:
            # The run's own log, not wandb.log: with several live runs in one process the
            # module-level call would write to whichever run was started last.
            self._run.log(dict(metrics), step=step)
        except Exception as err:  # noqa: BLE001 - logging must never stop training
            self._logging = False
            log.warning("W&B log failed (%s); W&B logging is off for the rest of this run", one_line(err))

    def log_rich(self, build: Callable[[Any], Mapping[str, Any]]) -> None:
        if self._run is None or not self._logging:
            return
        try:
            import wandb

            self._run.log(dict(build(wandb)))
        except Exception as err:  # noqa: BLE001 - a chart must never stop training
            log.warning("W&B chart logging failed (%s)", one_line(err))

    def log_artifact(
        self, path: Path, name: str, kind: str, metadata: Mapping[str, Any], aliases: Sequence[str] = ()
    ) -> None:
        if self._run is None or not self._logging:
            return
        try:
            import wandb

            artifact = wandb.Artifact(name, type=kind, metadata=dict(metadata))
            artifact.add_file(str(path))
            self._run.log_artifact(artifact, aliases=list(aliases))
        except Exception as err:  # noqa: BLE001
            log.warning("W&B artifact logging failed (%s)", one_line(err))

    def define_metrics(self, metrics: Sequence[Tuple[str, Mapping[str, Any]]]) -> None:
        """``run.define_metric(name, **options)`` for each (name, options), in order."""
        if self._run is None or not self._logging:
            return
        try:
            for name, options in metrics:
                self._run.define_metric(name, **options)
        except Exception as err:  # noqa: BLE001
            log.warning("W&B define_metric failed (%s)", one_line(err))

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        if self._run is None or not self._logging:
            return
        try:
            self._run.summary.update(dict(summary))
        except Exception as err:  # noqa: BLE001
            log.warning("W&B summary update failed (%s)", one_line(err))

    def finish(self, exit_code: int = 0) -> None:
        run, self._run = self._run, None  # cleared first so a second call does nothing
        if run is None:
            return
        try:
            run.finish(exit_code=exit_code)
            if self._restore is not None:
                import wandb

                # wandb-core serves every run of the process and keeps the folders it started with:
                # stopped, the next run (a sweep's next job) starts its own in its own folder.
                wandb.teardown()
        except Exception as err:  # noqa: BLE001
            log.warning("W&B finish failed (%s)", one_line(err))
        finally:
            _set_environment(self._restore or {})


def resolve_mode(options: Mapping[str, Any]) -> str:
    """Explicit option, else the WANDB_MODE environment variable, else offline (no server needed);
    ValueError naming where a mode that is none of MODES came from."""
    source, mode = "logger.wandb.mode", options.get("mode")
    if not mode:
        source, mode = "WANDB_MODE", os.environ.get("WANDB_MODE") or "offline"
    if mode not in MODES:
        raise ValueError(f"{source}={mode!r} is not one of: {', '.join(MODES)}")
    return mode


def _set_environment(values: Mapping[str, Optional[str]]) -> Dict[str, Optional[str]]:
    """Sets (None: removes) environment variables; returns their previous values."""
    previous = {key: os.environ.get(key) for key in values}
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    return previous


def create_logger(
    name: str,
    options: Mapping[str, Any],
    run_dir: Path,
    config: Mapping[str, Any],
    group: Optional[str] = None,
    resume_id: Optional[str] = None,
    run_name: Optional[str] = None,
    job_type: str = "train",
) -> RunLogger:
    """Build the logger called ``name``; W&B problems degrade to the no-op logger with a warning.

    ``group`` is the sweep's (None for a single run) and ``run_name`` the job's; ``options``
    (``logger.wandb``) may name a group of their own, which wins, and a name, which wins for a single
    run and comes before each job's own name in a sweep. A ``train`` run's metrics are defined by
    :func:`training_metrics`."""
    if name not in LOGGERS:
        raise ValueError(f"unknown logger {name!r}; choices: {', '.join(LOGGERS)}")
    if name == "none":
        return RunLogger()
    mode = resolve_mode(options)
    if mode == "disabled":
        # wandb's own disabled mode still touches the run folder; skipping it writes nothing.
        return RunLogger()
    run_dir = Path(run_dir)
    restore = _set_environment(offline_environment(run_dir)) if mode == "offline" else None
    try:
        import wandb

        run_dir.mkdir(parents=True, exist_ok=True)
        run = wandb.init(
            project=options.get("project") or "acs",
            entity=options.get("entity"),
            mode=mode,
            dir=str(run_dir),
            config=dict(config),
            group=options.get("group") or group,
            name=_run_name(options.get("name"), run_name, sweep=group is not None),
            job_type=job_type,
            tags=list(options.get("tags") or []) or None,
            notes=options.get("notes"),
            id=resume_id,
            resume="allow" if resume_id else None,
            # Each logger owns its run: Hydra multirun jobs (and tests) start several per process.
            reinit="create_new",
            settings=wandb.Settings(**OFFLINE_SETTINGS) if mode == "offline" else None,
        )
    except Exception as err:  # noqa: BLE001 - includes ImportError and wandb.errors.UsageError
        log.warning("W&B init failed (%s); continuing without W&B logging", one_line(err))
        _set_environment(restore or {})
        return RunLogger()
    logger = WandbLogger(run, restore)
    logger.log_checkpoints = bool(options.get("log_checkpoints"))
    if job_type == "train":
        logger.define_metrics(training_metrics())
    return logger


def _run_name(given: Optional[str], own: Optional[str], sweep: bool) -> Optional[str]:
    if given and own and sweep:  # every job of a sweep named alike would be one name thirty times
        return f"{given}: {own}"
    return given or own
