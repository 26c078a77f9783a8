"""The jobs of Hydra run or sweep folders, as their files describe them: ``summary.json``,
``.hydra/`` and the sweep's ``multirun.yaml``. Reading only those, a sweep can be reported while it
runs, after some jobs failed, or on another machine."""

from __future__ import annotations

import json
import math
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import yaml

PathLike = Union[str, Path]
SKIP_DIRS = {"wandb", "checkpoints"}  # never hold jobs, and wandb/ can be large
FIXED_COLUMNS = ("model", "gate", "dataset")
UNSET = object()  # JobResult.setting of an override a job does not set


class ReportError(ValueError):
    """A folder that does not exist or holds no jobs, or a metric no job has."""


@dataclass
class JobResult:
    """One job folder as its files describe it. ``metrics`` are the final epoch's (``summary['final']``)."""

    path: Path
    name: str  # the path relative to the folder(s) given, as shown in the table
    status: str  # completed | failed | running (or killed mid-run) | missing (never wrote summary.json)
    overrides: Dict[str, str] = field(default_factory=dict)
    swept: Dict[str, str] = field(default_factory=dict)  # the overrides that differ between the jobs collected
    mode: Optional[str] = None
    model: Optional[str] = None
    gate: Optional[str] = None
    dataset: Optional[str] = None
    metrics: Dict[str, Any] = field(default_factory=dict)
    params: Optional[int] = None
    dense_macs: Optional[float] = None
    run_time_s: Optional[float] = None
    epochs_completed: Optional[int] = None
    error: Optional[str] = None
    overrides_known: bool = True  # False when neither summary.json nor .hydra/ lists them
    sweep_dir: Optional[Path] = None  # the folder holding this job's multirun.yaml, if any

    def setting(self, key: str) -> Any:
        """How the job set override ``key``, as Hydra reads it (:func:`_canonical`); :data:`UNSET` when
        it did not set it, which differs from every value, ``null`` included."""
        return _canonical(self.overrides[key]) if key in self.overrides else UNSET

    @property
    def baseline(self) -> bool:
        return self.gate == "none"

    def value(self, key: str) -> Optional[float]:
        """A finite final metric of a completed job, else None: numbers of unfinished work are not results."""
        raw = self.metrics.get(key) if self.status == "completed" else None
        return float(raw) if isinstance(raw, (int, float)) and math.isfinite(raw) else None

    def macs(self, split: str = "test") -> Optional[float]:
        """MACs per image on ``split``, falling back to the test split's."""
        found = self.value(f"{split}/macs")
        return found if found is not None else self.value("test/macs")

    def compute_pct(self, split: str = "test") -> Optional[float]:
        ratio = self.value(f"{split}/compute_ratio")
        if ratio is None:
            ratio = self.value("test/compute_ratio")
        if ratio is None and self.macs(split) is not None and self.dense_macs:
            ratio = self.macs(split) / self.dense_macs
        return None if ratio is None else 100.0 * ratio


def metric_split(metric: str) -> str:
    """The split a metric was measured on (``val/acc1`` → ``val``); the test split when it names none."""
    return metric.split("/", 1)[0] if "/" in metric else "test"


def natural_key(text: str) -> List[Any]:
    """Sorts 'job 2' before 'job 10'; split() alternates text and digits, so positions compare like types."""
    return [int(part) if i % 2 else part.lower() for i, part in enumerate(re.split(r"(\d+)", text))]


def _is_job(folder: Path) -> bool:
    return (folder / "summary.json").is_file() or (folder / ".hydra").is_dir()


def _job_dirs(folder: Path) -> Iterator[Path]:
    if _is_job(folder):
        yield folder  # a job's own subfolders (checkpoints, wandb) hold no further jobs
        return
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink() and child.name not in SKIP_DIRS and not child.name.startswith("."):
            yield from _job_dirs(child)


def parse_override(text: str) -> tuple:
    """'key=value' (also '+key=…', '++key=…', '~key') as (key, value)."""
    key, _, value = str(text).partition("=")
    if key.startswith("~"):
        return key[1:], "(deleted)"
    return key.lstrip("+"), value


def read_yaml(path: Path) -> Any:
    """A YAML file's contents; None where it is missing or unreadable (a job's files may be damaged)."""
    try:
        return yaml.safe_load(path.read_text()) if path.is_file() else None
    except (OSError, yaml.YAMLError):
        return None


