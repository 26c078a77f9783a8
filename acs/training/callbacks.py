"""Hydra callbacks: reject a bad config before Hydra creates any output folder; a sweep's console
(job labels, jobs done) and its report at the end; under torchrun, one run folder for all processes;
one run per run folder."""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Iterable, List, Optional, TextIO

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, read_write

from acs.training import distributed
from acs.training.config import validate


def _task(config: DictConfig) -> DictConfig:
    return OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])


def _validate_or_exit(config: DictConfig) -> None:
    from acs.training.app import USER_ERRORS, error_line

    try:
        validate(_task(config))
    except USER_ERRORS as error:
        # SystemExit, not an exception: Hydra turns callback exceptions into warnings.
        print(f"error: {error_line(error)}", file=sys.stderr)
        raise SystemExit(2) from None


class ValidateConfig(Callback):
    """Runs :func:`acs.training.config.validate` when a run or a sweep starts."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _validate_or_exit(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _validate_or_exit(config)


class SweepReport(Callback):
    """At the end of every sweep, whatever its jobs did: the accuracy-vs-compute report (results.csv,
    results.md, pareto.png) in the sweep folder and, when the jobs log to W&B, one summary run in
    their group; then the sweep exits non-zero if a job failed, so that a script can tell. A sweep
    cut short in this process (Ctrl-C, a sweeper that stops at a failed job) gets its report at exit."""

    def __init__(self) -> None:
        self._sweep: Optional[Path] = None  # the sweep under way in this process, not yet reported
        self._pid: Optional[int] = None
        self._armed = False

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._sweep, self._pid = Path(config.hydra.sweep.dir), os.getpid()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Armed once a job has started here (not in a launcher's worker process, which gets a copy of
        # this callback): a sweep refused before it began has nothing to report.
        if self._pid == os.getpid() and not self._armed:
            self._armed = True
            atexit.register(self._report_at_exit)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._sweep = None  # reported here: nothing left for the exit
        sweep_dir = Path(config.hydra.sweep.dir)
        wandb = OmegaConf.to_container(config.logger.wandb, resolve=True) if config.logger.name == "wandb" else None
        failed = _report(sweep_dir, wandb)
        if failed:
            print(f"error: {len(failed)} job(s) of the sweep did not complete: {', '.join(failed)} "
                  f"(see {sweep_dir / 'results.md'})", file=sys.stderr)  # fmt: skip
            raise SystemExit(1)  # SystemExit: Hydra turns callback exceptions into warnings

    def _report_at_exit(self) -> None:
        if self._sweep is not None:
            _report(self._sweep, None)


class SweepProgress(Callback):
    """A sweep's console: every line a job writes there starts with the job's number (``[job 3]``, as
    in Hydra's ``#3 : <overrides>`` launch list), so that parallel jobs can be told apart, and each
    job that ends says how many of the sweep's jobs are done (``sweep: 5/8 jobs done, 1 failed``).
    Jobs are counted from their folders' records, which every launcher's jobs share."""

    def __init__(self) -> None:
        self._total: Optional[int] = None  # set before the launch; a launcher's workers get a copy

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._total = _sweep_size(config)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        logging.captureWarnings(True)  # Python's warnings too: logged, they carry the label, and reach run.log
        _label_console(f"[job {config.hydra.job.num}]")

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        done, failed = _jobs_done(Path(config.hydra.sweep.dir), Path(config.hydra.runtime.output_dir))
        total = f"/{self._total}" if self._total else ""
        logging.getLogger("acs.sweep").info("sweep: %d%s jobs done, %d failed", done, total, failed)
        _unlabel_console()


class _Labelled:
    """A console stream whose every line starts with ``label``. The label is put on the streams
    themselves, not on our log format, so that whatever else a job prints is labelled too: W&B's
    ``wandb: ...`` lines (its SDK writes them to ``sys.stderr`` itself, not through logging), other
    libraries' prints, a traceback. (Silencing W&B and re-emitting its lines through our logger would
    hide the warnings it was not told about.) Output written below Python, to the file descriptor
    (a C library's, a child process's), is not labelled."""

    def __init__(self, stream: TextIO, label: str) -> None:
        self.stream, self.label = stream, label
        self._line_start = True  # writes may end mid-line: the label goes before the next line's text

    def write(self, text: str) -> int:
        out = []
        for line in text.splitlines(keepends=True):
            out += [self.label, line] if self._line_start else [line]
            self._line_start = line.endswith(("\n", "\r"))
        self.stream.write("".join(out))
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:  # flush, isatty, fileno, encoding...: the stream's own
        return getattr(self.stream, name)


def _label_console(label: str) -> None:
    """Labels ``sys.stdout``, ``sys.stderr`` and the log handlers that write to them (Hydra's console
    handler, set up for the job before this is called and holding the stream it found)."""
    _unlabel_console()  # a job that never reached its end (the previous one, interrupted) left its own
    streams = {}
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        streams[id(stream)] = labelled = _Labelled(stream, label)
        setattr(sys, name, labelled)
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler and id(handler.stream) in streams:  # not the job's log file
            handler.setStream(streams[id(handler.stream)])


def _unlabel_console() -> None:
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if isinstance(stream, _Labelled):
            setattr(sys, name, stream.stream)
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler and isinstance(handler.stream, _Labelled):
            handler.setStream(handler.stream.stream)


def _sweep_size(config: DictConfig) -> Optional[int]:
    """How many jobs the sweep launches: the product of Hydra's basic sweeper's value lists, or an
    Optuna search's trial count; None for a sweeper that does not say."""
    sweeper = config.hydra.sweeper
    if str(sweeper.get("_target_", "")).endswith(".BasicSweeper"):
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        params = [f"{key}={value}" for key, value in (sweeper.get("params") or {}).items()]
        overrides = OverridesParser.create().parse_overrides([*params, *config.hydra.overrides.task])
        return sum(len(batch) for batch in BasicSweeper.split_arguments(overrides, None))
    trials = sweeper.get("n_trials")
    return int(trials) if isinstance(trials, int) else None


