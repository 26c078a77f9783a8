"""A run from a composed config: train (then test) or evaluate a checkpoint, into one run folder.

The folder holds ``metrics.jsonl`` (one line per epoch), ``summary.json`` (status, final and best
metrics, parameters, overrides, run time) and ``checkpoints/{last,best}.pt``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from omegaconf import DictConfig, OmegaConf

from acs.reporting import create_logger
from acs.training import distributed
from acs.training.builders import build_data, build_model, seed_everything, select_device
from acs.training.checkpoint import (
    load_checkpoint,
    load_model_state,
    load_optimizer_state,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from acs.training.config import Config
from acs.training.engine import StepContext, run_epoch
from acs.training.files import append_jsonl, read_jsonl, rewrite_jsonl, write_json
from acs.training.objective import build_regularizer
from acs.training.optim import build_optimizer, build_scheduler

log = logging.getLogger(__name__)


class Run:
    """Everything one job owns: its config, folder, data, model and optimisation state."""

    def __init__(self, cfg: DictConfig, run_dir: Path, overrides: List[str], group: Optional[str] = None):
        self.cfg, self.run_dir, self.overrides, self.group = cfg, Path(run_dir), list(overrides), group
        self.checkpoints = self.run_dir / "checkpoints"
        self.metrics_path, self.summary_path = self.run_dir / "metrics.jsonl", self.run_dir / "summary.json"
        self.started = time.time()
        seed_everything(cfg.seed, cfg.trainer.deterministic)
        self.device = distributed.init(select_device(cfg.trainer.device))  # cuda:LOCAL_RANK under torchrun
        self.loaders = build_data(cfg.dataset, cfg.seed)
        self.model = build_model(cfg.model, cfg.gate, self.loaders.num_classes, self.loaders.in_channels)
        self.model.to(self.device)
        if cfg.trainer.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.dense_macs = self.model.dense_macs(self.loaders.input_size)
        self.params = sum(p.numel() for p in self.model.parameters())
        distributed.seed_rank(cfg.seed, 0)

    def step_context(self, regularizer=None) -> StepContext:
        t = self.cfg.trainer
        return StepContext(
            self.device, t.precision, t.channels_last, self.cfg.loss, regularizer, t.grad_clip,
            t.progress and distributed.is_main(),
        )

    def evaluate(self, ctx: StepContext, epoch_label: str = "") -> Dict[str, float]:
        distributed.broadcast_buffers(self.model)
        metrics = {}
        for split, loader in (("val", self.loaders.val), ("test", self.loaders.test)):
            if loader is not None:
                metrics.update(
                    run_epoch(self.model, loader, split, self.dense_macs, ctx, description=f"{epoch_label}{split}")
                )
        return metrics

    def summary(self, status: str, **extra: Any) -> Dict[str, Any]:
        return {
            "status": status,
            "mode": self.cfg.mode,
            "model": self.cfg.model.name,
            "gate": self.cfg.gate.name,
            "dataset": self.cfg.dataset.name,
            "overrides": self.overrides,
            "params": self.params,
            "dense_macs": self.dense_macs,
            "dense_flops": 2 * self.dense_macs,
            "device": str(self.device),
            "run_time_s": round(time.time() - self.started, 2),
            **extra,
        }

    def run_name(self) -> str:
        return self.cfg.name or (
            ",".join(self.overrides) if self.overrides else f"{self.cfg.model.name}-{self.cfg.dataset.name}"
        )


def _resume_source(cfg: DictConfig, run_dir: Path) -> Optional[Path]:
    if cfg.ckpt_path:
        return Path(cfg.ckpt_path)
    last = run_dir / "checkpoints" / "last.pt"
    if cfg.resume:
        if last.is_file():
            return last
        log.warning("resume=true but %s does not exist: starting from scratch", last)
    return None


def train(cfg: DictConfig, run_dir: Path, overrides: List[str], group: Optional[str] = None) -> Dict[str, Any]:
    """Trains ``cfg.trainer.max_epochs`` epochs (or what is left of them), testing every epoch."""
    run = Run(cfg, run_dir, overrides, group)
    if cfg.trainer.sync_bn:
        run.model = distributed.sync_batchnorm(run.model, run.device)
    model = run.model
    optimizer = build_optimizer(cfg.optimizer, model)
    scheduler = build_scheduler(cfg.scheduler, optimizer, cfg.trainer.max_epochs)
    use_scaler = run.device.type == "cuda" and cfg.trainer.precision == "fp16"
    scaler = torch.amp.GradScaler(run.device.type, enabled=use_scaler)
    ctx = run.step_context(build_regularizer(cfg.regularizer, run.dense_macs))
    select = "val/acc1" if run.loaders.val is not None else "test/acc1"
    start_epoch, best, wandb_id = 0, None, None

    source = _resume_source(cfg, run.run_dir)
    if source is not None:
        state = load_checkpoint(source, map_location=run.device)
        load_model_state(model, state, cfg.model.name, source)
        load_optimizer_state(optimizer, state, source)
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"])
        start_epoch, best, wandb_id = state["epoch"], state["best"], state["wandb_id"]
        distributed.seed_rank(cfg.seed, start_epoch)
        # Lines of epochs after the checkpoint belong to work that is about to be redone.
        rewrite_jsonl(run.metrics_path, [r for r in read_jsonl(run.metrics_path) if r["epoch"] <= start_epoch])
        log.info("resumed from %s after epoch %d", source, start_epoch)

    net = distributed.wrap(model, run.device)  # trains; ``model`` itself is evaluated and saved
    if cfg.trainer.compile:
        # Training steps only: they dominate the run time, and evaluation then needs no recompilation
        # for its other batch size and mode.
        net = torch.compile(net)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    write_json(run.summary_path, run.summary("running", epochs_completed=start_epoch))
    logger = create_logger(
        cfg.logger.name if distributed.is_main() else "none",
        OmegaConf.to_container(cfg.logger.get("wandb", {}), resolve=True),
        run.run_dir,
        resolved,
        group=group,
        resume_id=wandb_id,
        run_name=run.run_name(),
    )
    record: Dict[str, Any] = {}
    try:
        with logger:
            for epoch in range(start_epoch, cfg.trainer.max_epochs):
                tic = time.time()
                run.loaders.set_epoch(epoch)
                label = f"epoch {epoch + 1}/{cfg.trainer.max_epochs} "
                lr = optimizer.param_groups[0]["lr"]
                record = {"epoch": epoch + 1, "lr": lr}
                record.update(
                    run_epoch(
                        net, run.loaders.train, "train", run.dense_macs, ctx, optimizer, scaler, label + "train"
                    )
                )
                record.update(run.evaluate(ctx, label))
                record["time_s"] = round(time.time() - tic, 3)
                scheduler.step()
                append_jsonl(run.metrics_path, record)
                logger.log_metrics(record, step=epoch + 1)
                log.info(
                    "epoch %d: train loss %.4f acc %.2f | %s %.2f | compute %.1f%%",
                    epoch + 1,
                    record["train/loss"],
                    record["train/acc1"],
                    select,
                    record[select],
                    100 * record["test/compute_ratio"],
                )
                improved = best is None or record[select] > best["value"]
                if improved:
                    best = {"epoch": epoch + 1, "metric": select, "value": record[select], "metrics": record}
                state = {
                    "model_name": cfg.model.name,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "epoch": epoch + 1,
                    "best": best,
                    "rng": rng_state(),
                    "wandb_id": logger.run_id,
                    "config": resolved,
                    "dense_macs": run.dense_macs,
                }
                if improved:
                    save_checkpoint(run.checkpoints / "best.pt", state)
                save_checkpoint(run.checkpoints / "last.pt", state)
                write_json(run.summary_path, run.summary("running", epochs_completed=epoch + 1))
            if not record:  # resumed a finished run: report what the checkpoint holds
                record = run.evaluate(ctx, "final ")
            summary = run.summary(
                "completed",
                epochs_completed=cfg.trainer.max_epochs,
                final=record,
                best=best,
                checkpoints={"last": str(run.checkpoints / "last.pt"), "best": str(run.checkpoints / "best.pt")},
            )
            write_json(run.summary_path, summary)
            logger.log_summary(_flat_summary(summary))
            logger.log_rich(lambda wandb: _keep_rate_chart(wandb, record))
            final_test = record.get("test/acc1", float("nan"))
            log.info("done: test acc1 %.2f at %.1f%% compute", final_test, 100 * record.get("test/compute_ratio", 1))
            log.info("summary: %s | checkpoints: %s", run.summary_path, run.checkpoints)
    except BaseException as error:
        write_json(run.summary_path, run.summary("failed", error=f"{type(error).__name__}: {error}", final=record))
        raise
    return summary


def _keep_rate_chart(wandb, record: Dict[str, Any]) -> Dict[str, Any]:
    """A bar chart of the test keep rate of every gated layer (nothing for ungated models)."""
    rates = [[key.rsplit("/", 1)[1], value] for key, value in record.items() if key.startswith("test/keep/")]
    if not rates:
        return {}
    table = wandb.Table(data=rates, columns=["layer", "keep_rate"])
    return {
        "test/keep_rate_per_layer": wandb.plot.bar(table, "layer", "keep_rate", title="Test keep rate per gated layer")
    }


def _flat_summary(summary: Dict[str, Any]) -> Dict[str, Any]:
    """Final metrics under their own names (so W&B panels over a group need no editing), best under best/."""
    flat = {k: v for k, v in summary["final"].items() if "/keep/" not in k}
    if summary.get("best"):
        flat.update({f"best/{k}": v for k, v in summary["best"]["metrics"].items() if "/keep/" not in k})
    flat.update(params=summary["params"], dense_macs=summary["dense_macs"], run_time_s=summary["run_time_s"])
    return flat


def evaluate_checkpoint(cfg: DictConfig, run_dir: Path, overrides: List[str]) -> Dict[str, Any]:
    """Tests the checkpoint ``cfg.ckpt_path``. Model and gate come from the checkpoint (they define its
    weights); so does the dataset, unless the command line names ``dataset`` settings."""
    path = Path(cfg.ckpt_path)
    state = load_checkpoint(path)
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.update(model=state["config"]["model"], gate=state["config"]["gate"])
    if not any(o.lstrip("+~").startswith("dataset") for o in overrides):
        plain["dataset"] = state["config"]["dataset"]
    run = Run(OmegaConf.merge(OmegaConf.structured(Config), plain), run_dir, overrides)
    load_model_state(run.model, state, run.cfg.model.name, path)
    metrics = run.evaluate(run.step_context())
    summary = run.summary("completed", checkpoint=str(path), checkpoint_epoch=state["epoch"], final=metrics)
    write_json(run.summary_path, summary)
    log.info(
        "%s: test acc1 %.2f acc5 %.2f | %.4g MACs per image (%.1f%% of dense)",
        path,
        metrics["test/acc1"],
        metrics["test/acc5"],
        metrics["test/macs"],
        100 * metrics["test/compute_ratio"],
    )
    return summary
