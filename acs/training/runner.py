"""A run from a composed config: train (then test) or evaluate a checkpoint, into one run folder.

The folder holds ``metrics.jsonl`` (one line per epoch), ``summary.json`` (status, final and best
metrics, parameters, overrides, run time, provenance) and ``checkpoints/{last,best}.pt``; an
evaluation writes ``eval.json``. Which run may use a folder is run_folder.py's business.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
from omegaconf import DictConfig, OmegaConf

from acs.files import append_jsonl, read_jsonl, rewrite_jsonl, write_json
from acs.messages import one_line
from acs.provenance import collect as collect_provenance
from acs.reporting import create_logger, job_name, log_evaluation, log_run_end, write_keep_rates
from acs.training import distributed
from acs.training.builders import build_data, build_model, seed_everything, select_device
from acs.training.checkpoint import (
    Progress,
    TrainingParts,
    load_checkpoint,
    load_matching_weights,
    load_model_state,
    load_training_state,
    save_training_state,
)
from acs.training.config import Config
from acs.training.engine import StepContext, TrainingDiverged, recalibrate_batchnorm, run_epoch
from acs.training.objective import build_regularizer
from acs.training.optim import build_optimizer, build_scheduler

log = logging.getLogger(__name__)


class Run:
    """Everything one job owns: its config, folder, data and model."""

    def __init__(self, cfg: DictConfig, run_dir: Path, overrides: List[str], sweep_job: bool = False):
        self.cfg, self.run_dir, self.overrides = cfg, Path(run_dir), list(overrides)
        # Bars redraw one line: in a file (Slurm, `> log`) every redraw would be a line of its own, and
        # the bars of a sweep's parallel jobs would overwrite each other. There, the epoch lines tell.
        self.bars = cfg.trainer.progress and distributed.is_main() and sys.stderr.isatty() and not sweep_job
        self.checkpoints = self.run_dir / "checkpoints"
        self.metrics_path, self.summary_path = self.run_dir / "metrics.jsonl", self.run_dir / "summary.json"
        self.started = time.time()
        seed_everything(cfg.seed, cfg.trainer.deterministic)
        self.device = distributed.init(select_device(cfg.trainer.device))  # cuda:LOCAL_RANK under torchrun
        self.loaders = build_data(cfg.dataset, cfg.seed, self.device)
        self.model = build_model(cfg.model, cfg.gate, self.loaders.num_classes, self.loaders.in_channels)
        self.model.to(self.device)
        if cfg.trainer.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.dense_macs = self.model.dense_macs(self.loaders.input_size)
        self.params = sum(p.numel() for p in self.model.parameters())
        self.provenance = collect_provenance(self.device)
        for line in self.header():
            log.info("%s", line)
        # The metric that picks the best checkpoint: never the test set when a validation set exists.
        self.select = "val/acc1" if self.loaders.val is not None else "test/acc1"
        distributed.seed_rank(cfg.seed, 0)

    def step_context(self, regularizer=None) -> StepContext:
        t = self.cfg.trainer
        return StepContext(
            self.device, t.precision, t.channels_last, self.cfg.loss, regularizer, t.grad_clip,
            self.bars,
        )

    def header(self) -> List[str]:
        """The block a run's log opens with: where it writes, and what it trains on what."""
        cfg, info, loaders = self.cfg, self.loaders.info, self.loaders
        splits = (("train", loaders.train), ("val", loaders.val), ("test", loaders.test))
        sizes = [f"{len(loader.dataset)} {split}" for split, loader in splits if loader is not None]
        shape = "×".join(map(str, loaders.input_size))
        precision = f", {cfg.trainer.precision}" if self.device.type == "cuda" else ""
        return [
            f"run      {self.run_dir} (mode={cfg.mode}, seed {cfg.seed})",
            f"model    {cfg.model.name}, gate {cfg.gate.name}: {self.params:,} parameters, "
            f"{self.dense_macs / 1e6:,.2f}M dense MACs per image",
            f"data     {cfg.dataset.name}: {', '.join(sizes)} images of {shape}, {info.num_classes} classes, "
            f"batch {cfg.dataset.batch_size}",
            f"device   {self.device} ({self.provenance['device_name'] or 'unknown'}){precision}",
        ]

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
            "provenance": self.provenance,
            "run_time_s": round(time.time() - self.started, 2),
            **extra,
        }

    def run_name(self) -> str:
        fallback = f"{self.cfg.model.name}-{self.cfg.dataset.name}"
        return self.cfg.name or job_name(self.overrides, self.run_dir) or fallback


