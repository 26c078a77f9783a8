"""Sweep report: the jobs of Hydra run or sweep folders as one table (``results.csv``, ``results.md``)
and one accuracy-vs-FLOPs plot with its Pareto front (``pareto.png``).

Used by ``python -m acs.report`` and by the end-of-sweep callback. It reads only what the jobs wrote
(``summary.json``, ``.hydra/``, the sweep's ``multirun.yaml``), so a sweep can be reported while it
runs, after some jobs failed, or on another machine.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence, Union

import yaml

from acs.reporting.pareto import PlotPoint, pareto_front, plot_pareto, short_label
from acs.training.files import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PathLike = Union[str, Path]
SKIP_DIRS = {"wandb", "checkpoints"}  # never hold jobs, and wandb/ can be large
FIXED_COLUMNS = ("model", "gate", "dataset")


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


@dataclass
class Report:
    """What :func:`write_report` wrote. ``rows`` hold typed values (None for blanks), one per job, keyed by
    ``columns``: ``wandb.Table(columns=report.columns, data=report.data)`` logs them."""

    out_dir: Path
    csv_path: Path
    md_path: Path
    png_path: Path
    columns: List[str]
    rows: List[Dict[str, Any]]
    jobs: List[JobResult]
    counts: Dict[str, int]
    figure: Figure = field(repr=False)

    @property
    def paths(self) -> List[Path]:
        return [self.csv_path, self.md_path, self.png_path]

    @property
    def data(self) -> List[List[Any]]:
        return [[row[c] for c in self.columns] for row in self.rows]


# ----------------------------------------------------------------------------------------- collecting


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


def _read_yaml(path: Path) -> Any:
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
    listed = _read_yaml(path / ".hydra" / "overrides.yaml")
    if not isinstance(listed, list):
        listed = summary.get("overrides")
    job.overrides_known = isinstance(listed, list)
    job.overrides = dict(parse_override(o) for o in listed or [])  # a repeated key: the last one wins, as in Hydra
    job.mode = summary.get("mode")
    job.model, job.gate, job.dataset = (summary.get(k) for k in FIXED_COLUMNS)
    if None in (job.model, job.gate, job.dataset):  # failed early or never started: the composed config knows
        config = _read_yaml(path / ".hydra" / "config.yaml")
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
    swept = [k for k in keys if len({j.overrides.get(k) for j in known}) > 1]
    shared = {k: known[0].overrides[k] for k in keys if k not in swept}
    return swept, shared


def reproduce_command(sweep_dir: Path) -> Optional[str]:
    """The ``python run.py -m ...`` line that ran a sweep, from its multirun.yaml; None when unreadable."""
    config = _read_yaml(Path(sweep_dir) / "multirun.yaml")
    try:
        overrides = config["hydra"]["overrides"]
        task, extra = list(overrides.get("task") or []), list(overrides.get("hydra") or [])
    except (TypeError, KeyError, AttributeError):
        return None
    # -m stands for hydra.mode; the old sweep.dir would make a rerun overwrite this sweep's jobs.
    extra = [o for o in extra if not str(o).startswith(("hydra.mode=", "hydra.sweep.dir="))]
    # run.py is the project's one entry point (hydra.job.name could have been renamed on the command line).
    return " ".join(["python run.py -m", *(shlex.quote(str(o)) for o in extra + task)])


# ------------------------------------------------------------------------------------------- the table


def metric_column(metric: str) -> str:
    name = metric.replace("/", "_")
    return name + "_%" if metric.rsplit("/", 1)[-1].startswith("acc") else name


def _split(metric: str) -> str:
    return metric.split("/", 1)[0] if "/" in metric else "test"


def build_rows(jobs: Sequence[JobResult], metric: str = "test/acc1", x: str = "flops") -> tuple:
    """(columns, rows) for the table; ``on_front`` is over completed jobs with both coordinates."""
    swept, _ = split_overrides(jobs)
    swept = [k for k in swept if k not in FIXED_COLUMNS]  # the fixed column already shows it
    extra = [] if metric in ("test/acc1", "test/acc5") else [metric_column(metric)]
    tail = "macs_per_image flops_per_image compute_% params run_time_s epochs status on_front baseline error".split()
    columns = ["job", *swept, *FIXED_COLUMNS, "test_acc1_%", "test_acc5_%", *extra, *tail]
    points = [plot_coordinates(j, metric, x) for j in jobs]
    front = pareto_front([p if p else (math.nan, math.nan) for p in points])
    rows = []
    for job, on_front in zip(jobs, front):
        macs = job.macs()
        row = {"job": job.name, **{k: job.overrides.get(k) for k in swept}}
        row.update(model=job.model, gate=job.gate, dataset=job.dataset)
        row["test_acc1_%"], row["test_acc5_%"] = job.value("test/acc1"), job.value("test/acc5")
        if extra:
            row[extra[0]] = job.value(metric)
        row.update(macs_per_image=macs, flops_per_image=None if macs is None else 2 * macs)
        row.update({"compute_%": job.compute_pct(), "params": job.params, "run_time_s": job.run_time_s})
        row.update(epochs=job.epochs_completed, status=job.status, on_front=on_front, baseline=job.baseline)
        row["error"] = job.error
        rows.append(row)
    return columns, rows


def plot_coordinates(job: JobResult, metric: str = "test/acc1", x: str = "flops") -> Optional[tuple]:
    """(MACs or FLOPs per image, metric) of a completed job, measured on the metric's split; else None."""
    y, macs = job.value(metric), job.macs(_split(metric))
    if y is None or macs is None:
        return None
    return (2 * macs if x == "flops" else macs), y


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(round(value, 4))
    return str(value)


