"""Sweep report: the jobs of Hydra run or sweep folders as one table (``results.csv``, ``results.md``)
and one accuracy-vs-FLOPs plot with its Pareto front (``pareto.png``).

Used by ``python -m acs.report`` and by the end-of-sweep callback; the jobs come from
:mod:`acs.reporting.jobs`.
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Union

from acs.files import atomic_write
from acs.reporting.jobs import (
    FIXED_COLUMNS,
    JobResult,
    PathLike,
    ReportError,
    collect_jobs,
    metric_split,
    natural_key,
    reproduce_command,
    split_overrides,
)
from acs.reporting.keep_rates import write_keep_profiles
from acs.reporting.matched import Arm, matched_compute, render_matched
from acs.reporting.pareto import arm_points, pareto_front, plot_pareto
from acs.reporting.seeds import over_seeds, render_over_seeds

if TYPE_CHECKING:
    from matplotlib.figure import Figure


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
    seed_rows: List[Dict[str, Any]] = field(default_factory=list)  # see acs.reporting.seeds.over_seeds
    matched: List[Arm] = field(default_factory=list)  # see acs.reporting.matched.matched_compute
    keep_png: Optional[Path] = None  # keep_profiles.png: the gated jobs' final keep rate per layer (none: no such job)

    @property
    def paths(self) -> List[Path]:
        return [self.csv_path, self.md_path, self.png_path] + ([self.keep_png] if self.keep_png else [])

    @property
    def data(self) -> List[List[Any]]:
        return [[row[c] for c in self.columns] for row in self.rows]


# ------------------------------------------------------------------------------------------- the table


def metric_column(metric: str) -> str:
    name = metric.replace("/", "_")
    return name + "_%" if metric.rsplit("/", 1)[-1].startswith("acc") else name


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
    y, macs = job.value(metric), job.macs(metric_split(metric))
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
    seed_rows: Sequence[Dict[str, Any]] = (),
    matched: Sequence[Arm] = (),
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
    lines += render_matched(matched, sorted({j.model for j in jobs if j.model}), metric)
    lines += render_over_seeds(seed_rows, metric)
    return "\n".join(lines) + "\n"


def make_figure(jobs: Sequence[JobResult], metric: str = "test/acc1", x: str = "flops", title: str = "") -> Figure:
    """The plot of the completed jobs: one point per configuration, one colour per arm (:func:`arm_points`)."""
    return plot_pareto(arm_points(jobs, metric, x), title, x, metric, sorted({j.model for j in jobs if j.model}))


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
    names = " + ".join("/".join(r.parts[-2:]) for r in roots)
    if len(names) > 70:  # many folders: the title names their common parent and stays on the figure
        names = f"{len(roots)} folders under {_display(Path(os.path.commonpath(roots)))}"
    title = f"{names}: {_distinct([j.model for j in jobs])} on {_distinct([j.dataset for j in jobs])}"
    figure = make_figure(jobs, metric, x, title)
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=130)
    paths = out / "results.csv", out / "results.md", out / "pareto.png"
    seed_rows, matched = over_seeds(jobs, metric), matched_compute(jobs, metric)
    markdown = render_markdown(jobs, columns, rows, folders, metric, paths[2].name, seed_rows, matched)
    keep_png = write_keep_profiles(jobs, out, title)
    if keep_png is not None:
        markdown += f"\n![final keep rate per gated layer of each gated job]({keep_png.name})\n"
    texts = render_csv(columns, rows), markdown
    atomic_write(paths[0], lambda file: file.write(texts[0].encode()))
    atomic_write(paths[1], lambda file: file.write(texts[1].encode()))
    atomic_write(paths[2], lambda file: file.write(png.getvalue()))
    counts = count_statuses(jobs)
    return Report(
        out, *paths, columns=columns, rows=rows, jobs=jobs, counts=counts, figure=figure, seed_rows=seed_rows,
        matched=matched, keep_png=keep_png,
    )  # fmt: skip
