"""How a finished training run appears in W&B: its summary and its per-layer keep-rate chart."""
from __future__ import annotations

from typing import Any, Dict, Mapping

from acs.reporting.run_logger import RunLogger


def log_run_end(logger: RunLogger, summary: Mapping[str, Any]) -> None:
    """Logs the run's final metrics as its W&B summary and the keep rates of its gated layers as a
    bar chart (``summary`` as the run writes it to ``summary.json``)."""
    logger.log_summary(flat_summary(summary))
    logger.log_rich(lambda wandb: keep_rate_chart(wandb, summary["final"]))


def keep_rate_chart(wandb: Any, record: Mapping[str, Any]) -> Dict[str, Any]:
    """A bar chart of the test keep rate of every gated layer (nothing for ungated models)."""
    rates = [[key.rsplit("/", 1)[1], value] for key, value in record.items() if key.startswith("test/keep/")]
    if not rates:
        return {}
    table = wandb.Table(data=rates, columns=["layer", "keep_rate"])
    return {
        "test/keep_rate_per_layer": wandb.plot.bar(table, "layer", "keep_rate", title="Test keep rate per gated layer")
    }


def flat_summary(summary: Mapping[str, Any]) -> Dict[str, Any]:
    """Final metrics under their own names (so W&B panels over a group need no editing), best under best/."""
    flat = {k: v for k, v in summary["final"].items() if "/keep/" not in k}
    if summary.get("best"):
        flat.update({f"best/{k}": v for k, v in summary["best"]["metrics"].items() if "/keep/" not in k})
    flat.update(params=summary["params"], dense_macs=summary["dense_macs"], run_time_s=summary["run_time_s"])
    return flat
