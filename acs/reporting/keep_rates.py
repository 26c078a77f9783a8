"""The keep rate of each gated layer, seen: a run's layers × epochs heatmap (``keep_rates.png`` in its
folder, from ``metrics.jsonl``) and the final per-layer profile of every job of a report in one figure
(``keep_profiles.png``). Ungated runs record no per-layer keep rates and get neither.

Figures are bare Agg Figures, as in :mod:`acs.reporting.pareto`, and written atomically.
"""

from __future__ import annotations

import io
import logging
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple

from acs.files import atomic_write, read_jsonl
from acs.messages import one_line

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from acs.reporting.jobs import JobResult

log = logging.getLogger(__name__)

KEEP_RATES_PNG = "keep_rates.png"
KEEP_PROFILES_PNG = "keep_profiles.png"
SPLIT = "test"  # the split compute is reported on
MOST_LINES = 12  # more jobs than this: one heatmap row per job, since lines would be a tangle
_LAYER = re.compile(r"^L(\d+)$")


def layer_rates(record: Mapping[str, Any], split: str = SPLIT) -> Dict[str, float]:
    """``{"L00": rate, ...}`` from one metrics record (``split/keep/L00`` ...), in layer order."""
    prefix = f"{split}/keep/"
    found = {k[len(prefix) :]: float(v) for k, v in record.items() if k.startswith(prefix) and v is not None}
    return dict(sorted((k, v) for k, v in found.items() if _LAYER.match(k)))


def keep_history(
    records: Sequence[Mapping[str, Any]], split: str = SPLIT
) -> Tuple[List[int], List[str], List[List[float]]]:
    """(epochs, layers, rates) of the epochs that recorded per-layer keep rates; ``rates[layer][i]``
    is the layer's keep rate at ``epochs[i]`` (NaN where that epoch lacks it)."""
    rows = [(int(r["epoch"]), layer_rates(r, split)) for r in records if "epoch" in r]
    rows = [(epoch, rates) for epoch, rates in rows if rates]
    layers = sorted({layer for _, rates in rows for layer in rates}, key=lambda name: int(name[1:]))
    return [e for e, _ in rows], layers, [[rates.get(layer, math.nan) for _, rates in rows] for layer in layers]


def _figure(width: float, height: float) -> "Figure":
    # Imported here: matplotlib takes ~0.6 s to load, and training runs import acs.reporting.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _label_every(ax: "Axes", names: Sequence[str], most: int = 40) -> None:
    """Y tick labels for ``names`` (rows 0..n-1), every k-th one where all would not be readable."""
    step = max(1, math.ceil(len(names) / most))
    ax.set_yticks(range(0, len(names), step), [names[i] for i in range(0, len(names), step)], fontsize=7)


def _heatmap(fig: "Figure", ax: "Axes", rates: Sequence[Sequence[float]], extent: Optional[tuple] = None) -> None:
    image = ax.imshow(rates, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0.0, vmax=1.0, extent=extent)
    fig.colorbar(image, ax=ax, label="keep rate (fraction of channels kept)", pad=0.01)


def plot_keep_rates(records: Sequence[Mapping[str, Any]], title: str = "", split: str = SPLIT) -> Optional["Figure"]:
    """The heatmap of a run's keep rates, layers (input side at the top) × epochs; None when the run
    recorded none (an ungated model)."""
    epochs, layers, rates = keep_history(records, split)
    if not layers:
        return None
    fig = _figure(min(14.0, 6.0 + 0.05 * len(epochs)), min(12.0, 2.2 + 0.17 * len(layers)))
    ax = fig.add_subplot()
    # Epochs as cell centres: a run of 2 epochs shows two columns labelled 1 and 2.
    _heatmap(fig, ax, rates, extent=(epochs[0] - 0.5, epochs[-1] + 0.5, len(layers) - 0.5, -0.5))
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(nbins=12, integer=True))
    _label_every(ax, layers)
    ax.set_xlabel("epoch")
    ax.set_ylabel("gated layer (input side at the top)")
    fig.suptitle(f"{title}: {split} keep rate per gated layer" if title else f"{split} keep rate per gated layer",
                 fontsize=10)  # fmt: skip
    return fig


