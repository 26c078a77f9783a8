"""The accuracy-vs-compute Pareto front of a sweep, and its plot."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Dict, List, Mapping, NamedTuple, Sequence, Tuple

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ABBREVIATIONS = {"minimum": "min"}  # keeps labels like 'beta=0.3, min=50' short


class PlotPoint(NamedTuple):
    """One completed job on the plot: ``x`` in raw units (MACs or FLOPs per image), ``y`` in %."""

    x: float
    y: float
    label: str
    baseline: bool = False


def pareto_front(points: Sequence[Tuple[float, float]]) -> List[bool]:
    """For points ``(cost, accuracy)``, whether each is on the front (minimise cost, maximise accuracy).

    A point is dominated when another has cost <= and accuracy >= with at least one strict, so exact
    duplicates keep each other on the front. Points with a non-finite coordinate are never on it and
    dominate nothing. Sorting makes it O(n log n): a point survives when it is the most accurate of
    its cost and strictly more accurate than everything cheaper.
    """
    finite = [i for i, (c, a) in enumerate(points) if math.isfinite(c) and math.isfinite(a)]
    finite.sort(key=lambda i: (points[i][0], -points[i][1]))
    on_front = [False] * len(points)
    best_cheaper = -math.inf  # best accuracy among strictly cheaper points
    start = 0
    while start < len(finite):
        cost = points[finite[start]][0]
        end = start
        while end < len(finite) and points[finite[end]][0] == cost:
            end += 1
        top = points[finite[start]][1]  # the group is sorted by accuracy, descending
        if top > best_cheaper:
            for i in finite[start:end]:
                on_front[i] = points[i][1] == top
            best_cheaper = top
        start = end
    return on_front


def short_label(values: Mapping[str, str]) -> str:
    """'beta=0.3, min=50': values under the last component of their keys (the last two where that clashes)."""
    lasts = [key.rsplit(".", 1)[-1] for key in values]
    parts = []
    for (key, value), last in zip(values.items(), lasts):
        short = ".".join(key.split(".")[-2:]) if lasts.count(last) > 1 else ABBREVIATIONS.get(last, last)
        parts.append(f"{short}={value}")
    return ", ".join(parts)


def axis_labels(x: str = "flops", metric: str = "test/acc1") -> Tuple[str, str]:
    split, _, name = metric.rpartition("/")
    pretty = {"acc1": "top-1 accuracy (%)", "acc5": "top-5 accuracy (%)"}.get(name, name)
    unit = "FLOPs" if x == "flops" else "MACs"
    return f"{unit} per image (millions; FLOPs = 2·MACs)", f"{split} {pretty}".strip()


def plot_pareto(points: Sequence[PlotPoint], title: str, x: str = "flops", metric: str = "test/acc1") -> Figure:
    """Every point labelled, the front as a step line, the ungated baseline as a star; ``x`` names the
    points' unit (flops or macs), ``metric`` their accuracy.

    Built on a bare Agg Figure rather than pyplot: the end-of-sweep callback runs inside the user's
    process, where switching pyplot's backend or leaving figures registered would be a side effect.
    """
    # Imported here: matplotlib takes ~0.6 s to load, and training runs import acs.reporting for their loggers.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    front = pareto_front([(p.x, p.y) for p in points])
    scale = 1e-6  # the axis is in millions
    ordinary = [p for p in points if not p.baseline]
    baselines = [p for p in points if p.baseline]
    if ordinary:
        ax.scatter(
            [p.x * scale for p in ordinary], [p.y for p in ordinary], s=28, color="C0", label="gated job", zorder=3
        )
    if baselines:
        ax.scatter(
            [p.x * scale for p in baselines],
            [p.y for p in baselines],
            s=220,
            marker="*",
            color="C3",
            edgecolor="black",
            linewidth=0.6,
            label="ungated baseline",
            zorder=4,
        )
    front_points = sorted((p.x * scale, p.y) for p, keep in zip(points, front) if keep)
    if front_points:
        xs, ys = zip(*front_points)
        # 'post': at any budget, the best reachable accuracy is the one of the dearest front point within it.
        ax.step(xs, ys, where="post", color="C1", linewidth=1.5, label="Pareto front", zorder=2)
        ax.scatter(xs, ys, s=70, facecolor="none", edgecolor="C1", linewidth=1.5, zorder=5)
    # Jobs at the same point (seeds, or ungated jobs whatever their beta) share one stacked label. Front
    # points sit above and left of the rest: their labels go above, the others' below, so that the two
    # rarely collide; near the edges a label is aligned inwards so that it stays inside the axes.
    stacks: Dict[Tuple[float, float], List[str]] = {}
    stack_on_front: Dict[Tuple[float, float], bool] = {}  # duplicates are on the front together or not at all
    for p, keep in zip(points, front):
        if p.label:
            stacks.setdefault((p.x, p.y), []).append(p.label)
            stack_on_front[p.x, p.y] = keep
    low, high = min((p.x for p in points), default=0.0), max((p.x for p in points), default=0.0)
    for (px, py), labels in stacks.items():
        keep = stack_on_front[px, py]
        where = (px - low) / (high - low) if high > low else 0.5
        align = "left" if where < 0.25 else "right" if where > 0.75 else "center"
        ax.annotate(
            "\n".join(labels),
            (px * scale, py),
            xytext=(0, 7 if keep else -8),
            textcoords="offset points",
            ha=align,
            va="bottom" if keep else "top",
            fontsize=7,
        )
    ax.margins(x=0.08, y=0.12)
    if not points:
        ax.text(0.5, 0.5, "no completed job to plot", ha="center", va="center", transform=ax.transAxes)
    xlabel, ylabel = axis_labels(x, metric)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    if points:
        ax.legend(loc="best", fontsize=8)
    return fig