def _md_cell(column: str, value: Any) -> str:
    if value is None or value is False:
        return ""
    if value is True:
        return "yes"
    if column in ("macs_per_image", "flops_per_image"):
        return f"{value / 1e6:,.2f}"
    if column.endswith("_%"):
        return f"{value:.2f}" if "acc" in column else f"{value:.1f}"
    if column == "params" and isinstance(value, int):
        return f"{value:,}"
    if column == "run_time_s" and isinstance(value, (int, float)):
        return f"{value:.1f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


MD_HEADERS = {
    "test_acc1_%": "top-1 (%)",
    "test_acc5_%": "top-5 (%)",
    "macs_per_image": "MMACs/image",
    "flops_per_image": "MFLOPs/image",
    "compute_%": "compute (% of dense)",
    "run_time_s": "run time (s)",
    "on_front": "on front",
}


def count_statuses(jobs: Sequence[JobResult]) -> Dict[str, int]:
    counts = {"total": len(jobs), "completed": 0, "failed": 0, "running": 0, "missing": 0}
    for job in jobs:
        key = job.status if job.status in counts else "failed"  # an unknown status is no result either
        counts[key] += 1
    counts["unfinished"] = counts["running"] + counts["missing"]
    return counts


def render_csv(columns: Sequence[str], rows: Sequence[Dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([_csv_cell(row[c]) for c in columns] for row in rows)
    return buffer.getvalue()


def render_markdown(
    jobs: Sequence[JobResult],
    columns: Sequence[str],
    rows: Sequence[Dict[str, Any]],
    folders: Sequence[str],
    metric: str,
    png_name: Optional[str] = "pareto.png",
) -> str:
    _, shared = split_overrides(jobs)
    counts = count_statuses(jobs)
    lines = [f"# Sweep report: {', '.join(f'`{f}`' for f in folders)}", ""]
    lines.append(
        f"**Jobs:** {counts['total']}: {counts['completed']} completed, {counts['failed']} failed, "
        f"{counts['unfinished']} unfinished ({counts['running']} running or killed, {counts['missing']} never started)"
    )
    lines.append("")
    shared_text = ", ".join(f"`{k}={v}`" if v != "(deleted)" else f"`~{k}`" for k, v in shared.items())
    lines += [f"**Shared overrides:** {shared_text or '(none)'}", ""]
    sweeps = sorted({j.sweep_dir for j in jobs if j.sweep_dir is not None}, key=lambda p: natural_key(str(p)))
    for sweep in sweeps:
        command = reproduce_command(sweep)
        if command:
            lines += [f"**Reproduce** (`{sweep.name}`):", "", "```bash", command, "```", ""]
    lines.append(
        f"FLOPs = 2·MACs per image. Accuracy and compute are the final epoch's; compute is MACs as a % of the "
        f"dense model's (gates included). `on front`: Pareto front of {metric} against compute over completed "
        "jobs. Numbers are given for completed jobs only."
    )
    lines.append("")
    shown = [c for c in columns if c != "error"]  # errors are listed below the table, where they fit
    lines.append("| " + " | ".join(MD_HEADERS.get(c, c) for c in shown) + " |")
    lines.append(
        "|"
        + "|".join("---:" if c.endswith(("_%", "_image", "_s")) or c in ("params", "epochs") else "---" for c in shown)
        + "|"
    )
    lines += ["| " + " | ".join(_md_cell(c, row[c]) for c in shown) + " |" for row in rows]
    errors = [(row["job"], row["error"]) for row in rows if row["error"]]
    if errors:
        lines += ["", "**Errors:**", ""] + [f"- `{job}`: {_md_cell('error', err)}" for job, err in errors]
    if png_name:
        lines += ["", f"![accuracy against FLOPs]({png_name})"]
    return "\n".join(lines) + "\n"


def make_figure(jobs: Sequence[JobResult], metric: str = "test/acc1", x: str = "flops", title: str = "") -> Figure:
    """The plot of the completed jobs, each labelled by its swept values (by its name in a single run)."""
    points = [
        PlotPoint(*coords, short_label(job.swept) or job.name, job.baseline)
        for job in jobs
        if (coords := plot_coordinates(job, metric, x)) is not None
    ]
    return plot_pareto(points, title, x, metric)


def _display(path: Path) -> str:
    """A folder as people typed it: relative to the working directory when it lies below it."""
    try:
        return path.relative_to(Path.cwd()).as_posix() or "."
    except ValueError:
        return path.as_posix()


def _distinct(values: Sequence[Optional[str]]) -> str:
    return ", ".join(dict.fromkeys(v for v in values if v)) or "?"


def write_report(
    dirs: Union[PathLike, Sequence[PathLike]],
    out_dir: Optional[PathLike] = None,
    x: str = "flops",
    metric: str = "test/acc1",
) -> Report:
    """Collects the jobs under ``dirs`` and writes results.csv, results.md and pareto.png (each atomically)
    into ``out_dir`` (default: the first folder). Raises :class:`ReportError` on a missing folder, no jobs,
    or a metric that no completed job recorded."""
    dirs = [dirs] if isinstance(dirs, (str, Path)) else list(dirs)
    if x not in ("flops", "macs"):
        raise ReportError(f"x must be 'flops' or 'macs', got {x!r}")
    jobs = collect_jobs(dirs)
    finals = [j for j in jobs if j.status == "completed" and j.metrics]
    if finals and all(j.value(metric) is None for j in finals):  # a typo would otherwise give an empty plot
        known = sorted({k for j in finals for k in j.metrics if "acc" in k})
        raise ReportError(f"no completed job recorded {metric!r}; recorded: {', '.join(known) or 'none'}")
    roots = [Path(d).expanduser().resolve() for d in dirs]
    out = Path(out_dir).expanduser().resolve() if out_dir is not None else roots[0]
    columns, rows = build_rows(jobs, metric, x)
    folders = [_display(r) for r in roots]
    title = (
        f"{' + '.join('/'.join(r.parts[-2:]) for r in roots)}: {_distinct([j.model for j in jobs])} "
        f"on {_distinct([j.dataset for j in jobs])}"
    )
    figure = make_figure(jobs, metric, x, title)
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=130)
    paths = out / "results.csv", out / "results.md", out / "pareto.png"
    texts = render_csv(columns, rows), render_markdown(jobs, columns, rows, folders, metric, paths[2].name)
    atomic_write(paths[0], lambda file: file.write(texts[0].encode()))
    atomic_write(paths[1], lambda file: file.write(texts[1].encode()))
    atomic_write(paths[2], lambda file: file.write(png.getvalue()))
    return Report(out, *paths, columns=columns, rows=rows, jobs=jobs, counts=count_statuses(jobs), figure=figure)
