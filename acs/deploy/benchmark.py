"""CPU latency of the deployed forms against the dense model, and how much of the MACs reduction
turns into real speed (the realisation ratio: speed-up ÷ MACs reduction, i.e. MACs ratio ÷ latency
ratio; 1 where time shrinks exactly as the MACs do)."""

from __future__ import annotations

import copy
import statistics
import time
from typing import Callable, Dict, List, Sequence, Tuple

import torch
from torch import Tensor, nn

from acs.cost import MacMeter
from acs.deploy import to_dynamic
from acs.deploy.materialize import materialize
from acs.models.densenet import DenseNet
from acs.models.resnext import GResNeXt
from acs.timing import timed_rounds


def _rows(variants: Sequence[Tuple[str, Callable[[], Tensor]]], runs: int, warmup: int) -> List[Dict[str, float]]:
    """Median latency per call (interleaved timing) and the process's CPU time per call (what the
    call itself used: on a loaded machine latency also holds the waits for a core), MACs per sample
    and the multiply-accumulates computed per second of latency of each ``(name, call)``; a call
    returns the per-sample MACs it ran."""
    calls = [call for _, call in variants]
    with torch.no_grad():
        macs = [call() for call in calls]
        wall, cpu = timed_rounds(calls, warmup, runs, (time.perf_counter, time.process_time))
    rows = []
    for (name, _), seconds, cpu_seconds, m in zip(variants, wall, cpu, macs):
        latency = statistics.median(seconds)
        rows.append(
            {
                "variant": name,
                "latency_ms": 1000.0 * latency,
                "cpu_ms": 1000.0 * statistics.median(cpu_seconds),
                "macs": float(m.double().mean()),
                "gmacs_per_s": float(m.double().sum()) / latency / 1e9,
            }
        )
    return rows


def _ratios(rows: List[Dict[str, float]]) -> List[Dict[str, float]]:
    reference = rows[0]
    for row in rows:
        row.update(versus(row, reference))
    return rows


def versus(row: Dict[str, float], baseline: Dict[str, float]) -> Dict[str, float]:
    """``row`` against ``baseline``: MACs ratio, latency ratio, realisation (MACs ratio ÷ latency
    ratio) and CPU-time ratio."""
    macs, latency = row["macs"] / baseline["macs"], row["latency_ms"] / baseline["latency_ms"]
    return {
        "macs_ratio": macs,
        "latency_ratio": latency,
        "realisation": macs / latency,
        "cpu_ratio": row["cpu_ms"] / baseline["cpu_ms"],
    }


#: What the gated model's executor is measured against first: the same executor running the
#: ungated model (what skipping itself saves), then PyTorch running the ungated model.
HEADLINE_BASELINES = ("executor of ungated", "dense (ungated)")


def headline(rows: List[Dict[str, float]]) -> List[Dict[str, float]]:
    """The dynamic executor against each of :data:`HEADLINE_BASELINES`, with the latency, CPU time
    and GMAC/s of both."""
    by_name = {row["variant"]: row for row in rows}
    gated = by_name["dynamic executor"]
    fields = ("latency_ms", "cpu_ms", "gmacs_per_s")
    return [
        {
            "variant": gated["variant"],
            "baseline": name,
            **versus(gated, by_name[name]),
            **{field: gated[field] for field in fields},
            **{f"baseline_{field}": by_name[name][field] for field in fields},
        }
        for name in HEADLINE_BASELINES
    ]


def _input(input_size: Sequence[int], batch: int) -> Tensor:
    """The one fixed input that the DenseNet benchmark times and whose masks it counts."""
    return torch.randn(batch, *input_size, generator=torch.Generator().manual_seed(0))


def benchmark_densenet(
    gated: DenseNet, dense: DenseNet, input_size: Sequence[int], runs: int, warmup: int, batch: int = 1
) -> Tuple[List[dict], List[dict]]:
    """dense (ungated) model, masked training form, dynamic executor; one fixed input of ``batch``
    samples, whose masks differ (the executor works per sample). Where the executor runs its
    native kernels, it is listed on tensor operations only too (what the fusion saves); the
    ungated model's executor is listed as well, so that what the skipping saves can be told apart
    from what the executor's own engineering saves. Returns the table's rows and the
    :func:`headline`, whose three forms are timed again in rounds of their own: between calls, the
    large activations of the masked and tensor-operation forms would evict the executors' weights
    from the caches, which a deployed executor does not see."""
    x = _input(input_size, batch)
    executor = to_dynamic(gated)
    modules = [
        ("dense (ungated)", dense.eval()),
        ("masked (training form)", gated.eval()),
        ("dynamic executor", executor),
    ]
    if executor.native:
        modules.append(("executor, tensor ops only", to_dynamic(gated, native=False)))
    modules.append(("executor of ungated", to_dynamic(dense)))
    calls = {name: _forward_macs(module, x) for name, module in modules}
    rows = _ratios(_rows(list(calls.items()), runs, warmup))
    lead = _rows([(name, calls[name]) for name in ("dynamic executor", *HEADLINE_BASELINES)], runs, warmup)
    return rows, headline(lead)


def distinct_masks(gated: DenseNet, input_size: Sequence[int], batch: int) -> int:
    """How many different keep-mask patterns the samples of :func:`benchmark_densenet`'s input get."""
    x = _input(input_size, batch)
    with torch.no_grad():
        masks = gated.eval()(x).masks
    return int(torch.cat(masks, 1).unique(dim=0).shape[0]) if masks else 1


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