def _write_png(fig: "Figure", path: Path) -> Path:
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110)
    atomic_write(path, lambda file: file.write(png.getvalue()))
    return path


def write_keep_rates(run_dir: Path, name: str = "") -> Optional[Path]:
    """``run_dir/keep_rates.png`` from ``run_dir/metrics.jsonl``, titled by the folder and the job's
    ``name``; None (and no file) for a run that recorded no per-layer keep rates."""
    run_dir = Path(run_dir)
    title = "/".join(run_dir.parts[-3:]) + (f" ({name})" if name else "")
    try:
        fig = plot_keep_rates(read_jsonl(run_dir / "metrics.jsonl"), title)
        return None if fig is None else _write_png(fig, run_dir / KEEP_RATES_PNG)
    except Exception as error:  # noqa: BLE001 - a figure must never turn a finished run into a failed one
        log.warning("%s not written (%s)", run_dir / KEEP_RATES_PNG, one_line(error))
        return None


def keep_profiles(jobs: Sequence["JobResult"], split: str = SPLIT) -> List[Tuple[str, Dict[str, float]]]:
    """(label, final per-layer keep rates) of each completed job that recorded them: the job's folder
    and its swept values (``3: beta=0.3, min=50``)."""
    from acs.reporting.pareto import short_label

    profiles = []
    for job in jobs:
        rates = layer_rates(job.metrics, split) if job.status == "completed" else {}
        if rates:
            swept = short_label(job.swept)
            profiles.append((f"{job.name}: {swept}" if swept else job.name, rates))
    return profiles


def plot_keep_profiles(
    profiles: Sequence[Tuple[str, Mapping[str, float]]], title: str = "", split: str = SPLIT
) -> "Figure":
    """One line per job (keep rate against layer), or above :data:`MOST_LINES` jobs one heatmap row per job."""
    layers = sorted({layer for _, rates in profiles for layer in rates}, key=lambda name: int(name[1:]))
    labels = [label for label, _ in profiles]
    heading = f"final {split} keep rate per gated layer, one {'row' if len(profiles) > MOST_LINES else 'line'} per job"
    if len(profiles) > MOST_LINES:
        fig = _figure(min(14.0, 5.0 + 0.15 * len(layers)), min(16.0, 2.0 + 0.2 * len(profiles)))
        ax = fig.add_subplot()
        _heatmap(fig, ax, [[rates.get(layer, math.nan) for layer in layers] for _, rates in profiles])
        _label_every(ax, labels, most=60)
        ax.set_xticks(range(0, len(layers), max(1, math.ceil(len(layers) / 24))))
        ax.set_xticklabels([layers[i] for i in ax.get_xticks()], fontsize=7, rotation=90)
        ax.set_xlabel("gated layer (input side on the left)")
    else:
        fig = _figure(10.0, 6.0)
        ax = fig.add_subplot()
        for i, (label, rates) in enumerate(profiles):
            xs = [layers.index(layer) for layer in rates]
            ax.plot(xs, list(rates.values()), marker="os^Dv<>ph*PX"[i % 12], markersize=3, linewidth=1.2,
                    color=f"C{i % 10}", label=label)  # fmt: skip
        ax.set_xticks(range(0, len(layers), max(1, math.ceil(len(layers) / 24))))
        ax.set_xticklabels([layers[int(i)] for i in ax.get_xticks()], fontsize=7, rotation=90)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("gated layer (input side on the left)")
        ax.set_ylabel(f"{split} keep rate (fraction of channels kept)")
        ax.grid(True, alpha=0.3)
        fig.legend(loc="outside lower center", ncols=min(3, max(1, len(profiles))), fontsize=8, title="job",
                   title_fontsize=8)  # fmt: skip
    fig.suptitle(f"{title}\n{heading}" if title else heading, fontsize=10)
    return fig


def write_keep_profiles(jobs: Sequence["JobResult"], out_dir: Path, title: str = "") -> Optional[Path]:
    """``out_dir/keep_profiles.png`` of :func:`keep_profiles`; None (and no file) when no job has one."""
    profiles = keep_profiles(jobs)
    return _write_png(plot_keep_profiles(profiles, title), Path(out_dir) / KEEP_PROFILES_PNG) if profiles else None
