"""One W&B run per sweep, in the sweep's group: a table of every job, accuracy against FLOPs as a
W&B scatter plot, and the Pareto image."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from acs.reporting.run_logger import create_logger


def log_sweep_summary(
    rows: Sequence[Mapping[str, Any]],
    pareto_png: Path,
    sweep_dir: Path,
    options: Mapping[str, Any],
    group: str,
    x: str = "flops_per_image",
    y: str = "test_acc1_%",
) -> None:
    """Logs ``rows`` (the report's table) as one ``sweep-summary`` run; W&B files land in
    ``sweep_dir/wandb``. A W&B failure is a warning, as for training runs."""
    columns = list(rows[0]) if rows else []
    data = [[_plain(row.get(c)) for c in columns] for row in rows]
    completed = [r for r in data if r[columns.index(x)] is not None and r[columns.index(y)] is not None]
    with create_logger(
        "wandb", options, sweep_dir, {"sweep": group, "jobs": len(rows)}, group=group,
        run_name=f"sweep {group}", job_type="sweep-summary",
    ) as logger:

        def charts(wandb) -> Mapping[str, Any]:
            table = wandb.Table(columns=columns, data=data)
            points = wandb.Table(columns=columns, data=completed)
            logged = {"jobs": table, "accuracy_vs_flops": wandb.plot.scatter(points, x, y, title="Top-1 vs FLOPs")}
            if Path(pareto_png).is_file():
                logged["pareto"] = wandb.Image(str(pareto_png))
            return logged

        logger.log_rich(charts)


def _plain(value: Any) -> Any:
    """W&B tables take numbers and strings; everything else is shown as text."""
    return value if value is None or isinstance(value, (int, float, str, bool)) else str(value)
