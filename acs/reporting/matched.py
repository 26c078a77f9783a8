"""Dynamic against static at matched compute: does input-dependent skipping beat a smaller static
network of the same MACs?

Static arms are the jobs without per-sample gates (``gate=none``: the ungated model, fixed groups,
thinner growth; and ``gate=static``, a learned but input-independent keep decision). Their *front*
is the upper envelope of their configurations' mean top-1 over mean MACs per image, joined
piecewise-linearly between its corners and flat after its best point up to the largest static
compute. A dynamic configuration's *gain* is its mean top-1 minus the front at its mean MACs; where
its compute lies outside the static arms' range there is no gain (no extrapolation).

Compute is absolute (MACs per image), not ``compute_ratio``: each model takes that ratio against its
own dense reference, so a fixed 2-group DenseNet-40 reports 100% of itself at about half the MACs.
"""
from __future__ import annotations

import bisect
import statistics
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from acs.reporting.jobs import JobResult, metric_split
from acs.reporting.pareto import envelope
from acs.reporting.seeds import configurations, mean_std, spread

STATIC_GATES = ("none", "static")


@dataclass
class Arm:
    """One configuration: its label, whether it is static, its runs and their means and spread."""

    label: str
    static: bool
    runs: int
    macs: float  # mean MACs per image
    top1: Dict[str, Optional[float]]  # the metric's spread over the runs (seeds.spread: mean, std, min, max)
    front: Optional[float] = None  # the static front at ``macs`` (dynamic arms inside its range)
    members: List[JobResult] = field(default_factory=list, repr=False)  # the runs, for what the plot needs of them

    @property
    def gain(self) -> Optional[float]:
        return None if self.front is None else self.top1["mean"] - self.front


def arms(jobs: Sequence[JobResult], metric: str = "test/acc1") -> List[Arm]:
    """Every configuration of the completed jobs (seeds together), static ones first, by compute."""
    found = []
    for label, members in configurations(jobs, metric):
        found.append(
            Arm(
                label,
                all(j.gate in STATIC_GATES for j in members),
                len(members),
                statistics.fmean(j.macs(metric_split(metric)) for j in members),
                spread([j.value(metric) for j in members]),
                members=members,
            )
        )
    return sorted(found, key=lambda arm: (not arm.static, arm.macs))


def static_front(static: Sequence[Arm]) -> List[Tuple[float, float]]:
    """The corners (MACs, top-1) of the static arms' upper envelope, by compute."""
    return envelope([(arm.macs, arm.top1["mean"]) for arm in static])


def front_at(corners: Sequence[Tuple[float, float]], macs: float, largest: float) -> Optional[float]:
    """The front's top-1 at ``macs``: linear between corners, flat from the best one up to ``largest``
    (the largest static compute), None outside the static range."""
    if not corners or macs < corners[0][0] or macs > largest:
        return None
    if macs >= corners[-1][0]:
        return corners[-1][1]
    i = bisect.bisect_right([m for m, _ in corners], macs)
    (m0, a0), (m1, a1) = corners[i - 1], corners[i]
    return a0 + (a1 - a0) * (macs - m0) / (m1 - m0)


def matched_compute(jobs: Sequence[JobResult], metric: str = "test/acc1") -> List[Arm]:
    """All arms, each dynamic one with the static front at its compute; empty unless the jobs hold
    both static and dynamic configurations."""
    found = arms(jobs, metric)
    static = [arm for arm in found if arm.static]
    if not static or len(static) == len(found):
        return []
    corners, largest = static_front(static), max(arm.macs for arm in static)
    for arm in found:
        if not arm.static:
            arm.front = front_at(corners, arm.macs, largest)
    return found


def render_matched(found: Sequence[Arm], models: Sequence[str], metric: str = "test/acc1") -> List[str]:
    """The markdown section "At matched compute" (no lines without static and dynamic arms)."""
    if not found:
        return []
    lines = [
        "",
        "## At matched compute",
        "",
        f"Static arms (`gate=none`, `gate=static`) form the front: the upper envelope of their mean {metric} "
        "over MACs per image, linear between its corners. A dynamic configuration's gain is its mean "
        f"{metric} minus the front at its mean MACs per image; outside the static arms' compute range there "
        "is no front to compare with. Means and standard deviations are over the runs (seeds) of a configuration.",
    ]
    if len(models) > 1:
        lines += [
            "",
            f"This comparison mixes models ({', '.join(models)}): compute is absolute MACs per image, not "
            "the compute ratio, which each model takes against its own dense reference.",
        ]
    lines += [
        "",
        f"| configuration | kind | runs | MMACs/image | {metric} mean ± std | static front there | gain |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for arm in found:
        if arm.static:
            front, gain = "", ""
        elif arm.front is None:
            front, gain = "outside the front", ""
        else:
            front, gain = f"{arm.front:.2f}", f"{arm.gain:+.2f}"
        cells = [arm.label, "static" if arm.static else "dynamic", str(arm.runs), f"{arm.macs / 1e6:,.2f}"]
        cells += [mean_std(arm.top1, 2), front, gain]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return lines