def train(
    cfg: DictConfig, run_dir: Path, overrides: List[str], group: Optional[str] = None,
    on_start: Callable[[], None] = lambda: None,
) -> Dict[str, Any]:  # fmt: skip
    """Trains ``cfg.trainer.max_epochs`` epochs (or what is left of them), testing every epoch.
    ``on_start`` is called once the run is sure to go ahead (a resume: its checkpoint has loaded),
    before it writes anything."""
    run = Run(cfg, run_dir, overrides, sweep_job=group is not None)
    parts = _training_parts(run)
    ctx = run.step_context(build_regularizer(cfg.regularizer, run.dense_macs))
    progress = _start(run, parts)
    on_start()
    record: Dict[str, Any] = {}
    try:  # from here on, whatever happens, summary.json says how the run ended
        net = _training_net(run)
        resolved = OmegaConf.to_container(cfg, resolve=True)
        write_json(run.summary_path, run.summary("running", epochs_completed=progress.epoch))
        logger = create_logger(
            cfg.logger.name if distributed.is_main() else "none",
            OmegaConf.to_container(cfg.logger.get("wandb", {}), resolve=True),
            run.run_dir,
            {**resolved, "provenance": run.provenance},
            group=group,
            resume_id=progress.wandb_id,
            run_name=run.run_name(),
        )
        progress.wandb_id = logger.run_id
        with logger:
            for epoch in range(progress.epoch, cfg.trainer.max_epochs):
                record = _train_epoch(run, net, parts, ctx, epoch)
                append_jsonl(run.metrics_path, record)
                logger.log_metrics(record, step=epoch + 1)
                improved = progress.finish_epoch(record, run.select)
                paths = [run.checkpoints / "best.pt"] * improved + [run.checkpoints / "last.pt"]
                save_training_state(paths, parts, progress, cfg.model.name, resolved, run.dense_macs)
                write_json(run.summary_path, run.summary("running", epochs_completed=epoch + 1))
            if not record:  # resumed a finished run: report what the checkpoint holds
                record = run.evaluate(ctx, "final ")
            summary = run.summary(
                "completed",
                epochs_completed=cfg.trainer.max_epochs,
                final=record,
                best=progress.best,
                checkpoints={"last": str(run.checkpoints / "last.pt"), "best": str(run.checkpoints / "best.pt")},
            )
            write_json(run.summary_path, summary)
            write_keep_rates(run.run_dir, run.run_name())
            log_run_end(logger, summary, run.run_dir)
            final_test = record.get("test/acc1", float("nan"))
            log.info("done: test acc1 %.2f at %.1f%% compute", final_test, 100 * record.get("test/compute_ratio", 1))
            log.info("summary: %s | checkpoints: %s", run.summary_path, run.checkpoints)
    except BaseException as error:
        write_json(run.summary_path, run.summary("failed", error=one_line(error), final=record))
        _draw_keep_rates_after_failure(run)
        raise
    return summary


def _draw_keep_rates_after_failure(run: Run) -> None:
    """``keep_rates.png`` of the epochs a failed or interrupted run recorded (none: no file). Nothing
    here may replace the run's own error, which the caller raises next: a figure that fails is a
    warning (:func:`write_keep_rates`), a second Ctrl-C while it is drawn stops only the drawing."""
    try:
        write_keep_rates(run.run_dir, run.run_name())
    except BaseException:  # noqa: BLE001 - see above: the run's own error is the one to report
        pass


def _training_parts(run: Run) -> TrainingParts:
    """The model to train (with SyncBatchNorm where asked) and its optimizer, schedule and AMP scaler."""
    cfg = run.cfg
    if cfg.trainer.sync_bn:
        run.model = distributed.sync_batchnorm(run.model, run.device)
    optimizer = build_optimizer(cfg.optimizer, run.model)
    scheduler = build_scheduler(cfg.scheduler, optimizer, cfg.trainer.max_epochs)
    use_scaler = run.device.type == "cuda" and cfg.trainer.precision == "fp16"
    return TrainingParts(run.model, optimizer, scheduler, torch.amp.GradScaler(run.device.type, enabled=use_scaler))


