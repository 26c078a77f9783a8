"""Wall-clock timing of repeated calls, shared by the training and the deployment benchmarks."""

from __future__ import annotations

import time
from typing import Callable, List, Optional, Sequence

import torch

Clock = Callable[[], float]


def time_interleaved(
    fns: Sequence[Callable[[], object]], warmup: int, runs: int, device: Optional[torch.device] = None
) -> List[List[float]]:
    """Wall-clock seconds per call of each of ``fns`` (see :func:`timed_rounds`)."""
    return timed_rounds(fns, warmup, runs, (time.perf_counter,), device)[0]


def timed_rounds(
    fns: Sequence[Callable[[], object]],
    warmup: int,
    runs: int,
    clocks: Sequence[Clock],
    device: Optional[torch.device] = None,
) -> List[List[List[float]]]:
    """Per clock, the seconds per call of each of ``fns`` (``[clock][fn][run]``), after ``warmup``
    untimed calls of each, timed in rounds (one call of each per round) rather than one function
    after the other: on a shared or throttling machine speed drifts during a benchmark, and
    interleaving lets every variant see the same drift, which keeps their ratios honest. On CUDA
    the device is synchronised around each call, so that the time covers the kernels and not just
    their launch."""
    cuda = device is not None and device.type == "cuda"
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: List[List[List[float]]] = [[[] for _ in fns] for _ in clocks]
    for _ in range(runs):
        for i, fn in enumerate(fns):
            if cuda:
                torch.cuda.synchronize(device)
            start = [clock() for clock in clocks]
            fn()
            if cuda:
                torch.cuda.synchronize(device)
            for clock, tic, seconds in zip(clocks, start, times):
                seconds[i].append(clock() - tic)
    return times
