"""Jobs that differ only in their seed, taken together: how far a configuration's accuracy and
compute move from seed to seed. Short gated runs can end far apart on seeds alone (a gate decision
near its threshold flips, and training takes another path), so one run per configuration is not a
comparison; this table says how much of a difference between configurations is seed noise."""

from __future__ import annotations

import statistics
from typing import Any, Dict, List, Optional, Sequence, Tuple

from acs.reporting.jobs import JobResult, split_overrides
from acs.reporting.pareto import short_label

SEED = "seed"


def spread(values: Sequence[float]) -> Dict[str, Optional[float]]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else None,
        "min": min(values),
        "max": max(values),
    }


def mean_std(values: Dict[str, Optional[float]], digits: int) -> str:
    """'98.33 ± 0.48' from a :func:`spread` ('98.33' for a single run)."""
    std = "" if values["std"] is None else f" ± {values['std']:.{digits}f}"
    return f"{values['mean']:.{digits}f}{std}"


def configurations(jobs: Sequence[JobResult], metric: str = "test/acc1") -> List[Tuple[str, List[JobResult]]]:
    """The completed jobs that recorded ``metric`` and their compute, grouped by configuration: the
    swept overrides other than ``seed`` (and the model and gate), each group with its short label."""
    swept, _ = split_overrides(jobs)
    keys = [k for k in swept if k != SEED]
    groups: Dict[tuple, List[JobResult]] = {}
    for job in jobs:
        if job.value(metric) is not None and job.compute_pct() is not None:
            groups.setdefault((job.model, job.gate, *(job.setting(k) for k in keys)), []).append(job)
    labelled = []
    for members in groups.values():
        first = members[0]
        own = {k: first.overrides[k] for k in keys if k in first.overrides}
        label = short_label(own) or "(the shared overrides only)"
        labelled.append((label, members))
    return labelled


def over_seeds(jobs: Sequence[JobResult], metric: str = "test/acc1") -> List[Dict[str, Any]]:
    """One row per configuration (see :func:`configurations`): the number of runs, their seeds, and
    the mean, sample standard deviation, minimum and maximum of ``metric`` and of compute (% of
    dense). Empty unless the jobs differ in ``seed``. A job that does not set ``seed`` ran with the
    config's seed (``default``)."""
    if SEED not in split_overrides(jobs)[0]:
        return []
    return [
        {
            "configuration": label,
            "runs": len(members),
            "seeds": ", ".join(j.overrides.get(SEED, "default") for j in members),
            metric: spread([j.value(metric) for j in members]),
            "compute_%": spread([j.compute_pct() for j in members]),
        }
        for label, members in configurations(jobs, metric)
    ]


def render_over_seeds(rows: Sequence[Dict[str, Any]], metric: str = "test/acc1") -> List[str]:
    """The markdown section of :func:`over_seeds` (no lines when there are no rows)."""
    if not rows:
        return []

    def cell(values: Dict[str, Optional[float]], digits: int) -> List[str]:
        return [mean_std(values, digits), f"{values['min']:.{digits}f}–{values['max']:.{digits}f}"]

    lines = [
        "",
        "## Over seeds",
        "",
        f"Jobs that differ only in `seed`, together: mean ± sample standard deviation and range of {metric} "
        "and of compute (% of dense).",
        "",
        f"| configuration | runs | seeds | {metric} mean ± std | {metric} range | compute mean ± std | compute range |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        cells = [row["configuration"], str(row["runs"]), row["seeds"]]
        cells += cell(row[metric], 2) + cell(row["compute_%"], 1)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return lines
