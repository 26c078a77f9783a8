"""Wall-clock timing of repeated calls, shared by the training and the deployment benchmarks."""

from __future__ import annotations

import time
from typing import Callable, List, Optional, Sequence

import torch


def time_calls(fn: Callable[[], object], warmup: int, runs: int, device: Optional[torch.device] = None) -> List[float]:
    """Seconds per call of ``fn`` after ``warmup`` untimed calls. On CUDA the device is synchronised
    around each call, so that the time covers the kernels and not just their launch."""
    cuda = device is not None and device.type == "cuda"
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        if cuda:
            torch.cuda.synchronize(device)
        tic = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - tic)
    return times


def time_interleaved(fns: Sequence[Callable[[], object]], warmup: int, runs: int) -> List[List[float]]:
    """Seconds per call of each of ``fns``, timed in rounds (one call of each per round) rather than
    one after the other: on a shared or throttling machine, speed drifts over a benchmark, and
    interleaving lets every variant see the same drift, which keeps their ratios honest."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: List[List[float]] = [[] for _ in fns]
    for _ in range(runs):
        for fn, seconds in zip(fns, times):
            tic = time.perf_counter()
            fn()
            seconds.append(time.perf_counter() - tic)
    return times