def _start(run: Run, parts: TrainingParts) -> Progress:
    """The progress of the checkpoint the run continues from (``ckpt_path``, or its own ``last.pt``
    with ``resume=true``), restored into ``parts``; else a fresh start, from another run's weights
    where ``init_from`` names a checkpoint (so that a requeued warm-started job continues, not restarts)."""
    cfg = run.cfg
    source = Path(cfg.ckpt_path) if cfg.ckpt_path else None
    last = run.checkpoints / "last.pt"
    if source is None and cfg.resume:
        if last.is_file():
            source = last
        else:
            log.warning("resume=true but %s does not exist: starting from scratch", last)
    if source is None:
        if cfg.init_from:
            _warm_start(run.model, Path(cfg.init_from))
        if run.metrics_path.exists():  # lines of a run killed before its first checkpoint: all redone
            rewrite_jsonl(run.metrics_path, [])
        return Progress()
    progress = load_training_state(source, parts, cfg.model.name, map_location=run.device)
    distributed.seed_rank(cfg.seed, progress.epoch)
    # Lines of epochs after the checkpoint belong to work that is about to be redone.
    kept = [r for r in read_jsonl(run.metrics_path) if r["epoch"] <= progress.epoch]
    rewrite_jsonl(run.metrics_path, kept)
    log.info("resumed from %s after epoch %d", source, progress.epoch)
    return progress


def _warm_start(model: torch.nn.Module, path: Path) -> None:
    """Loads what fits of another run's weights, and says in the log what was loaded and what not."""
    start = load_matching_weights(model, path)
    log.info("init_from %s: loaded %d tensors: %s", path, len(start.loaded), _names(start.loaded))
    log.info("init_from: %d tensors start fresh: %s", len(start.fresh), _names(start.fresh))
    if start.unused:
        log.info("init_from: %d checkpoint tensors fit nothing here: %s", len(start.unused), _names(start.unused))


def _names(names: List[str], most: int = 6) -> str:
    return ", ".join(names[:most]) + (f", … ({len(names) - most} more)" if len(names) > most else "") or "none"


def _training_net(run: Run) -> torch.nn.Module:
    """What the training steps run: the model under DDP (torchrun) and ``torch.compile`` where asked;
    the model itself is what is evaluated and saved."""
    net = distributed.wrap(run.model, run.device)
    if run.cfg.trainer.compile:
        # Training steps only: they dominate the run time, and evaluation then needs no recompilation
        # for its other batch size and mode.
        net = torch.compile(net)
    return net


def _train_epoch(run: Run, net: torch.nn.Module, parts: TrainingParts, ctx: StepContext, epoch: int) -> Dict[str, Any]:
    """One epoch of training, then evaluation and the schedule's step; returns the epoch's record."""
    tic = time.time()
    run.loaders.set_epoch(epoch)
    label = f"epoch {epoch + 1}/{run.cfg.trainer.max_epochs} "
    record: Dict[str, Any] = {"epoch": epoch + 1, "lr": parts.optimizer.param_groups[0]["lr"]}
    try:
        record.update(
            run_epoch(net, run.loaders.train, "train", run.dense_macs, ctx, parts.optimizer, parts.scaler,
                      label + "train")
        )  # fmt: skip
        if run.cfg.trainer.precise_bn_batches:
            recalibrate_batchnorm(run.model, run.loaders.train, run.cfg.trainer.precise_bn_batches, run.device)
        record.update(run.evaluate(ctx, label))
    except TrainingDiverged as error:  # the step is known where it diverged, the epoch here
        raise TrainingDiverged(
            f"epoch {epoch + 1}: {error} (lower optimizer.lr, or set trainer.grad_clip)"
        ) from error
    record["time_s"] = round(time.time() - tic, 3)
    parts.scheduler.step()
    log.info(
        "epoch %d/%d: train loss %.4f acc %.2f | %s %.2f | compute %.1f%% | %.1f s",
        epoch + 1,
        run.cfg.trainer.max_epochs,
        record["train/loss"],
        record["train/acc1"],
        run.select,
        record[run.select],
        100 * record["test/compute_ratio"],
        record["time_s"],
    )
    return record


def evaluate_checkpoint(cfg: DictConfig, run_dir: Path, overrides: List[str]) -> Dict[str, Any]:
    """Tests the checkpoint ``cfg.ckpt_path`` into ``eval.json``. Model and gate come from the checkpoint
    (they define its weights); so does the dataset, unless the command line names ``dataset`` settings."""
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
    # Its own file: an evaluation in the folder of the run it evaluates leaves that run's summary alone.
    write_json(run.run_dir / "eval.json", summary)
    log_evaluation(
        cfg.logger.name if distributed.is_main() else "none",
        OmegaConf.to_container(cfg.logger.get("wandb", {}), resolve=True), run.run_dir, plain, summary, run.run_name(),
    )  # fmt: skip
    log.info(
        "%s: test acc1 %.2f acc5 %.2f | %.4g MACs per image (%.1f%% of dense)",
        path,
        metrics["test/acc1"],
        metrics["test/acc5"],
        metrics["test/macs"],
        100 * metrics["test/compute_ratio"],
    )
    return summary
