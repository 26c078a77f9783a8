"""How a run appears in W&B: a job's short name, a finished training run's summary, keep-rate charts
and checkpoint artifact, and an evaluation's results."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from acs.files import read_jsonl
from acs.reporting.jobs import parse_override, read_yaml
from acs.reporting.keep_rates import KEEP_RATES_PNG, SPLIT, keep_history, layer_rates
from acs.reporting.pareto import short_label
from acs.reporting.run_logger import RunLogger, create_logger

# Overrides that say where and how a run logs, not what it is: never part of its name.
UNNAMED = ("logger", "hydra", "trainer.progress", "overwrite", "resume", "name")


def job_name(overrides: Sequence[str], run_dir: Path) -> str:
    """The job's name in W&B: its swept values with keys shortened to their last component
    (``beta=3, seed=1``). A job of a sweep knows what was swept from the sweep's ``multirun.yaml``
    (command-line sweeps) or its own ``.hydra/hydra.yaml`` (a sweeper's ``params``, as Optuna's);
    a single run is named by all its overrides, a path among them by its last three parts
    (``ckpt_path=…/10-00-00/checkpoints/best.pt``). Empty when nothing is left."""
    own = dict(parse_override(o) for o in overrides)
    swept = swept_keys(Path(run_dir))
    chosen = {k: _short_path(v) for k, v in own.items() if (k in swept if swept else not k.startswith(UNNAMED))}
    return short_label(chosen)


def _short_path(value: str) -> str:
    parts = value.split("/")
    return "/".join(["…", *parts[-3:]]) if len(parts) > 4 else value


def swept_keys(run_dir: Path) -> List[str]:
    """The keys a sweep varies, read from the files Hydra wrote for the job in ``run_dir``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    keys: List[str] = []
    for path in (run_dir.parent / "multirun.yaml", run_dir / ".hydra" / "hydra.yaml"):
        config = read_yaml(path)
        if not isinstance(config, dict):
            continue
        hydra = config.get("hydra") or {}
        task = ((hydra.get("overrides") or {}).get("task") or []) if path.name == "multirun.yaml" else []
        try:
            parsed = OverridesParser.create().parse_overrides([str(o) for o in task])
        except Exception:  # noqa: BLE001 - an unreadable line names nothing
            parsed = []
        keys += [o.key_or_group for o in parsed if o.is_sweep_override()]
        keys += list((hydra.get("sweeper") or {}).get("params") or {})
    return list(dict.fromkeys(keys))


def log_run_end(logger: RunLogger, summary: Mapping[str, Any], run_dir: Path) -> None:
    """Logs what the history does not hold to the run's W&B summary (the best checkpoint's metrics
    under ``best/``, parameters, dense MACs, run time), the keep rates of its gated layers over the
    epochs as one chart beside the run's ``keep_rates.png``, and with ``log_checkpoints`` its ``best.pt`` as a
    model artifact whose metadata is the summary (``summary`` as the run writes it to ``summary.json``)."""
    run_dir = Path(run_dir)
    logger.log_summary(flat_summary(summary, final=False))
    history = read_jsonl(run_dir / "metrics.jsonl")
    logger.log_rich(lambda wandb: keep_rate_charts(wandb, history, run_dir / KEEP_RATES_PNG))
    best = Path(summary.get("checkpoints", {}).get("best", run_dir / "checkpoints" / "best.pt"))
    if logger.log_checkpoints and best.is_file():
        aliases = ["best"] + ([f"epoch-{summary['best']['epoch']}"] if summary.get("best") else [])
        logger.log_artifact(best, f"model-{logger.run_id}", "model", finite(flat_summary(summary)), aliases)


def log_evaluation(
    name: str, options: Mapping[str, Any], run_dir: Path, config: Mapping[str, Any], summary: Mapping[str, Any],
    run_name: Optional[str],
) -> None:  # fmt: skip
    """One W&B run (job type ``eval``) for an evaluation: its results (``summary`` as written to
    ``eval.json``) as the run's summary and the tested keep rate of each gated layer as a bar chart."""
    with create_logger(name, options, run_dir, config, run_name=run_name, job_type="eval") as logger:
        checkpoint = {key: summary[key] for key in ("checkpoint", "checkpoint_epoch")}
        logger.log_summary({**flat_summary(summary), **checkpoint})
        logger.log_rich(lambda wandb: keep_rate_chart(wandb, summary["final"]))


def keep_rate_charts(wandb: Any, history: Sequence[Mapping[str, Any]], png: Path) -> Dict[str, Any]:
    """The test keep rate of every gated layer over the epochs as one line chart (one line per layer),
    and ``png`` (the run's heatmap) where it exists; nothing for ungated models."""
    epochs, layers, rates = keep_history(history, SPLIT)
    if not layers:
        return {}
    charts = {
        f"{SPLIT}/keep_rate_per_layer": wandb.plot.line_series(
            xs=epochs, ys=rates, keys=layers, title=f"{SPLIT} keep rate per gated layer", xname="epoch"
        )
    }
    if png.is_file():
        charts[f"{SPLIT}/keep_rate_heatmap"] = wandb.Image(str(png))
    return charts


def keep_rate_chart(wandb: Any, record: Mapping[str, Any]) -> Dict[str, Any]:
    """A bar chart of the test keep rate of every gated layer (nothing for ungated models)."""
    rates = [[layer, rate] for layer, rate in layer_rates(record, SPLIT).items()]
    if not rates:
        return {}
    table = wandb.Table(data=rates, columns=["layer", "keep_rate"])
    return {
        f"{SPLIT}/keep_rate_per_layer": wandb.plot.bar(
            table, "layer", "keep_rate", title=f"{SPLIT} keep rate per gated layer"
        )
    }


def flat_summary(summary: Mapping[str, Any], final: bool = True) -> Dict[str, Any]:
    """The final metrics under their own names (``final=False``: left out, for a run whose history
    holds them and whose W&B summary keeps them as defined by ``training_metrics``), the best
    checkpoint's under ``best/``, then parameters, dense MACs and run time; no per-layer keep rates."""
    flat = {k: v for k, v in summary["final"].items() if "/keep/" not in k} if final else {}
    if summary.get("best"):
        flat.update({f"best/{k}": v for k, v in summary["best"]["metrics"].items() if "/keep/" not in k})
    flat.update(params=summary["params"], dense_macs=summary["dense_macs"], run_time_s=summary["run_time_s"])
    return flat


def finite(values: Mapping[str, Any]) -> Dict[str, Any]:
    """``values`` without NaN and infinities, which JSON (an artifact's metadata) cannot hold."""
    return {k: v for k, v in values.items() if not (isinstance(v, float) and not math.isfinite(v))}