def _jobs_done(sweep_dir: Path, this_job: Path) -> tuple:
    """(jobs that ended, of which failed) among the sweep's folders; ``this_job`` has ended."""
    from acs.reporting import collect_jobs

    this_job = this_job.resolve()
    statuses = {job.path.resolve(): job.status for job in collect_jobs([sweep_dir])}
    for path, status in statuses.items():
        if status == "missing":  # or an evaluation, which keeps its record in eval.json
            statuses[path] = _eval_status(path) or status
    if statuses.get(this_job) not in ("completed", "failed"):
        statuses[this_job] = "failed"  # ended without a record of success: refused before it began
    ended = [status for status in statuses.values() if status in ("completed", "failed")]
    return len(ended), ended.count("failed")


def _report(sweep_dir: Path, wandb: Optional[dict]) -> List[str]:
    """Writes the sweep's report (and its W&B summary run when ``wandb`` holds the logger's options);
    returns the jobs that did not complete, or ``["report"]`` when the report could not be written."""
    from acs.reporting import log_sweep_summary, write_report

    try:
        report = write_report([sweep_dir])
    except Exception as error:  # noqa: BLE001 - the exit code must still say so
        print(f"error: the sweep report could not be written: {error}", file=sys.stderr)
        return ["report"]
    print(f"sweep report: {report.md_path}", file=sys.stderr)
    if wandb is not None:
        log_sweep_summary(report.rows, report.png_path, sweep_dir, wandb, "/".join(sweep_dir.parts[-2:]))
    done = [row["status"] == "completed" or _evaluated(sweep_dir / row["job"]) for row in report.rows]
    return [row["job"] for row, ok in zip(report.rows, done) if not ok]


def _evaluated(job: Path) -> bool:
    """A mode=eval job, which records its result in eval.json rather than summary.json, that completed."""
    return _eval_status(job) == "completed"


def _eval_status(job: Path) -> Optional[str]:
    try:
        return str(json.loads((job / "eval.json").read_text()).get("status"))
    except (OSError, ValueError, AttributeError):
        return None


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
