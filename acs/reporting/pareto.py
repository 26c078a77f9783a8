"""The accuracy-vs-compute Pareto front of a sweep, and its plot.

The plot shows one point per configuration (its seeds' mean, ± one standard deviation in both
directions), one colour and marker per *arm*, the static front and each dynamic arm's own front.
An arm is a design: what tells jobs apart other than their numeric knobs and their seed (the
model, the gate, the non-numeric options such as ``gate.conv`` or ``init_from``, and which options
of the model itself are set: a thinner ``model.growth_rate`` is another network, not a setting).
Within an arm, a point is labelled by the knobs that vary there (``β=3, min=30``).
"""

from __future__ import annotations

import math
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, NamedTuple, Sequence, Set, Tuple

from acs.reporting.jobs import JobResult, metric_split, split_overrides

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

ABBREVIATIONS = {"minimum": "min"}  # keeps labels like 'beta=0.3, min=50' short
PLOT_ABBREVIATIONS = {**ABBREVIATIONS, "beta": "β"}  # on the plot every character competes for room
MARKERS = "osD^vPX<>ph"  # 11 markers against 10 colours: (colour, marker) pairs repeat only after 110 arms
MARKER_SIZE = 7.0  # points
STATIC_FRONT = dict(color="black", linestyle="--", linewidth=1.4)
# A half-opaque white box keeps a label legible where a front line or an error bar crosses it.
LABEL_BOX = dict(boxstyle="square,pad=0.1", facecolor="white", edgecolor="none", alpha=0.7)
# Label positions tried in turn (offset in points, alignment): beside the marker, clear of its error bars' caps.
PLACES = [(6, 4, "left", "bottom"), (6, -4, "left", "top"), (-6, 4, "right", "bottom"), (-6, -4, "right", "top")]


class PlotPoint(NamedTuple):
    """One configuration on the plot: the mean over its runs of compute (``x``, MACs or FLOPs per
    image) and accuracy (``y``, %), their standard deviations (0 for one run), its arm, whether that
    arm is static, and its label within the arm."""

    x: float
    y: float
    arm: str
    label: str = ""
    static: bool = False
    x_std: float = 0.0
    y_std: float = 0.0


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


def envelope(points: Sequence[Tuple[float, float]]) -> List[Tuple[float, float]]:
    """The corners ``(cost, accuracy)`` of the points' upper envelope (their Pareto front), by cost."""
    return sorted(p for p, on in zip(points, pareto_front(points)) if on)


def short_label(values: Mapping[str, str], abbreviations: Mapping[str, str] = ABBREVIATIONS) -> str:
    """'beta=0.3, min=50': values under the last component of their keys (the last two where that clashes);
    a warm start by the run it starts from, not its checkpoint's path."""
    lasts = [key.rsplit(".", 1)[-1] for key in values]
    parts = []
    for (key, value), last in zip(values.items(), lasts):
        if key == "init_from" and value != "null":
            parts.append(_warm_start(value))
            continue
        short = ".".join(key.split(".")[-2:]) if lasts.count(last) > 1 else abbreviations.get(last, last)
        parts.append(f"{short}={value}")
    return ", ".join(parts)


def axis_labels(x: str = "flops", metric: str = "test/acc1") -> Tuple[str, str]:
    split, _, name = metric.rpartition("/")
    pretty = {"acc1": "top-1 accuracy (%)", "acc5": "top-5 accuracy (%)"}.get(name, name)
    unit = "FLOPs" if x == "flops" else "MACs"
    return f"{unit} per image (millions; FLOPs = 2·MACs)", f"{split} {pretty}".strip()


# ------------------------------------------------------------------------------------------- the arms


