"""Batch-1 CPU latency of the deployed forms against the dense model, and how much of the MACs
reduction turns into real speed (the realisation ratio: speed-up ÷ MACs reduction)."""

from __future__ import annotations

import copy
import statistics
from typing import Callable, Dict, List, Sequence, Tuple

import torch
from torch import Tensor, nn

from acs.cost import MacMeter
from acs.deploy import to_dynamic
from acs.deploy.materialize import materialize
from acs.models.densenet import DenseNet
from acs.models.resnext import GResNeXt
from acs.timing import time_interleaved


def _rows(variants: Sequence[Tuple[str, Callable[[], Tensor]]], runs: int, warmup: int) -> List[Dict[str, float]]:
    """Median latency (interleaved timing) and MACs per sample of each ``(name, call)``; a call
    returns the per-sample MACs it ran."""
    calls = [call for _, call in variants]
    with torch.no_grad():
        macs = [float(call().mean()) for call in calls]
        times = time_interleaved(calls, warmup, runs)
    return [
        {"variant": name, "latency_ms": 1000.0 * statistics.median(seconds), "macs": m}
        for (name, _), seconds, m in zip(variants, times, macs)
    ]


def _ratios(rows: List[Dict[str, float]]) -> List[Dict[str, float]]:
    reference = rows[0]
    for row in rows:
        row["macs_ratio"] = row["macs"] / reference["macs"]
        row["latency_ratio"] = row["latency_ms"] / reference["latency_ms"]
        row["realisation"] = (1.0 / row["latency_ratio"]) / (1.0 / row["macs_ratio"])
    return rows


def benchmark_densenet(
    gated: DenseNet, dense: DenseNet, input_size: Sequence[int], runs: int, warmup: int
) -> List[dict]:
    """dense (ungated) model, masked training form, dynamic executor; batch 1, one fixed input.
    Where the executor runs its native kernels, it is listed on tensor operations only too (what
    the fusion saves); the ungated model's executor is listed as well, so that what the skipping
    saves can be told apart from what the executor's own engineering saves."""
    x = torch.randn(1, *input_size, generator=torch.Generator().manual_seed(0))
    executor = to_dynamic(gated)
    modules = [
        ("dense (ungated)", dense.eval()),
        ("masked (training form)", gated.eval()),
        ("dynamic executor", executor),
    ]
    if executor.native:
        modules.append(("executor, tensor ops only", to_dynamic(gated, native=False)))
    modules.append(("executor of ungated", to_dynamic(dense)))
    return _ratios(_rows([(name, _forward_macs(module, x)) for name, module in modules], runs, warmup))


def _forward_macs(module: nn.Module, x: Tensor) -> Callable[[], Tensor]:
    return lambda: module(x).macs


def benchmark_resnext(model: GResNeXt, input_size: Sequence[int], runs: int, warmup: int) -> List[dict]:
    """One bottleneck block and the whole network, masked DGConv form against materialized."""
    model = model.eval()
    deployed = materialize(copy.deepcopy(model)).eval()
    x = torch.randn(1, *input_size, generator=torch.Generator().manual_seed(0))
    block, block_deployed = model.layer2[1], deployed.layer2[1]
    with torch.no_grad():  # the block's input: the features that reach it
        h = model.conv1(x)
        h = model.bn1(h).relu()
        h = model.maxpool(h) if model.maxpool is not None else h
        meter = MacMeter(1)
        for b in model.layer1:
            h = b(h, meter)
        h = model.layer2[0](h, meter)
    blocks = [("block masked", _block_macs(block, h)), ("block materialized", _block_macs(block_deployed, h))]
    networks = [("network masked", _forward_macs(model, x)), ("network materialized", _forward_macs(deployed, x))]
    return _ratios(_rows(blocks, runs, warmup)) + _ratios(_rows(networks, runs, warmup))


def _block_macs(block: nn.Module, h: Tensor) -> Callable[[], Tensor]:
    def run() -> Tensor:
        meter = MacMeter(1)
        block(h, meter)
        return meter.total

    return run
