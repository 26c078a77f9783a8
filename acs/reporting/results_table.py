"""A report's ``results.csv`` read back as jobs, so that its figure can be drawn again where the run
folders are gone: a committed study keeps its table, not its runs, and the plot code moves on."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Dict, List, Optional

from acs.files import atomic_write
from acs.reporting.jobs import FIXED_COLUMNS, JobResult, PathLike, ReportError
from acs.reporting.sweep_report import make_figure

# Every column build_rows writes after the overrides; whatever else stands between `job` and these is an override.
RESULT_COLUMNS = (
    *FIXED_COLUMNS,
    *"test_acc1_% test_acc5_% macs_per_image flops_per_image compute_% params run_time_s epochs".split(),
    *"status on_front baseline error".split(),
)
METRICS = {"test_acc1_%": "test/acc1", "test_acc5_%": "test/acc5"}


def _number(text: str) -> Optional[float]:
    return float(text) if text else None


def read_results(path: PathLike) -> List[JobResult]:
    """The jobs of a ``results.csv`` written by :func:`acs.reporting.write_report`: their overrides
    (blank cells: not set), model, gate, dataset, status and final test metrics. Raises
    :class:`ReportError` for a file that is missing or is not such a table."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ReportError(f"{path}: cannot read ({error.strerror or error})") from None
    table = list(csv.DictReader(io.StringIO(text)))
    columns = list(table[0]) if table else []
    missing = [c for c in ("job", *RESULT_COLUMNS) if c not in columns]
    if missing:
        raise ReportError(f"{path}: not a report's results.csv (no column {', '.join(missing)})")
    overrides = [c for c in columns if c != "job" and c not in RESULT_COLUMNS and not c.endswith("_%")]
    jobs = []
    for row in table:
        metrics: Dict[str, float] = {
            name: float(row[column]) for column, name in METRICS.items() if row[column]
        }
        if row["macs_per_image"]:
            metrics["test/macs"] = float(row["macs_per_image"])
        if row["compute_%"]:
            metrics["test/compute_ratio"] = float(row["compute_%"]) / 100.0
        epochs = _number(row["epochs"])
        jobs.append(
            JobResult(
                path=path.parent / row["job"], name=row["job"], status=row["status"],
                overrides={k: row[k] for k in overrides if row[k]},
                model=row["model"] or None, gate=row["gate"] or None, dataset=row["dataset"] or None,
                metrics=metrics, params=int(row["params"]) if row["params"] else None,
                run_time_s=_number(row["run_time_s"]), epochs_completed=None if epochs is None else int(epochs),
                error=row["error"] or None,
            )
        )  # fmt: skip
    if not jobs:
        raise ReportError(f"{path}: the table holds no jobs")
    return jobs


def replot(path: PathLike, out_dir: Optional[PathLike] = None, x: str = "flops", metric: str = "test/acc1") -> Path:
    """Draws ``pareto.png`` again from a ``results.csv`` (into ``out_dir``, by default beside it) and
    returns its path; the figure is the one :func:`acs.reporting.write_report` draws from run folders."""
    if metric not in METRICS.values():
        raise ReportError(f"a results.csv holds {', '.join(METRICS.values())}, not {metric!r}")
    path = Path(path).expanduser().resolve()
    jobs = read_results(path)
    models = ", ".join(dict.fromkeys(j.model for j in jobs if j.model)) or "?"
    datasets = ", ".join(dict.fromkeys(j.dataset for j in jobs if j.dataset)) or "?"
    title = f"{'/'.join(path.parent.parts[-2:])}: {models} on {datasets}"
    png = io.BytesIO()
    make_figure(jobs, metric, x, title).savefig(png, format="png", dpi=130)
    out = (Path(out_dir).expanduser().resolve() if out_dir is not None else path.parent) / "pareto.png"
    atomic_write(out, lambda file: file.write(png.getvalue()))
    return out
