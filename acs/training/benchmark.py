"""``mode=benchmark``: images/s of training steps and inference, and batch-1 latency, for the
configured model and its ungated twin, on random input of the dataset's shape."""

from __future__ import annotations

import functools
import logging
import statistics
from pathlib import Path
from typing import Any, Dict, List

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from acs.data import dataset_info
from acs.files import write_json
from acs.timing import time_interleaved
from acs.training.builders import build_model, seed_everything, select_device
from acs.training.engine import StepContext

log = logging.getLogger(__name__)


def measure(
    models: Dict[str, nn.Module], input_size, batch: int, ctx: StepContext, warmup: int, steps: int
) -> Dict[str, Dict[str, float]]:
    """Per model: median throughput (images/s) of a training step and of inference, batch-1
    latency, and MACs per image. The models are timed in turns (see :func:`time_interleaved`)."""
    images = torch.randn(batch, *input_size)
    images, target = ctx.to_device(images, torch.zeros(batch, dtype=torch.long))

    def train_step(model: nn.Module, optimizer: torch.optim.Optimizer):
        with ctx.autocast():
            out = model(images)
        loss = F.cross_entropy(out.logits.float(), target) + 1e-12 * out.macs.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def infer(model: nn.Module, x: torch.Tensor):
        with torch.no_grad(), ctx.autocast():
            model(x)

    nets = list(models.values())
    steps_of = [functools.partial(train_step, m, torch.optim.SGD(m.parameters(), lr=1e-6)) for m in nets]
    for model in nets:
        model.train()
    train_times = time_interleaved(steps_of, warmup, steps, ctx.device)
    for model in nets:
        model.eval()
    eval_times = time_interleaved([functools.partial(infer, m, images) for m in nets], warmup, steps, ctx.device)
    latency = time_interleaved([functools.partial(infer, m, images[:1]) for m in nets], warmup, steps, ctx.device)
    rows = {}
    for i, (label, model) in enumerate(models.items()):
        with torch.no_grad():
            macs = model(images).macs.float().mean().item()
        rows[label] = {
            "train_images_per_s": batch / statistics.median(train_times[i]),
            "eval_images_per_s": batch / statistics.median(eval_times[i]),
            "latency_ms_batch1": 1000 * statistics.median(latency[i]),
            "macs": macs,
        }
    return rows


def benchmark(cfg: DictConfig, run_dir: Path, overrides: List[str]) -> Dict[str, Any]:
    seed_everything(cfg.seed)
    device = select_device(cfg.trainer.device)
    info = dataset_info(cfg.dataset.name, **OmegaConf.to_container(cfg.dataset.options, resolve=True))
    batch = cfg.benchmark.batch_size or cfg.dataset.batch_size
    ctx = StepContext(device, cfg.trainer.precision, cfg.trainer.channels_last, progress=False)
    variants = {"configured": cfg.gate, "ungated": OmegaConf.create({"name": "none"})}
    models = {}
    for label, gate in variants.items():
        models[label] = build_model(cfg.model, gate, info.num_classes, info.in_channels).to(device)
        if cfg.trainer.channels_last:
            models[label].to(memory_format=torch.channels_last)
    rows = measure(models, info.input_size, batch, ctx, cfg.benchmark.warmup, cfg.benchmark.steps)
    for label, model in models.items():
        rows[label]["compute_ratio"] = rows[label]["macs"] / model.dense_macs(info.input_size)
    ratios = {
        key: rows["configured"][key] / rows["ungated"][key]
        for key in ("train_images_per_s", "eval_images_per_s", "latency_ms_batch1", "macs")
    }
    result = {
        "model": cfg.model.name,
        "gate": cfg.gate.name,
        "device": str(device),
        "batch_size": batch,
        "input_size": list(info.input_size),
        "results": rows,
        "configured_over_ungated": ratios,
    }
    lines = [f"{'':12s} {'train img/s':>12s} {'eval img/s':>12s} {'latency ms':>11s} {'MMACs':>9s} {'compute':>8s}"]
    for label, row in rows.items():
        lines.append(
            f"{label:12s} {row['train_images_per_s']:12.1f} {row['eval_images_per_s']:12.1f} "
            f"{row['latency_ms_batch1']:11.2f} {row['macs'] / 1e6:9.2f} {100 * row['compute_ratio']:7.1f}%"
        )
    lines.append(
        f"{'ratio':12s} {ratios['train_images_per_s']:12.3f} {ratios['eval_images_per_s']:12.3f} "
        f"{ratios['latency_ms_batch1']:11.3f} {ratios['macs']:9.3f}"
    )
    print("\n".join(lines))
    write_json(Path(run_dir) / "benchmark.json", result)
    write_json(
        Path(run_dir) / "summary.json", {"status": "completed", "mode": "benchmark", "overrides": overrides, **result}
    )
    return result
