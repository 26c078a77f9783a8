"""``mode=benchmark``: images/s of training steps and inference, and batch-1 latency, for the
configured model and its ungated twin, on random input of the dataset's shape; with
``trainer.compile=true`` each also under ``torch.compile``, beside its eager self."""

from __future__ import annotations

import functools
import logging
import statistics
from pathlib import Path
from typing import Any, Dict, List, Sequence

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


COMPILED = " compiled"  # the label suffix of a model's compiled twin


def with_compiled(models: Dict[str, nn.Module]) -> Dict[str, nn.Module]:
    """``models`` and, after them, each one's ``torch.compile`` twin (labelled ``label + COMPILED``),
    which shares its parameters. Its first calls compile (training, evaluation, batch 1: one graph
    each), so the benchmark's warm-up steps should be at least one."""
    return {**models, **{label + COMPILED: torch.compile(model) for label, model in models.items()}}


def ratios(rows: Dict[str, Dict[str, float]], over: Dict[str, str], keys: Sequence[str]) -> Dict[str, Dict[str, float]]:
    """``{"a/b": {key: rows[a][key] / rows[b][key]}}`` for every ``a: b`` of ``over`` whose rows exist."""
    return {f"{a}/{b}": {k: rows[a][k] / rows[b][k] for k in keys} for a, b in over.items() if a in rows and b in rows}


def compile_ratios(rows: Dict[str, Dict[str, float]], keys: Sequence[str]) -> Dict[str, Dict[str, float]]:
    """Each compiled model's figures over its eager twin's (empty without compiled rows)."""
    return ratios(rows, {label: label[: -len(COMPILED)] for label in rows if label.endswith(COMPILED)}, keys)


def ratio_lines(table: Dict[str, Dict[str, float]], keys: Sequence[str], width: int) -> List[str]:
    """One printed line per ratio of :func:`ratios`, its figures in ``keys``' columns."""
    return [
        f"{name:{width}s} " + " ".join(f"{values[k]:{9 if k == 'macs' else 12}.3f}" for k in keys)
        for name, values in table.items()
    ]


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
    if cfg.trainer.compile:
        models = with_compiled(models)
    rows = measure(models, info.input_size, batch, ctx, cfg.benchmark.warmup, cfg.benchmark.steps)
    for label, model in models.items():
        rows[label]["compute_ratio"] = rows[label]["macs"] / model.dense_macs(info.input_size)
    keys = ("train_images_per_s", "eval_images_per_s", "latency_ms_batch1")
    gated = ratios(rows, {"configured": "ungated", f"configured{COMPILED}": f"ungated{COMPILED}"}, (*keys, "macs"))
    compiled = compile_ratios(rows, keys)
    result = {
        "model": cfg.model.name,
        "gate": cfg.gate.name,
        "device": str(device),
        "batch_size": batch,
        "input_size": list(info.input_size),
        "compile": bool(cfg.trainer.compile),
        "results": rows,
        "configured_over_ungated": gated["configured/ungated"],
        "ratios": {**gated, **compiled},
    }
    width = max(len(name) for name in [*rows, *gated, *compiled])
    header = f"{'train img/s':>12s} {'eval img/s':>12s} {'latency ms':>12s} {'MMACs':>9s} {'compute':>8s}"
    lines = [f"{'':{width}s} {header}"]
    for label, row in rows.items():
        lines.append(
            f"{label:{width}s} {row['train_images_per_s']:12.1f} {row['eval_images_per_s']:12.1f} "
            f"{row['latency_ms_batch1']:12.2f} {row['macs'] / 1e6:9.2f} {100 * row['compute_ratio']:7.1f}%"
        )
    lines += ratio_lines(gated, (*keys, "macs"), width) + ratio_lines(compiled, keys, width)
    print("\n".join(lines))
    write_json(Path(run_dir) / "benchmark.json", result)
    write_json(
        Path(run_dir) / "summary.json", {"status": "completed", "mode": "benchmark", "overrides": overrides, **result}
    )
    return result
