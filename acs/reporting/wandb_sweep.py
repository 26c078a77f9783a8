"""One W&B run per sweep, in the sweep's group: a table of every job, the report's accuracy-vs-compute
figure (pareto.png: one colour per arm, seeds as mean ± std, the fronts) and the gated jobs' final
keep rate per layer (keep_profiles.png)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from acs.reporting.keep_rates import KEEP_PROFILES_PNG
from acs.reporting.run_logger import create_logger


def log_sweep_summary(
    rows: Sequence[Mapping[str, Any]],
    pareto_png: Path,
    sweep_dir: Path,
    options: Mapping[str, Any],
    group: str,
) -> None:
    """Logs ``rows`` (the report's table) and ``pareto_png`` as one ``sweep-summary`` run; W&B files land
    in ``sweep_dir/wandb``. A W&B failure is a warning, as for training runs.

    The figure is logged as the image the report wrote, not rebuilt from W&B charts: W&B's scatter has
    one colour for all points, which at 30 jobs says nothing about arms, seeds or fronts.
    """
    columns = list(rows[0]) if rows else []
    data = [[_plain(row.get(c)) for c in columns] for row in rows]
    with create_logger(
        "wandb", options, sweep_dir, {"sweep": group, "jobs": len(rows)}, group=group,
        run_name=f"sweep {group}", job_type="sweep-summary",
    ) as logger:

        def charts(wandb) -> Mapping[str, Any]:
            logged = {"jobs": wandb.Table(columns=columns, data=data)}
            if Path(pareto_png).is_file():
                logged["pareto"] = wandb.Image(str(pareto_png))
            if (Path(sweep_dir) / KEEP_PROFILES_PNG).is_file():
                logged["keep_profiles"] = wandb.Image(str(Path(sweep_dir) / KEEP_PROFILES_PNG))
            return logged

        logger.log_rich(charts)


def _plain(value: Any) -> Any:
    """W&B tables take numbers and strings; everything else is shown as text."""
    return value if value is None or isinstance(value, (int, float, str, bool)) else str(value)
