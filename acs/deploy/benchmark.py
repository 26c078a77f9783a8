"""Batch-1 CPU latency of the deployed forms against the dense model, and how much of the MACs
reduction turns into real speed (the realisation ratio: speed-up ÷ MACs reduction)."""

from __future__ import annotations

import copy
import statistics
from typing import Callable, Dict, List, Sequence

import torch
from torch import nn

from acs.cost import MacMeter
from acs.deploy import to_dynamic
from acs.deploy.materialize import materialize
from acs.models.densenet import DenseNet
from acs.models.resnext import GResNeXt
from acs.timing import time_calls


def median_latency_ms(fn: Callable[[], object], runs: int, warmup: int) -> float:
    with torch.no_grad():
        return 1000.0 * statistics.median(time_calls(fn, warmup, runs))


def _row(name: str, module: nn.Module, x: torch.Tensor, runs: int, warmup: int) -> Dict[str, float]:
    with torch.no_grad():
        macs = float(module(x).macs.mean())
    return {"variant": name, "latency_ms": median_latency_ms(lambda: module(x), runs, warmup), "macs": macs}


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
    The ungated model's executor is listed too, so that what the skipping saves can be told apart
    from what the executor's own engineering saves."""
    x = torch.randn(1, *input_size, generator=torch.Generator().manual_seed(0))
    rows = [
        _row("dense (ungated)", dense.eval(), x, runs, warmup),
        _row("masked (training form)", gated.eval(), x, runs, warmup),
        _row("dynamic executor", to_dynamic(gated), x, runs, warmup),
        _row("executor of ungated", to_dynamic(dense), x, runs, warmup),
    ]
    return _ratios(rows)


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
    block_rows = _ratios(
        [
            _block_row("block masked", block, h, runs, warmup),
            _block_row("block materialized", block_deployed, h, runs, warmup),
        ]
    )
    net_rows = _ratios(
        [_row("network masked", model, x, runs, warmup), _row("network materialized", deployed, x, runs, warmup)]
    )
    return block_rows + net_rows


def _block_row(name: str, block: nn.Module, h: torch.Tensor, runs: int, warmup: int) -> Dict[str, float]:
    def run():
        meter = MacMeter(1)
        block(h, meter)
        return meter.total

    with torch.no_grad():
        macs = float(run().mean())
    return {"variant": name, "latency_ms": median_latency_ms(run, runs, warmup), "macs": macs}