def _numeric(value: Any) -> bool:
    """Whether an override's value (as :meth:`JobResult.setting` reads it) is a number; YAML reads
    '1e-3' as text, so text that parses as a float counts too."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return False
        return True
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _warm_start(path: str) -> str:
    """'warm-started from backbone' for init_from=outputs/backbone/checkpoints/best.pt: the run, not the file."""
    path = path.replace("\\{", "{").replace("\\}", "}")  # a sweep's job overrides escape interpolations
    checkpoint = PurePosixPath(path)
    run = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    while "${" in run.name:  # a run per seed (ungated/${seed}): the folder that holds them names it
        run = run.parent
    return f"warm-started from {run.name or path}"


def arm_points(jobs: Sequence[JobResult], metric: str = "test/acc1", x: str = "flops") -> List[PlotPoint]:
    """One point per configuration of the completed jobs (seeds together), static arms first."""
    # Imported here: matched.py and seeds.py build on this module's front and labels.
    from acs.reporting.matched import arms
    from acs.reporting.seeds import SEED, spread

    configs = arms(jobs, metric)
    runs = [job for config in configs for job in config.members]
    keys = [k for k in split_overrides(runs)[0] if k not in (SEED, "model", "gate")]  # job.model, job.gate say those
    knobs = {k for k in keys if all(_numeric(j.setting(k)) for j in runs if k in j.overrides)}

    def design(job: JobResult) -> tuple:
        model_knobs = [k in job.overrides for k in keys if k in knobs and k.startswith("model.")]
        return (job.model, job.gate, *(job.setting(k) for k in keys if k not in knobs), *model_knobs)

    by_arm: Dict[tuple, List[Any]] = {}
    for config in configs:
        by_arm.setdefault(design(config.members[0]), []).append(config)
    scale, split = (2.0 if x == "flops" else 1.0), metric_split(metric)
    points = []
    for group in by_arm.values():
        arm, varying = _arm_name([config.members[0] for config in group], keys, knobs, runs)
        for config in group:
            # Only the values set: an ablation's label names what it changed, not every knob it kept.
            overrides = config.members[0].overrides
            values = {k: overrides[k] for k in varying if k in overrides}
            compute = spread([j.macs(split) for j in config.members])
            label = short_label(values, PLOT_ABBREVIATIONS) if values or not varying else "defaults"
            points.append(
                PlotPoint(
                    scale * compute["mean"], config.top1["mean"], arm, label,
                    config.static, scale * (compute["std"] or 0.0), config.top1["std"] or 0.0,
                )
            )  # fmt: skip
    return points


def _arm_name(
    configs: Sequence[JobResult], keys: Sequence[str], knobs: Set[str], runs: Sequence[JobResult]
) -> Tuple[str, List[str]]:
    """(the arm's name, the knobs that vary within it) for one job of each of its configurations.

    The name holds the model when the study has several, the gate, the non-numeric options that tell
    this arm from the others of its model and gate, and the knobs it holds at one value; a model
    option that varies shows as 'growth_rate=…', its values being on the points."""
    first = configs[0]
    siblings = [j for j in runs if (j.model, j.gate) == (first.model, first.gate)]
    name = [str(first.model)] if len({j.model for j in runs}) > 1 else []
    name.append("ungated" if first.gate == "none" else str(first.gate))
    parts: Dict[str, str] = {}
    varying = []
    for k in keys:
        if k in knobs and len({job.setting(k) for job in configs}) > 1:
            varying.append(k)
            if k.startswith("model."):
                parts[k] = "…"
        elif k in first.overrides and (k in knobs or len({j.setting(k) for j in siblings}) > 1):
            if k == "init_from" and first.overrides[k] != "null":
                name.append(_warm_start(first.overrides[k]))
            else:
                parts[k] = first.overrides[k]
    return ", ".join(name + ([short_label(parts, PLOT_ABBREVIATIONS)] if parts else [])), varying


# ------------------------------------------------------------------------------------------- the plot


def plot_pareto(
    points: Sequence[PlotPoint],
    title: str,
    x: str = "flops",
    metric: str = "test/acc1",
    models: Sequence[str] = (),
) -> Figure:
    """The configurations as mean ± std points, one colour and marker per arm (in order of first
    appearance), the static front as a dashed black line and each dynamic arm's front in its colour;
    labels only where they collide with nothing. ``x`` names the points' unit (flops or macs),
    ``metric`` their accuracy, ``models`` the models of the study (several: the title says so).

    Built on a bare Agg Figure rather than pyplot: the end-of-sweep callback runs inside the user's
    process, where switching pyplot's backend or leaving figures registered would be a side effect.
    """
    # Imported here: matplotlib takes ~0.6 s to load, and training runs import acs.reporting for their loggers.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(10, 7), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    scale = 1e-6  # the axis is in millions
    handles, colours, on_front = [], {}, set()
    for i, arm in enumerate(dict.fromkeys(p.arm for p in points)):
        mine = [p for p in points if p.arm == arm]
        colours[arm] = f"C{i % 10}"
        bars = ax.errorbar(
            [p.x * scale for p in mine], [p.y for p in mine],
            xerr=[p.x_std * scale for p in mine], yerr=[p.y_std for p in mine],
            fmt=MARKERS[i % len(MARKERS)], color=colours[arm], markersize=MARKER_SIZE, markeredgecolor="black",
            markeredgewidth=0.5, elinewidth=1, capsize=2, label=arm, zorder=3,
        )  # fmt: skip
        for part in (*bars[1], *bars[2]):  # faint bars: where they cross, the means stay readable
            part.set_alpha(0.5)
        handles.append(bars)
        if not mine[0].static:
            corners = envelope([(p.x, p.y) for p in mine])
            on_front.update(corners)
            if len(corners) > 1:
                ax.plot(*_scaled(corners, scale), color=colours[arm], linewidth=1.2, gid=f"front {arm}", zorder=2)
    static = [(p.x, p.y) for p in points if p.static]
    if static:
        # As matched.py reads it: linear between the corners, flat from the best one to the largest static compute.
        corners = envelope(static)
        on_front.update(corners)
        largest = max(c for c, _ in static)
        line = corners + ([(largest, corners[-1][1])] if largest > corners[-1][0] else [])
        if len(line) > 1:  # a single static point is all there is of its front
            handles += ax.plot(*_scaled(line, scale), label="static front", zorder=2, **STATIC_FRONT)
    if any(drawn.get_gid() for drawn in ax.lines):
        handles.append(Line2D([], [], color="grey", linewidth=1.2, label="a dynamic arm's own front"))
    ax.margins(x=0.08, y=0.1)
    if "acc" in metric:  # a ± std bar may pass 100%; the axis stops where accuracy does
        ax.set_ylim(top=min(ax.get_ylim()[1], 100.5))
    xlabel, ylabel = axis_labels(x, metric)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if len(models) > 1:  # each model's compute ratio is to its own dense model: only absolute compute compares
        title += f"\nmixes models ({', '.join(models)}): compute is absolute, not the compute ratio"
    fig.suptitle(title, fontsize=10)  # over the whole figure: a long title stays clear of the legend
    ax.grid(True, alpha=0.3)
    if not points:
        ax.text(0.5, 0.5, "no completed job to plot", ha="center", va="center", transform=ax.transAxes)
        return fig
    # Below the axes, in columns: as wide as the figure, it leaves the axes their width and the title its room.
    # Long arm names (a warm start's checkpoint, several options) get fewer columns, so none runs off the figure.
    longest = max(len(h.get_label()) for h in handles)
    columns = 3 if longest <= 45 else 2 if longest <= 75 else 1
    fig.legend(handles=handles, loc="outside lower center", ncols=min(columns, len(handles)), fontsize=8,
               title="arm: mean ± std over seeds", title_fontsize=8)  # fmt: skip
    # Front points are labelled first: they are the ones a reader looks up.
    order = sorted(points, key=lambda p: (p.x, p.y) not in on_front)
    _place_labels(fig, ax, [p for p in order if p.label], points, colours, scale)
    return fig


def _scaled(corners: Sequence[Tuple[float, float]], scale: float) -> Tuple[List[float], List[float]]:
    return [c * scale for c, _ in corners], [a for _, a in corners]


def _place_labels(
    fig: Figure, ax: Axes, labelled: Sequence[PlotPoint], points: Sequence[PlotPoint], colours: Dict[str, str],
    scale: float,
) -> None:  # fmt: skip
    """Writes each label in the first of :data:`PLACES` where it stays inside the axes and overlaps
    no marker and no label written before it; a label that fits nowhere is dropped."""
    from matplotlib.transforms import Bbox

    fig.draw_without_rendering()  # runs the layout: from here display coordinates are final ...
    fig.set_layout_engine("none")  # ... and stay so when the figure is saved
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    radius = MARKER_SIZE / 2 * fig.dpi / 72
    taken = [
        Bbox.from_extents(cx - radius, cy - radius, cx + radius, cy + radius)
        for cx, cy in ax.transData.transform([(p.x * scale, p.y) for p in points])
    ]
    for point in labelled:
        text = ax.annotate(
            point.label, (point.x * scale, point.y), xytext=PLACES[0][:2], textcoords="offset points", fontsize=7,
            color=colours[point.arm], bbox=LABEL_BOX, zorder=4,
        )  # fmt: skip
        for dx, dy, ha, va in PLACES:
            text.set_position((dx, dy))
            text.set_horizontalalignment(ha)
            text.set_verticalalignment(va)
            box = text.get_window_extent(renderer)
            inside = frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)
            if inside and not any(box.overlaps(other) for other in taken):
                taken.append(box)
                break
        else:
            text.remove()