def load_job(path: Path, name: str) -> JobResult:
    """One job folder; a job that never started, died early or left a damaged file still gives a row."""
    summary: Dict[str, Any] = {}
    job = JobResult(path=path, name=name, status="missing")
    if (path / "summary.json").is_file():
        try:
            summary = json.loads((path / "summary.json").read_text())
            if not isinstance(summary, dict):
                raise ValueError("not a JSON object")
            job.status = str(summary.get("status", "failed"))
        except (OSError, ValueError) as error:
            summary, job.status, job.error = {}, "failed", f"summary.json unreadable: {error}"
    listed = read_yaml(path / ".hydra" / "overrides.yaml")
    if not isinstance(listed, list):
        listed = summary.get("overrides")
    job.overrides_known = isinstance(listed, list)
    job.overrides = dict(parse_override(o) for o in listed or [])  # a repeated key: the last one wins, as in Hydra
    job.mode = summary.get("mode")
    job.model, job.gate, job.dataset = (summary.get(k) for k in FIXED_COLUMNS)
    if None in (job.model, job.gate, job.dataset):  # failed early or never started: the composed config knows
        config = read_yaml(path / ".hydra" / "config.yaml")
        for key in FIXED_COLUMNS:
            group = config.get(key) if isinstance(config, dict) else None
            if getattr(job, key) is None and isinstance(group, dict) and group.get("name") is not None:
                setattr(job, key, str(group["name"]))
    final = summary.get("final")
    job.metrics = final if isinstance(final, dict) else {}
    job.params, job.dense_macs = summary.get("params"), summary.get("dense_macs")
    job.run_time_s, job.epochs_completed = summary.get("run_time_s"), summary.get("epochs_completed")
    job.error = job.error or summary.get("error")
    if (path.parent / "multirun.yaml").is_file():
        job.sweep_dir = path.parent
    return job


def collect_jobs(dirs: Sequence[PathLike]) -> List[JobResult]:
    """Every job under ``dirs`` (sweep folders, run folders or parents of either), in natural order, with
    ``swept`` filled in. Raises :class:`ReportError` for a folder that does not exist or when none holds a job."""
    roots = []
    for given in dirs:
        root = Path(given).expanduser().resolve()
        if not root.is_dir():
            raise ReportError(f"{given}: no such folder")
        roots.append(root)
    if not roots:
        raise ReportError("no folder given")
    # Names are relative to the one folder given, or to what several folders share, so they stay unique.
    base = roots[0] if len(roots) == 1 else Path(*Path(roots[0]).parts[: _common_depth(roots)])
    found: Dict[Path, JobResult] = {}
    for root in roots:
        for folder in _job_dirs(root):
            if folder not in found:  # folders given twice, or one inside another
                found[folder] = load_job(folder, folder.relative_to(base).as_posix() if folder != base else folder.name)
    if not found:
        raise ReportError(f"no jobs (folders with summary.json or .hydra/) under {', '.join(map(str, dirs))}")
    jobs = sorted(found.values(), key=lambda j: natural_key(j.name))
    swept, _ = split_overrides(jobs)
    for job in jobs:
        job.swept = {k: job.overrides[k] for k in swept if k in job.overrides}
    return jobs


def _common_depth(paths: Sequence[Path]) -> int:
    depth = 0
    for parts in zip(*(p.parts for p in paths)):
        if len(set(parts)) > 1:
            break
        depth += 1
    return depth


def split_overrides(jobs: Sequence[JobResult]) -> tuple:
    """(keys whose value differs between jobs, {key: value} shared by all), in command-line order.

    A key some jobs set and others do not counts as swept. Jobs whose overrides are unknown take no
    part, or a single such job would make every key look swept.
    """
    known = [j for j in jobs if j.overrides_known]
    keys: Dict[str, None] = {}
    for job in known:
        keys.update(dict.fromkeys(job.overrides))
    swept = [k for k in keys if len({j.setting(k) for j in known}) > 1]
    shared = {k: known[0].overrides[k] for k in keys if k not in swept}
    return swept, shared


def _canonical(value: str) -> Any:
    """An override's value as Hydra reads it, so that spellings of one value compare equal (a sweep
    writes ``False`` where a command line said ``false``; ``1`` and ``1.0`` are one beta)."""
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return value
    return json.dumps(parsed, sort_keys=True, default=str) if isinstance(parsed, (list, dict)) else parsed


def reproduce_command(sweep_dir: Path) -> Optional[str]:
    """The ``python run.py -m ...`` line that ran a sweep, from its multirun.yaml; None when unreadable."""
    config = read_yaml(Path(sweep_dir) / "multirun.yaml")
    try:
        overrides = config["hydra"]["overrides"]
        task, extra = list(overrides.get("task") or []), list(overrides.get("hydra") or [])
    except (TypeError, KeyError, AttributeError):
        return None
    # -m stands for hydra.mode; the old sweep.dir would make a rerun overwrite this sweep's jobs.
    extra = [o for o in extra if not str(o).startswith(("hydra.mode=", "hydra.sweep.dir="))]
    # run.py is the project's one entry point (hydra.job.name could have been renamed on the command line).
    return " ".join(["python run.py -m", *(shlex.quote(str(o)) for o in extra + task)])
