"""A run folder belongs to one run: claimed before anything is written there, locked for the run's life.

A run refuses a folder that holds another run's results unless ``resume=true`` continues it or
``overwrite=true`` replaces it, and refuses at once a folder another process holds (an ``flock`` on
``.lock``, which the kernel drops when that process ends, however it ends). run.py claims the folder
before Hydra writes ``.hydra/`` and the log there (callbacks.RunFolderGuard), so that a refused run
changes nothing; a sweep job claims its own when it starts. A resume begins only once its checkpoint
has loaded: until then ``.hydra/`` and ``run.log`` of the run it resumes are kept in ``.resume-backup``
and put back if it fails (Hydra rewrites them before the checkpoint can be tried).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Union

from omegaconf import DictConfig

from acs.files import lock_file, remove_temp_files, unlock
from acs.training import distributed

LOCK, BACKUP, LOG = ".lock", ".resume-backup", "run.log"
# What mode=eval writes: its own files, so that it may evaluate a run in that run's folder.
EVAL_FILES = ("eval.json", "eval.log", ".hydra-eval")
# Results of a run, which another run would replace or mix with its own.
RESULTS = ("metrics.jsonl", "checkpoints/last.pt", "checkpoints/best.pt", "eval.json", "benchmark.json")
# What a run leaves, which overwrite=true removes; Hydra's outputs only before Hydra writes its own.
RUN_FILES = ("metrics.jsonl", "summary.json", "benchmark.json", "checkpoints", "wandb", "keep_rates.png", *EVAL_FILES)
HYDRA_FILES = (".hydra", LOG, ".hydra-eval", "eval.log")


class RunFolderError(RuntimeError):
    """A run folder that holds another run or that another process uses; the message is one line."""


class RunFolder:
    """This process's hold on a run folder: its lock (None on torchrun ranks that write nothing)
    and whether the run has begun. A run begins at once, a resume once its checkpoint has loaded."""

    def __init__(self, path: Path, lock: Optional[int], begun: bool):
        self.path, self.lock, self.begun = path, lock, begun

    def begin(self) -> None:
        """The run goes ahead: what killed writes left is removed, and the backup is no longer needed."""
        if not self.begun:
            for folder in (self.path, self.path / "checkpoints"):
                remove_temp_files(folder)
            for backup in (BACKUP, f"{BACKUP}.new"):  # .new: a backup whose making was cut short
                shutil.rmtree(self.path / backup, ignore_errors=True)
            self.begun = True

    def abandon(self) -> None:
        """A resume that failed before it began: the run it tried to resume as it was."""
        if not self.begun:
            _restore(self.path)

    def release(self) -> None:
        if self.lock is not None:
            unlock(self.lock)
            self.lock = None
        _HELD.pop(self.path, None)


_HELD: Dict[Path, RunFolder] = {}  # the claims this process holds, by absolute path


def claim_folder(path: Union[str, Path], cfg: DictConfig, before_hydra: bool = False) -> RunFolder:
    """Locks ``path`` for the run ``cfg`` (or returns this process's claim on it) and prepares it:
    ``overwrite=true`` removes the old run, a resume keeps what Hydra is about to rewrite (when
    ``before_hydra``). RunFolderError, with the folder untouched, when the folder is not the run's."""
    path = Path(os.path.abspath(path))  # as Hydra's runtime.output_dir
    if path in _HELD:
        return _HELD[path]
    if not distributed.is_main():  # torchrun: rank 0 holds the folder for all
        return RunFolder(path, None, begun=True)
    lock = _lock(path, create=False)  # no new file in a folder that may yet be refused
    try:
        if lock is not None and before_hydra:
            _restore(path)  # a resume killed before it began
        found = _check(path, cfg)
        if lock is None:
            lock = _lock(path, create=True)
            found = _check(path, cfg)  # again: a run may have ended there between the look and the lock
    except BaseException:
        if lock is not None:
            unlock(lock)
        raise
    if found and cfg.overwrite:
        # Hydra's outputs go too when they are the old run's; a sweep job's are already its own.
        hydra_files = HYDRA_FILES if before_hydra else ()
        _remove(path, EVAL_FILES if cfg.mode == "eval" else RUN_FILES + hydra_files)
    folder = _HELD[path] = RunFolder(path, lock, begun=False)
    if found and cfg.resume and cfg.mode == "train":
        if before_hydra:
            _backup(path)
    else:
        folder.begin()
    return folder


def claim_sweep(sweep_dir: Union[str, Path], cfg: DictConfig) -> None:
    """Before a sweep starts: every job folder already in ``sweep_dir`` passes :func:`claim_folder`
    (and is prepared) before Hydra writes into it; each job then claims its own when it runs."""
    children = sorted(Path(sweep_dir).iterdir()) if Path(sweep_dir).is_dir() else []
    for job in [p for p in children if any((p / name).exists() for name in (LOCK, ".hydra", *RESULTS))]:
        claim_folder(job, cfg, before_hydra=True).release()


def _lock(path: Path, create: bool) -> Optional[int]:
    if not create and not (path / LOCK).is_file():
        return None
    if create:
        path.mkdir(parents=True, exist_ok=True)
    lock = lock_file(path / LOCK, create)
    if lock is None:
        raise RunFolderError(f"{path} is in use by another run (it holds {LOCK}): wait for it to end "
                             "or choose another hydra.run.dir")  # fmt: skip
    return lock


def _check(path: Path, cfg: DictConfig) -> List[str]:
    """The results in ``path`` that the run ``cfg`` would replace; RunFolderError unless it may."""
    found = [name for name in (("eval.json",) if cfg.mode == "eval" else RESULTS) if (path / name).exists()]
    if found and not (cfg.overwrite or (cfg.resume and cfg.mode == "train")):
        what = "an evaluation" if cfg.mode == "eval" else "a run"
        resume = "" if cfg.mode == "eval" else "resume=true continues it, "
        raise RunFolderError(f"{path} already holds {what} ({', '.join(found)}): {resume}overwrite=true "
                             "replaces it, or choose another hydra.run.dir")  # fmt: skip
    return found


def _remove(path: Path, names) -> None:
    for name in names:
        target = path / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)


def _backup(path: Path) -> None:
    """``.hydra/`` and the length of ``run.log``, kept until the resume begins. Built beside and
    renamed into place: a half-made backup is never taken for a whole one."""
    new = path / f"{BACKUP}.new"
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir()
    if (path / ".hydra").is_dir():
        shutil.copytree(path / ".hydra", new / "hydra")
    log = path / LOG
    (new / "log_size").write_text(str(log.stat().st_size if log.is_file() else -1))
    os.rename(new, path / BACKUP)


def _restore(path: Path) -> None:
    """Puts a backup back; it is removed last, so that a restore cut short is done again."""
    backup = path / BACKUP
    if not backup.is_dir():
        return
    shutil.rmtree(path / ".hydra", ignore_errors=True)
    if (backup / "hydra").is_dir():
        shutil.copytree(backup / "hydra", path / ".hydra")
    size, log = int((backup / "log_size").read_text()), path / LOG
    if size < 0:
        log.unlink(missing_ok=True)
    elif log.is_file():
        os.truncate(log, size)  # the failed attempt's lines go; Hydra's handler appends, so it is unharmed
    shutil.rmtree(backup)
